package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/tasklane"
)

// TestDevModeServesTheBannerCurl starts what `tasklane dev` starts (embedded
// store and broker, the demo config) and runs the curl line its banner
// prints: 202 with a task id, then the task succeeds with the data echoed.
func TestDevModeServesTheBannerCurl(t *testing.T) {
	cfg := tasklane.DevConfig()
	cfg.Server.Addr = "127.0.0.1:0"
	stop, err := tasklane.UseEmbeddedStore(cfg)
	require.NoError(t, err)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app, err := tasklane.Start(ctx, cfg, tasklane.Options{Logger: quietLogger()})
	require.NoError(t, err)
	defer func() { require.NoError(t, app.Shutdown(context.Background())) }()

	banner := devBanner(app.URL(), cfg)
	require.Contains(t, banner, app.URL()+"/v1/events")
	req, err := http.NewRequest(http.MethodPost, app.URL()+"/v1/events", strings.NewReader(`{"name":"world"}`))
	require.NoError(t, err)
	// The headers of the banner's curl line.
	for _, m := range regexp.MustCompile(`-H '([^:]+): ([^']+)'`).FindAllStringSubmatch(banner, -1) {
		req.Header.Set(m[1], m[2])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var sr contracts.SubmitResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&sr))
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Len(t, sr.Tasks, 1)
	require.Equal(t, "echo", sr.Tasks[0].Function)

	var task contracts.Task
	testkit.Eventually(t, 20*time.Second, func() bool {
		r, err := http.Get(app.URL() + "/v1/tasks/" + sr.Tasks[0].ID)
		if err != nil {
			return false
		}
		defer r.Body.Close()
		return json.NewDecoder(r.Body).Decode(&task) == nil && task.State == contracts.StateSucceeded
	}, "task %s succeeded (state %q)", sr.Tasks[0].ID, task.State)
	require.JSONEq(t, `{"name":"world"}`, string(task.Result))

	for _, probe := range []string{"/healthz", "/readyz", "/metrics"} {
		r, err := http.Get(app.URL() + probe)
		require.NoError(t, err)
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		require.Equal(t, http.StatusOK, r.StatusCode, "%s: %s", probe, b)
	}
}

// TestServeRefusesABadConfig runs `tasklane serve` on a config with several
// problems: it must not start, and the error names file, line and field.
func TestServeRefusesABadConfig(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`functions:
  - name: work
    events: [com.example.work]
    timeout: 30 seconds
  - name: work
    events: [com.example.other]
    endpoint: builtin:noop
    retyr: {max_attempts: 3}
`), 0o600))
	var out, errOut bytes.Buffer
	cmd := NewCommand(nil, &out, &errOut)
	cmd.SetArgs([]string{"serve", "--config", path})
	err := cmd.Execute()
	require.Error(t, err)
	msg := err.Error()
	require.Contains(t, msg, path+`:2:5: functions[0].endpoint: missing (required)`)
	require.Contains(t, msg, path+`:4:14: functions[0].timeout: invalid duration "30 seconds"`)
	require.Contains(t, msg, path+`:5:11: functions[1].name: duplicate function name "work"`)
	require.Contains(t, msg, path+`:8:5: functions[1].retyr: unknown key (did you mean "retry"?)`)
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// TestClientCommands runs submit, tasks and dlq against a dev-mode app:
// each prints the server's answer, and an answer that is not 2xx is an
// error with the server's message.
func TestClientCommands(t *testing.T) {
	cfg := tasklane.DevConfig()
	cfg.Server.Addr = "127.0.0.1:0"
	stop, err := tasklane.UseEmbeddedStore(cfg)
	require.NoError(t, err)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app, err := tasklane.Start(ctx, cfg, tasklane.Options{Logger: quietLogger()})
	require.NoError(t, err)
	defer func() { require.NoError(t, app.Shutdown(context.Background())) }()

	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		cmd := NewCommand(nil, &out, io.Discard)
		cmd.SetArgs(append(args, "--server", app.URL()))
		err := cmd.Execute()
		return out.String(), err
	}

	out, err := run("submit", "--type", tasklane.DevEventType, "--id", "cli-1", "--data", `{"name":"cli"}`, "--priority", "7")
	require.NoError(t, err)
	var sr contracts.SubmitResponse
	require.NoError(t, json.Unmarshal([]byte(out), &sr), out)
	require.Len(t, sr.Tasks, 1)
	id := sr.Tasks[0].ID
	require.Equal(t, "cli-1", sr.Tasks[0].EventID)

	var task contracts.Task
	testkit.Eventually(t, 20*time.Second, func() bool {
		out, err = run("tasks", "get", id)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal([]byte(out), &task), out)
		return task.State == contracts.StateSucceeded
	}, "task %s succeeded", id)
	require.Equal(t, 7, task.Priority)
	require.JSONEq(t, `{"name":"cli"}`, string(task.Result))
	// What the server answered, field for field.
	resp, err := http.Get(app.URL() + "/v1/tasks/" + id)
	require.NoError(t, err)
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.JSONEq(t, string(raw), out)

	out, err = run("tasks", "list", "--state", "succeeded", "--limit", "1")
	require.NoError(t, err)
	var l contracts.TaskList
	require.NoError(t, json.Unmarshal([]byte(out), &l), out)
	require.Len(t, l.Tasks, 1)
	require.Equal(t, id, l.Tasks[0].ID)

	_, err = run("tasks", "cancel", id)
	require.EqualError(t, err, "server answered 409: task cannot be cancelled: it is succeeded (only queued, scheduled, retrying or paused tasks can be cancelled)")
	_, err = run("dlq", "purge", "01KH62FBSQY4E00SB1AA863NEG")
	require.EqualError(t, err, "server answered 404: task not found")
	_, err = run("dlq", "list", "--since", "yesterday")
	require.EqualError(t, err, "--since: want an RFC 3339 time, e.g. 2026-11-27T08:00:00Z")
	out, err = run("dlq", "redrive", "--all", "--dry-run")
	require.NoError(t, err)
	require.JSONEq(t, `{"matched":0,"done":0,"dry_run":true}`, out)
	cmd := NewCommand(nil, io.Discard, io.Discard)
	cmd.SetArgs([]string{"tasks", "get", id, "--server", "localhost:8080"})
	require.EqualError(t, cmd.Execute(), `--server: server URL "localhost:8080": want http://host[:port] or https://host[:port]`)
}

// TestServeRefusesABadURLFromTheEnvironment sets the broker and Redis URLs
// through TASKLANE_AMQP_URL and TASKLANE_REDIS_URL to URLs that do not
// parse: serve must end with a config error naming the variable (a retry
// never fixes it), and neither the error nor the log shows the password.
func TestServeRefusesABadURLFromTheEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ok.yaml")
	require.NoError(t, os.WriteFile(path, []byte("server: {addr: \"127.0.0.1:0\"}\n"), 0o600))
	for _, tt := range []struct{ env, url string }{
		{"TASKLANE_AMQP_URL", "amqp://guest:s3cret-pw@127.0.0.1:bad/"},
		{"TASKLANE_REDIS_URL", "redis://:s3cret-pw@127.0.0.1:bad/0"},
	} {
		t.Run(tt.env, func(t *testing.T) {
			t.Setenv(tt.env, tt.url)
			var out, errOut bytes.Buffer
			cmd := NewCommand(nil, &out, &errOut)
			cmd.SetArgs([]string{"serve", "--config", path})
			// Bounded: before the fix serve retried the bad URL until
			// stopped, and a stop while starting is not an error.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := cmd.ExecuteContext(ctx)
			require.Error(t, err, "log: %s", errOut.String())
			require.Contains(t, err.Error(), tt.env)
			require.NotContains(t, err.Error(), "s3cret-pw")
			require.NotContains(t, errOut.String(), "s3cret-pw")
		})
	}
}
