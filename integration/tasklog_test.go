//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// logFunction writes lines to its task's log with the token of each
// attempt. Event "tl-a": the first attempt posts two lines and answers
// 500, the second posts a line, checks that its token opens nothing else
// (another task's log, any other route) and answers 200. Event "tl-b"
// answers 200 at once.
type logFunction struct {
	srv      *httptest.Server
	app      atomic.Pointer[string] // the Tasklane URL, set once started
	mu       sync.Mutex
	calls    int
	tokens   []string // tl-a's, by attempt
	problems []string
}

func (f *logFunction) problem(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.problems = append(f.problems, fmt.Sprintf(format, args...))
}

// call sends one request to Tasklane with a bearer credential.
func (f *logFunction) call(method, path, bearer string, body any) (int, string) {
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, *f.app.Load()+path, rd)
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func newLogFunction(t *testing.T) *logFunction {
	f := &logFunction{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, tok := r.Header.Get(contracts.HeaderTaskID), r.Header.Get(contracts.HeaderTaskToken)
		if tok == "" {
			f.problem("%s: no task token", r.Header.Get("Ce-Id"))
		}
		if r.Header.Get("Ce-Id") != "tl-a" {
			w.WriteHeader(http.StatusOK)
			return
		}
		f.mu.Lock()
		f.calls++
		call := f.calls
		f.tokens = append(f.tokens, tok)
		f.mu.Unlock()
		logs := "/v1/tasks/" + id + "/logs"
		if call == 1 {
			if code, body := f.call("POST", logs, tok, contracts.LogLines{Lines: []string{"step one", "step two"}}); code != http.StatusNoContent {
				f.problem("attempt 1 lines: %d %s", code, body)
			}
			http.Error(w, "transient trouble", http.StatusInternalServerError)
			return
		}
		if code, body := f.call("POST", logs, tok, contracts.LogLines{Lines: []string{"second time lucky"}}); code != http.StatusNoContent {
			f.problem("attempt 2 lines: %d %s", code, body)
		}
		// The token opens nothing else: the other task's log (write, read),
		// this task's record and log through the API.
		code, body := f.call("GET", "/v1/tasks?event_id=tl-b", acmeKey, nil)
		var list contracts.TaskList
		if code != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil || len(list.Tasks) != 1 {
			f.problem("finding tl-b: %d %s", code, body)
		} else {
			other := "/v1/tasks/" + list.Tasks[0].ID + "/logs"
			if code, body := f.call("POST", other, tok, contracts.LogLines{Lines: []string{"intruder"}}); code != http.StatusForbidden {
				f.problem("writing another task's log: %d %s", code, body)
			}
			if code, _ := f.call("GET", other, tok, nil); code != http.StatusUnauthorized {
				f.problem("reading another task's log with a token: %d", code)
			}
		}
		for _, p := range []string{logs, "/v1/tasks/" + id, "/v1/tasks"} {
			if code, _ := f.call("GET", p, tok, nil); code != http.StatusUnauthorized {
				f.problem("GET %s with a task token: %d", p, code)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// TestIntegrationTaskLog runs a task that fails once, then succeeds, and
// reads its log: both attempts with their statuses, the lines the function
// posted with each attempt's token, the retry, the end and the result
// delivery; the token writes only its own task's log, opens no other
// route, and expires with its attempt's deadline.
func TestIntegrationTaskLog(t *testing.T) {
	fn := newLogFunction(t)
	sk := newSink(t)
	e := startTasklane(t, config.BrokerDriverAMQP, fmt.Sprintf(`
tenants:
  - id: acme
    api_keys: [%q]
functions:
  - name: logs
    events: [com.example.logs]
    endpoint: %q
    timeout: 2s
    retry: {max_attempts: 3, initial_backoff: 20ms, max_backoff: 50ms}
subscriptions:
  - name: results
    sink: %q
    filter: {types: [io.tasklane.task.succeeded]}
`, acmeKey, fn.srv.URL, sk.srv.URL))
	u := e.app.URL()
	fn.app.Store(&u)

	submit := func(id string) string {
		code, body := e.post("/v1/events", acmeKey, "application/cloudevents+json", nil,
			[]byte(`{"specversion":"1.0","id":"`+id+`","source":"/integration/logs","type":"com.example.logs"}`))
		require.Equal(t, http.StatusAccepted, code, string(body))
		var sr contracts.SubmitResponse
		require.NoError(t, json.Unmarshal(body, &sr))
		return sr.Tasks[0].ID
	}
	b := submit("tl-b")
	a := submit("tl-a")

	readLog := func(id string) []contracts.LogEntry {
		code, body := e.get("/v1/tasks/"+id+"/logs", acmeKey)
		require.Equal(t, http.StatusOK, code, string(body))
		var lg contracts.TaskLog
		require.NoError(t, json.Unmarshal(body, &lg))
		return lg.Entries
	}
	has := func(es []contracts.LogEntry, kind contracts.LogKind) bool {
		for _, e := range es {
			if e.Kind == kind {
				return true
			}
		}
		return false
	}
	var log []contracts.LogEntry
	testkit.Eventually(t, 30*time.Second, func() bool {
		log = readLog(a)
		return has(log, contracts.LogKind(contracts.StateSucceeded)) && has(log, contracts.LogDelivered) && has(log, contracts.LogPublished)
	}, "tl-a's log ends succeeded, its result delivered to the sink: %v", log)

	fn.mu.Lock()
	require.Empty(t, fn.problems)
	require.Len(t, fn.tokens, 2)
	first := fn.tokens[0]
	fn.mu.Unlock()

	// The attempts in order, with the function's lines inside each. The
	// first attempt may start on delivery (its function had room), which
	// logs no "admitted"; the retry is admitted by the scheduler.
	want := []string{"accepted/0", "started/1", "line/1:step one", "line/1:step two", "ended/1", "retry/1",
		"admitted/0", "started/2", "line/2:second time lucky", "ended/2", "succeeded/2"}
	var got []string
	for _, en := range log {
		s := fmt.Sprintf("%s/%d", en.Kind, en.Attempt)
		if en.Kind == contracts.LogLine {
			s += ":" + en.Message
		}
		got = append(got, s)
	}
	i := 0
	for _, s := range got {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	require.Equal(t, len(want), i, "log %v lacks %q (in order: %v)", got, want[min(i, len(want)-1)], want)
	var ends []contracts.LogEntry
	for _, en := range log {
		if en.Kind == contracts.LogEnded {
			ends = append(ends, en)
		}
	}
	require.Len(t, ends, 2)
	require.Equal(t, http.StatusInternalServerError, ends[0].Status)
	require.Contains(t, ends[0].Message, "transient trouble")
	require.NotNil(t, ends[0].DurationMS)
	require.Equal(t, http.StatusOK, ends[1].Status)
	require.Contains(t, ends[1].Message, `reply: {"ok":true}`)
	for _, en := range log {
		if en.Kind == contracts.LogStarted {
			require.Contains(t, en.Message, "started by ")
		}
	}

	// Nothing was written to the other task's log; another tenant sees
	// neither.
	for _, en := range readLog(b) {
		require.NotEqual(t, contracts.LogLine, en.Kind, "tl-b's log: %+v", en)
	}
	code, _ := e.get("/v1/tasks/"+a+"/logs", "")
	require.Equal(t, http.StatusUnauthorized, code)

	// The first attempt's token expires with its deadline (2s after it
	// started).
	testkit.Eventually(t, 10*time.Second, func() bool {
		code, body := e.post("/v1/tasks/"+a+"/logs", "", "application/json", map[string]string{"Authorization": "Bearer " + first},
			[]byte(`{"lines": ["probe"]}`))
		return code == http.StatusUnauthorized && strings.Contains(string(body), "expired")
	}, "the first attempt's token expires")
}
