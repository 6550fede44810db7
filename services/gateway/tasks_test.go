package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
)

type oneLane struct{}

func (oneLane) LaneFor(string, string) string { return "lane" }

type apiBundle struct {
	h http.Handler
	l *ledger.Ledger
}

// setupAPI serves the gateway over a real ledger; events of type "two" go
// to functions f1 and f2, every other type to f1. Keys: "key-acme" for
// tenant acme, "key-other" for tenant other.
func setupAPI(t *testing.T) *apiBundle { return setupAPIWith(t, func(*Config) {}) }

// setupAPIWith is setupAPI with the gateway's config changed by set.
func setupAPIWith(t *testing.T, set func(*Config)) *apiBundle {
	t.Helper()
	rdb, prefix := testkit.Redis(t)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
	pub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, nil)
	t.Cleanup(func() { _ = pub.Close() })
	in := ingest.New(ingest.Config{
		Ledger: l, Publisher: pub, Router: oneLane{}, Metrics: metrics.New(),
		Subscribers: func(_, typ string) []string {
			if typ == "two" {
				return []string{"f1", "f2"}
			}
			return []string{"f1"}
		},
	})
	t.Cleanup(in.Close)
	kr, err := auth.NewKeyring(map[string][]string{"acme": {"key-acme-0123456789abcdef"}, "other": {"key-other-0123456789abcdef"}})
	require.NoError(t, err)
	mux := http.NewServeMux()
	cfg := Config{Keyring: kr, Ingester: in, Ledger: l, Metrics: metrics.New(), Logger: testkit.Logger(t, 0)}
	set(&cfg)
	g := New(cfg)
	g.Register(mux)
	t.Cleanup(func() {
		// Its jobs stopped and waited for before the keys go.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		g.RunJobs(ctx)
	})
	return &apiBundle{h: mux, l: l}
}

const keyAcme, keyOther = "key-acme-0123456789abcdef", "key-other-0123456789abcdef"

func (b *apiBundle) submit(t *testing.T, contentType, body string) (*httptest.ResponseRecorder, contracts.SubmitResponse) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+keyAcme)
	r.Header.Set("Content-Type", contentType)
	w := httptest.NewRecorder()
	b.h.ServeHTTP(w, r)
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	var resp contracts.SubmitResponse
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &resp))
	return w, resp
}

func ce(id, source, typ, data string) string {
	return `{"specversion":"1.0","id":"` + id + `","source":"` + source + `","type":"` + typ + `"` + data + `}`
}

func listIDs(t *testing.T, w *httptest.ResponseRecorder) []string {
	t.Helper()
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	var l contracts.TaskList
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &l))
	require.NotNil(t, l.Tasks, "an empty answer is an empty list")
	ids := []string{}
	for _, task := range l.Tasks {
		ids = append(ids, task.ID)
	}
	return ids
}

func TestListTasksByEvent(t *testing.T) {
	t.Parallel()
	b := setupAPI(t)
	_, first := b.submit(t, ctStructured, ce("ev-1", "/a", "two", ""))
	_, second := b.submit(t, ctStructured, ce("ev-1", "/b", "one", ""))
	b.submit(t, ctStructured, ce("ev-2", "/a", "one", ""))

	all := listIDs(t, serve(b.h, "GET", "/v1/tasks?event_id=ev-1", keyAcme, ""))
	require.ElementsMatch(t, []string{first.Tasks[0].ID, first.Tasks[1].ID, second.Tasks[0].ID}, all)
	one := listIDs(t, serve(b.h, "GET", "/v1/tasks?event_id=ev-1&source=/a", keyAcme, ""))
	require.ElementsMatch(t, []string{first.Tasks[0].ID, first.Tasks[1].ID}, one)
	fn := listIDs(t, serve(b.h, "GET", "/v1/tasks?event_id=ev-1&function=f2", keyAcme, ""))
	require.Equal(t, []string{first.Tasks[1].ID}, fn)

	require.Empty(t, listIDs(t, serve(b.h, "GET", "/v1/tasks?event_id=ev-1", keyOther, "")), "another tenant's event id answers an empty list")
	require.Empty(t, listIDs(t, serve(b.h, "GET", "/v1/tasks?event_id=ev-1&source=/a", keyOther, "")))

	for path, msg := range map[string]string{
		"/v1/tasks?source=/a":                          "source: only with event_id",
		"/v1/tasks?event_id=ev-1&source=/a&cursor=1:0": "cursor: not used with event_id and source",
	} {
		w := serve(b.h, "GET", path, keyAcme, "")
		require.Equal(t, http.StatusBadRequest, w.Code, path)
		require.Contains(t, w.Body.String(), msg, path)
	}
}

func TestLocationOnASingleTask(t *testing.T) {
	t.Parallel()
	b := setupAPI(t)
	w, resp := b.submit(t, ctStructured, ce("ev-1", "/a", "one", ""))
	require.Equal(t, "/v1/tasks/"+resp.Tasks[0].ID, w.Header().Get("Location"))
	// A duplicate names the one task made the first time.
	w, again := b.submit(t, ctStructured, ce("ev-1", "/a", "one", ""))
	require.True(t, again.Tasks[0].Duplicate)
	require.Equal(t, "/v1/tasks/"+resp.Tasks[0].ID, w.Header().Get("Location"))

	w, _ = b.submit(t, ctStructured, ce("ev-2", "/a", "two", ""))
	require.Empty(t, w.Header().Get("Location"), "two tasks have no one location")
	w, _ = b.submit(t, ctBatch, "["+ce("ev-3", "/a", "one", "")+","+ce("ev-4", "/a", "one", "")+"]")
	require.Empty(t, w.Header().Get("Location"))
}

// deadTask submits one event and dead-letters its task.
func (b *apiBundle) deadTask(t *testing.T, ctx context.Context, body string) string {
	t.Helper()
	_, resp := b.submit(t, ctStructured, body)
	id := resp.Tasks[0].ID
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "t", Lease: time.Minute})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictRun, cl.Verdict)
	ok, err := b.l.Finish(ctx, "acme", id, "f1", cl.Fence(), ledger.Outcome{State: contracts.StateDead, Error: "HTTP 400", Reason: contracts.ReasonNonRetryable})
	require.NoError(t, err)
	require.True(t, ok)
	return id
}

func showDead(t *testing.T, h http.Handler, id string) contracts.Task {
	t.Helper()
	w := serve(h, "GET", "/v1/dlq/"+id, keyAcme, "")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	var task contracts.Task
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &task))
	return task
}

func TestDLQShowIncludesTheEventData(t *testing.T) {
	t.Parallel()
	b := setupAPI(t)
	ctx := context.Background()

	jsonID := b.deadTask(t, ctx, ce("ev-1", "/a", "one", `,"datacontenttype":"application/json","data":{"n":1}`))
	got := showDead(t, b.h, jsonID)
	require.JSONEq(t, `{"n":1}`, string(got.EventData))
	require.Equal(t, 7, got.EventDataBytes)
	require.Empty(t, got.EventDataEncoding)

	textID := b.deadTask(t, ctx, ce("ev-2", "/a", "one", `,"datacontenttype":"text/plain","data":"héllo"`))
	got = showDead(t, b.h, textID)
	require.Equal(t, `"héllo"`, string(got.EventData))

	binID := b.deadTask(t, ctx, ce("ev-3", "/a", "one", `,"datacontenttype":"application/octet-stream","data_base64":"AP8="`))
	got = showDead(t, b.h, binID)
	require.Equal(t, `"AP8="`, string(got.EventData))
	require.Equal(t, "base64", got.EventDataEncoding)
	require.Equal(t, 2, got.EventDataBytes)

	// The task API itself does not carry the data.
	w := serve(b.h, "GET", "/v1/tasks/"+jsonID, keyAcme, "")
	require.NotContains(t, w.Body.String(), "event_data")
}

func TestDLQShowBoundsTheEventData(t *testing.T) {
	t.Parallel()
	b := setupAPI(t)
	ctx := context.Background()
	e := event.New()
	e.SetID("big")
	e.SetSource("/a")
	e.SetType("one")
	big := strings.Repeat("x", contracts.EventDataMax+1)
	require.NoError(t, e.SetData("text/plain", []byte(big)))
	id := "task-big-" + testkit.UniqueName("t")
	msg, err := taskmsg.New(taskmsg.Ref{TaskID: id, Tenant: "acme", Function: "f1"}, &e)
	require.NoError(t, err)
	stored, err := taskmsg.Encode(msg)
	require.NoError(t, err)
	_, err = b.l.Create(ctx, []ledger.EventTasks{{Tenant: "acme", Event: contracts.EventRef{ID: "big", Source: "/a", Type: "one"},
		Tasks: []ledger.NewTask{{ID: id, Function: "f1", Message: stored}}}})
	require.NoError(t, err)
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "t", Lease: time.Minute})
	require.NoError(t, err)
	_, err = b.l.Finish(ctx, "acme", id, "f1", cl.Fence(), ledger.Outcome{State: contracts.StateDead, Reason: contracts.ReasonNonRetryable})
	require.NoError(t, err)

	got := showDead(t, b.h, id)
	require.Nil(t, got.EventData, "data over the bound is left out")
	require.Equal(t, contracts.EventDataMax+1, got.EventDataBytes)
}
