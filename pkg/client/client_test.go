package client_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/client"
)

// request is what the test server saw.
type request struct {
	method, path, query, body string
	header                    http.Header
}

// server answers every request with status and body, and records it.
func server(t *testing.T, status int, body string) (*client.Client, func() request) {
	t.Helper()
	var mu sync.Mutex
	var last request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		last = request{method: r.Method, path: r.URL.EscapedPath(), query: r.URL.RawQuery, body: string(b), header: r.Header.Clone()}
		mu.Unlock()
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "3")
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL+"/", client.Options{APIKey: "k-1"})
	require.NoError(t, err)
	return c, func() request {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

func TestNewRefusesABadServerURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://h/", "http://", "http://h/?a=1", "http://user:secret@h/", "http://user:secret@h%zz/", "ftp://user:secret@h/"} {
		_, err := client.New(u, client.Options{})
		require.ErrorContains(t, err, "server URL", u)
		require.NotContains(t, err.Error(), "secret", "the password is redacted")
	}
	c, err := client.New("https://tasklane.example.com/", client.Options{})
	require.NoError(t, err)
	require.Equal(t, "https://tasklane.example.com", c.Server())
}

func TestSubmitSendsBinaryMode(t *testing.T) {
	t.Parallel()
	c, last := server(t, http.StatusAccepted, `{"tasks":[{"id":"01KH62FBSQY4E00SB1AA863NEG","event_id":"e-1","function":"echo","state":"queued","duplicate":false}]}`)
	sr, err := c.Submit(context.Background(), client.Event{
		ID: "e-1", Source: "/shop", Type: "com.example.order", Subject: "o-7",
		DataContentType: "application/json", Data: []byte(`{"n":1}`),
		Extensions: map[string]string{contracts.ExtPriority: "7", contracts.ExtDelay: "30"},
	})
	require.NoError(t, err)
	require.Equal(t, []contracts.SubmittedTask{{ID: "01KH62FBSQY4E00SB1AA863NEG", EventID: "e-1", Function: "echo", State: contracts.StateQueued}}, sr.Tasks)

	r := last()
	require.Equal(t, http.MethodPost, r.method)
	require.Equal(t, "/v1/events", r.path)
	require.Equal(t, `{"n":1}`, r.body)
	for h, want := range map[string]string{
		"Ce-Specversion": "1.0", "Ce-Id": "e-1", "Ce-Source": "/shop", "Ce-Type": "com.example.order", "Ce-Subject": "o-7",
		"Ce-Priority": "7", "Ce-Delay": "30", "Content-Type": "application/json", "Authorization": "Bearer k-1",
	} {
		require.Equal(t, want, r.header.Get(h), h)
	}
}

func TestSubmitNeedsTheRequiredAttributes(t *testing.T) {
	t.Parallel()
	c, last := server(t, http.StatusAccepted, `{"tasks":[]}`)
	_, err := c.Submit(context.Background(), client.Event{Type: "com.example.order"})
	require.EqualError(t, err, "event: id, source required")
	require.Empty(t, last().method, "nothing was sent")
}

// TestCalls: each method sends its request and decodes its answer.
func TestCalls(t *testing.T) {
	t.Parallel()
	since := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	task := `{"id":"01KH62FBSQY4E00SB1AA863NEG","tenant":"acme","function":"echo","event":{"id":"e","source":"/s","type":"t"},"state":"dead","attempts":3,"priority":0,"created_at":"2026-02-11T10:03:15Z"}`
	cases := []struct {
		name              string
		answer            string
		status            int
		call              func(*client.Client) (any, error)
		method, path, qry string
		body              string
	}{
		{
			name: "GetTask", answer: task, call: func(c *client.Client) (any, error) { return c.GetTask(context.Background(), "a/b") },
			method: http.MethodGet, path: "/v1/tasks/a%2Fb",
		},
		{
			name: "ListTasks", answer: `{"tasks":[` + task + `],"next_cursor":"c2"}`,
			call: func(c *client.Client) (any, error) {
				return c.ListTasks(context.Background(), client.TaskFilter{State: contracts.StateDead, Function: "echo"}, client.Page{Limit: 5, Cursor: "c1"})
			},
			method: http.MethodGet, path: "/v1/tasks", qry: "cursor=c1&function=echo&limit=5&state=dead",
		},
		{
			name: "ListTasksByEvent", answer: `{"tasks":[` + task + `]}`,
			call: func(c *client.Client) (any, error) {
				return c.ListTasks(context.Background(), client.TaskFilter{EventID: "e 1", Source: "/s"}, client.Page{})
			},
			method: http.MethodGet, path: "/v1/tasks", qry: "event_id=e+1&source=%2Fs",
		},
		{
			name: "ListTasksAll", answer: `{"tasks":[]}`,
			call: func(c *client.Client) (any, error) {
				return c.ListTasks(context.Background(), client.TaskFilter{}, client.Page{})
			},
			method: http.MethodGet, path: "/v1/tasks",
		},
		{
			name: "CancelTask", answer: task, call: func(c *client.Client) (any, error) { return c.CancelTask(context.Background(), "t1") },
			method: http.MethodDelete, path: "/v1/tasks/t1",
		},
		{
			name: "ListDLQ", answer: `{"tasks":[` + task + `]}`,
			call: func(c *client.Client) (any, error) {
				return c.ListDLQ(context.Background(), contracts.DLQFilter{Function: "echo", Reason: contracts.ReasonNonRetryable, Since: &since}, client.Page{Limit: 2})
			},
			method: http.MethodGet, path: "/v1/dlq", qry: "function=echo&limit=2&reason=non_retryable&since=2026-11-27T08%3A00%3A00Z",
		},
		{
			name: "GetDLQ", answer: task, call: func(c *client.Client) (any, error) { return c.GetDLQ(context.Background(), "t1") },
			method: http.MethodGet, path: "/v1/dlq/t1",
		},
		{
			name: "RedriveDLQ", answer: task, status: http.StatusAccepted,
			call:   func(c *client.Client) (any, error) { return c.RedriveDLQ(context.Background(), "t1") },
			method: http.MethodPost, path: "/v1/dlq/t1/redrive",
		},
		{
			name: "PurgeDLQ", status: http.StatusNoContent,
			call:   func(c *client.Client) (any, error) { return nil, c.PurgeDLQ(context.Background(), "t1") },
			method: http.MethodDelete, path: "/v1/dlq/t1",
		},
		{
			name: "RedriveDLQMatching", answer: `{"matched":4,"done":0,"dry_run":true}`,
			call: func(c *client.Client) (any, error) {
				return c.RedriveDLQMatching(context.Background(), contracts.DLQFilter{Until: &since, DryRun: true})
			},
			method: http.MethodPost, path: "/v1/dlq/redrive", body: `{"until":"2026-11-27T08:00:00Z","dry_run":true}`,
		},
		{
			name: "PurgeDLQMatching", answer: `{"matched":4,"done":4,"dry_run":false}`,
			call: func(c *client.Client) (any, error) {
				return c.PurgeDLQMatching(context.Background(), contracts.DLQFilter{Reason: contracts.ReasonAttemptsExhausted})
			},
			method: http.MethodPost, path: "/v1/dlq/purge", body: `{"reason":"attempts_exhausted"}`,
		},
		{
			name: "Triggers", answer: `{"triggers":[{"name":"tick","kind":"cron","tenant":"default","event_type":"t","state":"running","fires":3}]}`,
			call:   func(c *client.Client) (any, error) { return c.Triggers(context.Background()) },
			method: http.MethodGet, path: "/v1/triggers",
		},
		{
			name: "Routing",
			answer: `{"version":3,"lanes":[{"name":"tasklane.lane.shared.00","kind":"shared","backlog":2,"consumers":4}],` +
				`"tenants":[{"tenant":"acme","shard":["tasklane.lane.shared.00"],"dedicated":"tasklane.lane.tenant.acme","pinned":true}],` +
				`"changes":[{"version":3,"at":"2026-11-27T08:00:00Z","tenant":"acme","action":"split","lane":"tasklane.lane.tenant.acme","reason":"pinned by an operator","pinned":true}]}`,
			call:   func(c *client.Client) (any, error) { return c.Routing(context.Background()) },
			method: http.MethodGet, path: "/v1/admin/routing",
		},
		{
			name: "PinTenant", answer: `{"version":4,"at":"2026-11-27T08:00:00Z","tenant":"acme","action":"split","lane":"tasklane.lane.tenant.acme","reason":"pinned by an operator","pinned":true}`,
			call:   func(c *client.Client) (any, error) { return c.PinTenant(context.Background(), "acme", true) },
			method: http.MethodPost, path: "/v1/admin/routing/pin", body: `{"tenant":"acme","dedicated":true}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			status := tc.status
			if status == 0 {
				status = http.StatusOK
			}
			c, last := server(t, status, tc.answer)
			got, err := tc.call(c)
			require.NoError(t, err)
			r := last()
			require.Equal(t, tc.method, r.method)
			require.Equal(t, tc.path, r.path)
			require.Equal(t, tc.qry, r.query)
			require.Equal(t, "Bearer k-1", r.header.Get("Authorization"))
			if tc.body != "" {
				require.JSONEq(t, tc.body, r.body)
				require.Equal(t, "application/json", r.header.Get("Content-Type"))
			} else {
				require.Empty(t, r.body)
			}
			if tc.answer != "" {
				// The typed answer holds everything the server sent.
				b, err := json.Marshal(got)
				require.NoError(t, err)
				require.JSONEq(t, tc.answer, string(b))
			}
		})
	}
}

func TestErrorAnswers(t *testing.T) {
	t.Parallel()
	c, _ := server(t, http.StatusNotFound, `{"error":"task not found"}`+"\n")
	_, err := c.GetTask(context.Background(), "nope")
	require.EqualError(t, err, "server answered 404: task not found")
	require.Equal(t, http.StatusNotFound, client.StatusCode(err))
	var e *client.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, "task not found", e.Message)

	c, _ = server(t, http.StatusTooManyRequests, `{"error":"backlog: tenant acme has 12 tasks waiting","tenant":"acme","backlog":12,"limit":10,"reason":"tenant_backlog"}`)
	_, err = c.Submit(context.Background(), client.Event{ID: "e", Source: "/s", Type: "t"})
	require.ErrorAs(t, err, &e)
	require.Equal(t, "3", e.RetryAfter)
	require.Equal(t, contracts.ErrorResponse{Error: "backlog: tenant acme has 12 tasks waiting", Tenant: "acme", Backlog: 12, Limit: 10, Reason: contracts.RefusedTenantBacklog}, e.Response)

	c, _ = server(t, http.StatusBadGateway, "<html>"+strings.Repeat("x", 5000)+"</html>")
	_, err = c.Triggers(context.Background())
	require.ErrorAs(t, err, &e)
	require.Equal(t, http.StatusBadGateway, e.StatusCode)
	require.True(t, strings.HasPrefix(e.Message, "<html>xxx"), e.Message)
	require.Less(t, len(e.Message), 1100, "a body that is not an error answer is cut short")

	c, _ = server(t, http.StatusServiceUnavailable, "")
	_, err = c.Triggers(context.Background())
	require.EqualError(t, err, "server answered 503: Service Unavailable")

	c, _ = server(t, http.StatusOK, `<html>`)
	_, err = c.Triggers(context.Background())
	require.ErrorContains(t, err, "GET /v1/triggers: answer 200 is not the JSON expected")
	require.Zero(t, client.StatusCode(err))
}

func TestAnswerSizeIsBounded(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"tasks":[],"next_cursor":"`+strings.Repeat("c", 200)+`"}`)
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.Options{MaxResponseBytes: 100})
	require.NoError(t, err)
	_, err = c.ListTasks(context.Background(), client.TaskFilter{}, client.Page{})
	require.EqualError(t, err, "GET /v1/tasks: answer larger than 100 bytes (Options.MaxResponseBytes)")

	c, err = client.New(srv.URL, client.Options{})
	require.NoError(t, err)
	l, err := c.ListTasks(context.Background(), client.TaskFilter{}, client.Page{})
	require.NoError(t, err)
	require.Len(t, l.NextCursor, 200)
}
