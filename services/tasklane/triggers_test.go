package tasklane

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/tasklane/tasklane/triggers"
	"github.com/tasklane/tasklane/triggers/triggerstest"
)

const devTriggers = `server: {addr: "127.0.0.1:0"}
functions:
  - {name: echo, events: [com.example.tick, com.example.signup, com.example.signup2], endpoint: "builtin:echo"}
triggers:
  - name: tick
    cron: {schedule: "@every 1s"}
    event: {type: com.example.tick, source: /triggers/tick}
  - name: signup
    http: {path: signup, id_header: X-Delivery}
    event: {type: com.example.signup, source: /hooks/signup}
`

// devApp starts doc as `tasklane dev --config` does.
func devApp(t *testing.T, doc string) *App {
	t.Helper()
	cfg, err := config.Parse("dev.yaml", []byte(doc))
	require.NoError(t, err)
	stop, err := UseEmbeddedStore(cfg)
	require.NoError(t, err)
	t.Cleanup(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app, err := Start(ctx, cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, app.Shutdown(context.Background())) })
	return app
}

func postHook(t *testing.T, url, body string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func listTriggers(t *testing.T, app *App) map[string]contracts.TriggerView {
	t.Helper()
	resp, err := http.Get(app.URL() + "/v1/triggers")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var l contracts.TriggerList
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&l))
	out := map[string]contracts.TriggerView{}
	for _, v := range l.Triggers {
		out[v.Name] = v
	}
	return out
}

// TestDevTriggers runs the triggers in one process (dev mode): a webhook
// at /hooks/<path> makes a task, the cron fires, both are listed with their
// state, and a reload swaps them.
func TestDevTriggers(t *testing.T) {
	app := devApp(t, devTriggers)
	require.Equal(t, []string{"signup", "tick"}, app.Triggers())

	status, body := postHook(t, app.URL()+"/hooks/signup", `{"email":"a@example.com"}`, http.Header{"X-Delivery": {"d-1"}})
	require.Equal(t, http.StatusAccepted, status, body)
	var sr contracts.SubmitResponse
	require.NoError(t, json.Unmarshal([]byte(body), &sr))
	require.Len(t, sr.Tasks, 1)
	require.Equal(t, "d-1", sr.Tasks[0].EventID, "the delivery id is the event id")
	status, body = postHook(t, app.URL()+"/hooks/signup", `{"email":"a@example.com"}`, http.Header{"X-Delivery": {"d-1"}})
	require.Equal(t, http.StatusAccepted, status, body)
	require.Contains(t, body, `"duplicate":true`, "a provider's retry is deduplicated")
	status, body = postHook(t, app.URL()+"/hooks/nothing", `{}`, nil)
	require.Equal(t, http.StatusNotFound, status, body)

	testkit.Eventually(t, 10*time.Second, func() bool {
		v := listTriggers(t, app)["tick"]
		return v.Fires >= 2 && !v.NextFire.IsZero()
	}, "the cron fires and shows its next fire")
	views := listTriggers(t, app)
	tick, signup := views["tick"], views["signup"]
	require.Equal(t, "cron", tick.Kind)
	require.Equal(t, "running", tick.State)
	require.Equal(t, "@every 1s", tick.Schedule)
	require.Equal(t, "UTC", tick.Timezone)
	require.WithinDuration(t, time.Now(), tick.NextFire, 2*time.Second, "an @every 1s schedule fires within a second")
	require.True(t, strings.HasPrefix(tick.LastEventID, "tick/"), tick.LastEventID)
	require.Equal(t, "http", signup.Kind)
	require.Equal(t, "/hooks/signup", signup.Path)
	require.Equal(t, "running", signup.State)
	require.EqualValues(t, 2, signup.Fires)
	require.Equal(t, config.DefaultTenant, signup.Tenant)

	// Reload: the cron goes, the hook moves to another path.
	doc := strings.Replace(devTriggers, "path: signup,", "path: signup2,", 1)
	doc = doc[:strings.Index(doc, "  - name: tick")] + doc[strings.Index(doc, "  - name: signup"):]
	cfg, err := config.Parse("dev.yaml", []byte(doc))
	require.NoError(t, err)
	require.NoError(t, app.ReloadTriggers(context.Background(), cfg))
	require.Equal(t, []string{"signup"}, app.Triggers())
	status, _ = postHook(t, app.URL()+"/hooks/signup", `{}`, nil)
	require.Equal(t, http.StatusNotFound, status)
	status, body = postHook(t, app.URL()+"/hooks/signup2", `{}`, nil)
	require.Equal(t, http.StatusAccepted, status, body)
	views = listTriggers(t, app)
	require.NotContains(t, views, "tick")
	require.Equal(t, "/hooks/signup2", views["signup"].Path)
	fires := views["signup"].Fires
	require.EqualValues(t, 3, fires, "the state of a trigger carries over its changes")

	// A reload that cannot apply leaves the triggers as they were.
	bad := strings.Replace(doc, "http: {path: signup2, id_header: X-Delivery}",
		"http: {path: signup2, signature: {secret_env: TASKLANE_TEST_UNSET_SECRET}}", 1)
	cfg, err = config.Parse("dev.yaml", []byte(bad))
	require.NoError(t, err)
	err = app.ReloadTriggers(context.Background(), cfg)
	require.ErrorContains(t, err, "dev.yaml:6:51:")
	require.ErrorContains(t, err, "triggers[0].http.signature.secret_env: environment variable TASKLANE_TEST_UNSET_SECRET is not set")
	status, body = postHook(t, app.URL()+"/hooks/signup2", `{}`, nil)
	require.Equal(t, http.StatusAccepted, status, body)
}

// TestTriggerStopTimeout: a stopping trigger has time to finish its
// submission and the checkpoint after it, and to release its lock.
func TestTriggerStopTimeout(t *testing.T) {
	t.Parallel()
	require.Greater(t, TriggerStopTimeout, triggers.SubmitTimeout+triggers.CheckpointTimeout)
}

// TestTriggerSetHookSwap: a request that looked up a hook's route just as
// a reload replaced (and stopped) that hook is served by the new hook,
// never by the stopped one.
func TestTriggerSetHookSwap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sub := triggerstest.NewSubmitter()
	env := triggers.Env{Submitter: sub, Store: triggerstest.Store(t), Logger: slog.New(slog.DiscardHandler)}
	set := newTriggerSet(env, map[string]bool{RoleGateway: true}, func(string) string { return "" }, 1024, slog.New(slog.DiscardHandler))
	spec := func(source string) []config.Trigger {
		return []config.Trigger{{
			Name: "signup", HTTP: &config.HTTPTrigger{Path: "signup"},
			Event: config.TriggerEvent{Type: "com.example.signup", Source: source},
		}}
	}
	require.NoError(t, set.apply(ctx, spec("/v1")))
	t.Cleanup(func() { require.NoError(t, set.stop()) })

	var reloaded atomic.Bool
	set.routeLoadedFunc = func() {
		if reloaded.CompareAndSwap(false, true) {
			require.NoError(t, set.apply(ctx, spec("/v2"))) // stops the hook just looked up
		}
	}
	rec := httptest.NewRecorder()
	set.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/hooks/signup", strings.NewReader(`{}`)))
	require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
	require.Equal(t, "/v2", sub.Events()[0].Event.Source(), "served by the new hook")

	// Requests during reloads in a loop: every one is served by a running
	// hook (the race detector watches the in-flight accounting).
	set.routeLoadedFunc = nil
	var wg sync.WaitGroup
	codes := make(chan int, 4*50)
	for range 4 {
		wg.Go(func() {
			for range 50 {
				rec := httptest.NewRecorder()
				set.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/hooks/signup", strings.NewReader(`{}`)))
				codes <- rec.Code
			}
		})
	}
	for i := range 20 {
		require.NoError(t, set.apply(ctx, spec(fmt.Sprintf("/v%d", 3+i))))
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		require.Equal(t, http.StatusAccepted, code)
	}
}
