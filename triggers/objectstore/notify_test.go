package objectstore

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/triggers"
	"github.com/tasklane/tasklane/triggers/triggerstest"
)

type notifyBundle struct {
	srv   *httptest.Server
	sub   *triggerstest.Submitter
	store *triggers.Store
	n     *Notifier
}

func setupNotify(t *testing.T, mod func(*NotifyConfig)) *notifyBundle {
	t.Helper()
	b := &notifyBundle{sub: triggerstest.NewSubmitter(), store: triggerstest.Store(t)}
	cfg := NotifyConfig{
		Common: Common{Name: "images-notify", Tenant: "acme", Bucket: testBucket, EventType: testType, Events: []string{Created, Deleted}},
		Path:   "/s3/images/",
	}
	if mod != nil {
		mod(&cfg)
	}
	var err error
	b.n, err = NewNotifier(cfg, triggers.Env{Submitter: b.sub, Store: b.store, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.Equal(t, "s3/images", b.n.Path())
	require.NoError(t, b.n.Start(context.Background()))
	t.Cleanup(func() { _ = b.n.Stop(context.Background()) })
	b.srv = httptest.NewServer(b.n)
	t.Cleanup(b.srv.Close)
	return b
}

func (b *notifyBundle) post(t *testing.T, body []byte, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.srv.URL, strings.NewReader(string(body)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(out)
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	require.NoError(t, err)
	return b
}

const notifiedKey = "photos/summer 2026/ä.jpg"

func TestNotifierMinIO(t *testing.T) {
	t.Parallel()
	b := setupNotify(t, nil)

	status, body := b.post(t, readTestdata(t, "minio-put.json"), nil)
	require.Equal(t, http.StatusAccepted, status, body)
	var answer contracts.SubmitResponse
	require.NoError(t, json.Unmarshal([]byte(body), &answer))
	require.Len(t, answer.Tasks, 1)

	status, body = b.post(t, readTestdata(t, "minio-delete.json"), nil)
	require.Equal(t, http.StatusAccepted, status, body)

	events := b.sub.Events()
	require.Len(t, events, 2)
	put, del := events[0].Event, events[1].Event
	require.Equal(t, "acme", events[0].Tenant)
	require.Equal(t, testType+".created", put.Type())
	require.Equal(t, testType+".deleted", del.Type())
	for _, e := range []event.Event{put, del} {
		require.Equal(t, "s3://images", e.Source())
		require.Equal(t, notifiedKey, e.Subject(), "the key is decoded")
		require.Equal(t, "s3://images/photos/summer%202026/%C3%A4.jpg", e.Extensions()[ExtDataRef])
	}
	require.Equal(t, answer.Tasks[0].EventID, put.ID())
	require.Equal(t, time.Date(2026, 11, 27, 9, 41, 7, 512e6, time.UTC), put.Time().UTC())

	require.Equal(t, Object{
		Change: Created, Bucket: "images", Key: notifiedKey, Size: 10,
		ETag: "6c1b2b56a9e0b5a7a4f4e1e3e2d8c1b0", Time: time.Date(2026, 11, 27, 9, 41, 7, 512e6, time.UTC),
	}, objectOf(t, put))
	require.Equal(t, Object{
		Change: Deleted, Bucket: "images", Key: notifiedKey, Time: time.Date(2026, 11, 27, 9, 43, 12, 4e6, time.UTC),
	}, objectOf(t, del))

	// MinIO retries a notification its target did not take: same
	// sequencer, same id, deduplicated.
	status, body = b.post(t, readTestdata(t, "minio-put.json"), nil)
	require.Equal(t, http.StatusAccepted, status, body)
	require.Equal(t, 2, b.sub.Len())
	require.Equal(t, 1, b.sub.Duplicates())

	rec, err := b.store.Read(context.Background(), "images-notify")
	require.NoError(t, err)
	require.EqualValues(t, 3, rec["images-notify"].Fires)
	require.Equal(t, triggers.StateRunning, rec["images-notify"].State)
}

// TestNotifySameShapeAsPoll: a notified change and a polled change of the
// same object make the same event but for the id and time.
func TestNotifySameShapeAsPoll(t *testing.T) {
	t.Parallel()
	nb := setupNotify(t, nil)
	status, body := nb.post(t, readTestdata(t, "minio-put.json"), nil)
	require.Equal(t, http.StatusAccepted, status, body)
	notified := nb.sub.Events()[0].Event

	pb := setupPoll(t)
	p := pb.poller(t, "a", nil)
	require.NoError(t, p.poll(context.Background()))
	pb.s3.Put(t, testBucket, notifiedKey, "jpeg bytes")
	require.NoError(t, p.poll(context.Background()))
	polled := pb.sub.Events()[0].Event

	for _, f := range []func(event.Event) string{
		event.Event.Type, event.Event.Source, event.Event.Subject, event.Event.DataContentType, event.Event.SpecVersion,
	} {
		require.Equal(t, f(polled), f(notified))
	}
	require.Equal(t, polled.Extensions(), notified.Extensions(), "the same extensions (dataref) with the same values")
	require.Equal(t, jsonKeys(t, polled.Data()), jsonKeys(t, notified.Data()), "the same data fields")
	po, no := objectOf(t, polled), objectOf(t, notified)
	require.Equal(t, po.Change, no.Change)
	require.Equal(t, po.Key, no.Key)
	require.Equal(t, po.Bucket, no.Bucket)
	require.Equal(t, po.Size, no.Size)
	require.NotEmpty(t, po.ETag)
	require.NotContains(t, po.ETag+no.ETag, `"`)
}

func jsonKeys(t *testing.T, data []byte) []string {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m))
	return slices.Sorted(maps.Keys(m))
}

func TestNotifierS3Batch(t *testing.T) {
	t.Parallel()
	b := setupNotify(t, func(c *NotifyConfig) { c.Prefix = "raw/" })
	status, body := b.post(t, readTestdata(t, "s3-batch.json"), nil)
	require.Equal(t, http.StatusAccepted, status, body)
	var got []string
	for _, s := range b.sub.Events() {
		got = append(got, s.Event.Type()+" "+s.Event.Subject())
	}
	require.Equal(t, []string{testType + ".created raw/big video.mp4", testType + ".deleted raw/old.jpg"}, got,
		"accesses and other buckets' records are left out; a delete marker is a deletion")
	require.Equal(t, 1, b.sub.Calls(), "one submission per notification")
}

func TestNotifierFilters(t *testing.T) {
	t.Parallel()
	b := setupNotify(t, func(c *NotifyConfig) { c.Suffix = ".png"; c.Events = []string{Created} })
	status, body := b.post(t, readTestdata(t, "minio-put.json"), nil)
	require.Equal(t, http.StatusOK, status, body)
	require.JSONEq(t, `{"tasks":[]}`, body)
	require.Zero(t, b.sub.Calls())
}

func TestNotifierRequests(t *testing.T) {
	t.Parallel()
	b := setupNotify(t, func(c *NotifyConfig) { c.Token = "s3cret"; c.MaxBodyBytes = 8 << 10 })
	put := readTestdata(t, "minio-put.json")
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

	status, body := b.post(t, put, nil)
	require.Equal(t, http.StatusUnauthorized, status, body)
	status, body = b.post(t, put, bearer("wrong"))
	require.Equal(t, http.StatusUnauthorized, status, body)
	require.Zero(t, b.sub.Calls(), "nothing submitted without the token")

	status, body = b.post(t, []byte(`{"Records": [`), bearer("s3cret"))
	require.Equal(t, http.StatusBadRequest, status, body)
	require.Contains(t, body, "reading bucket notification")
	status, body = b.post(t, []byte(`{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"images"},"object":{"key":"%zz"}}}]}`), bearer("s3cret"))
	require.Equal(t, http.StatusBadRequest, status, body)
	require.Contains(t, body, "Records[0].s3.object.key")
	status, body = b.post(t, []byte(strings.Repeat(" ", 9<<10)), bearer("s3cret"))
	require.Equal(t, http.StatusRequestEntityTooLarge, status, body)

	resp, err := http.Head(b.srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "reachability checks of notification targets")
	req, _ := http.NewRequest(http.MethodPut, b.srv.URL, nil)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	// The ingest path's refusal is answered as such; a failure to record
	// is a 503 the store retries.
	b.sub.FailFunc = func(string, []*event.Event) error {
		return &ingest.Error{Status: http.StatusUnprocessableEntity, Msg: "no function subscribes to com.example.object.created"}
	}
	status, body = b.post(t, put, bearer("s3cret"))
	require.Equal(t, http.StatusUnprocessableEntity, status, body)
	b.sub.FailFunc = func(string, []*event.Event) error { return context.DeadlineExceeded }
	status, body = b.post(t, put, bearer("s3cret"))
	require.Equal(t, http.StatusServiceUnavailable, status, body)
	require.NotEmpty(t, b.n.Status().LastError)
	b.sub.FailFunc = nil
	status, body = b.post(t, put, bearer("s3cret"))
	require.Equal(t, http.StatusAccepted, status, body)
	require.Equal(t, 1, b.sub.Len())

	require.NoError(t, b.n.Stop(context.Background()))
	status, body = b.post(t, put, bearer("s3cret"))
	require.Equal(t, http.StatusServiceUnavailable, status, body)
	require.Equal(t, 1, b.sub.Len())
}

func TestNewNotifierValidates(t *testing.T) {
	t.Parallel()
	_, err := NewNotifier(NotifyConfig{Common: Common{Name: "n", Events: []string{"updated"}}}, triggers.Env{})
	require.ErrorContains(t, err, "Name, Tenant, Bucket and EventType are required")
	require.ErrorContains(t, err, "unknown event updated")
	require.ErrorContains(t, err, "Path is required")
	require.ErrorContains(t, err, "Submitter: missing")
}

func TestDataRef(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"a.jpg", "dir/sub/a b.jpg", "ä?#%.png", "a//b"} {
		ref := DataRef("bkt", key)
		bucket, got, err := ParseDataRef(ref)
		require.NoError(t, err, ref)
		require.Equal(t, "bkt", bucket)
		require.Equal(t, key, got, ref)
	}
	_, _, err := ParseDataRef("http://x/y")
	require.Error(t, err)
	_, _, err = ParseDataRef("s3://bucket")
	require.Error(t, err)
}
