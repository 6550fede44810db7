package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/tasklane/tasklane/pkg/buildinfo"
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
// each prints a table of the server's answer, or with --json the answer
// itself, and an answer that is not 2xx is an error with the server's
// message and exit code 1.
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
		var out, errOut bytes.Buffer
		code := Run(nil, append(args, "--server", app.URL()), &out, &errOut)
		if code != ExitOK {
			require.Equal(t, ExitError, code, "%v: %s", args, errOut.String())
			msg := strings.TrimPrefix(strings.TrimSuffix(errOut.String(), "\n"), "tasklane: ")
			return out.String(), errors.New(msg)
		}
		return out.String(), nil
	}

	out, err := run("submit", "--type", tasklane.DevEventType, "--id", "cli-1", "--data", `{"name":"cli"}`, "--priority", "7", "--json")
	require.NoError(t, err)
	var sr contracts.SubmitResponse
	require.NoError(t, json.Unmarshal([]byte(out), &sr), out)
	require.Len(t, sr.Tasks, 1)
	id := sr.Tasks[0].ID
	require.Equal(t, "cli-1", sr.Tasks[0].EventID)

	var task contracts.Task
	testkit.Eventually(t, 20*time.Second, func() bool {
		out, err = run("tasks", "get", id, "--json")
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
	// For people: the record's fields, one a line.
	out, err = run("tasks", "get", id)
	require.NoError(t, err)
	for _, re := range []string{`(?m)^id:\s+` + id + `$`, `(?m)^function:\s+echo$`, `(?m)^state:\s+succeeded$`,
		`(?m)^event:\s+id cli-1, source /tasklane/cli, type ` + regexp.QuoteMeta(tasklane.DevEventType) + `$`,
		`(?m)^priority:\s+7$`, `(?m)^attempts:\s+1$`, `(?m)^result:\s+\{"name":\s*"cli"\}$`} {
		require.Regexp(t, re, out)
	}

	// The task's log: a line per entry; --follow ends once the task has
	// ended (it has); --json is the answer.
	out, err = run("tasks", "logs", id)
	require.NoError(t, err)
	for _, re := range []string{`(?m)^\S+Z  accepted\s+accepted from event cli-1`, `(?m)^\S+Z  started\s+#1\s+attempt 1 started by `,
		`(?m)^\S+Z  ended\s+#1\s+\(\d+ ms\) attempt 1 succeeded; reply: \{"name":"cli"\}$`, `(?m)^\S+Z  succeeded\s+#1\s+succeeded$`} {
		require.Regexp(t, re, out)
	}
	followed, err := run("tasks", "logs", id, "--follow", "--interval", "10ms")
	require.NoError(t, err)
	require.Contains(t, followed, "attempt 1 started by ")
	out, err = run("tasks", "logs", id, "--json")
	require.NoError(t, err)
	var lg contracts.TaskLog
	require.NoError(t, json.Unmarshal([]byte(out), &lg), out)
	require.Equal(t, contracts.LogAccepted, lg.Entries[0].Kind)
	_, err = run("tasks", "logs", "no-such-task")
	require.ErrorContains(t, err, "task not found")

	out, err = run("tasks", "list", "--state", "succeeded", "--limit", "1", "--json")
	require.NoError(t, err)
	var l contracts.TaskList
	require.NoError(t, json.Unmarshal([]byte(out), &l), out)
	require.Len(t, l.Tasks, 1)
	require.Equal(t, id, l.Tasks[0].ID)
	out, err = run("tasks", "list", "--state", "succeeded", "--limit", "1")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^ID\s+FUNCTION\s+EVENT TYPE\s+STATE\s+ATTEMPTS\s+PRIORITY\s+CREATED\s+ERROR$`, out)
	require.Regexp(t, `(?m)^`+id+`\s+echo\s+`+regexp.QuoteMeta(tasklane.DevEventType)+`\s+succeeded\s+1\s+7\s+\d{4}-\d\d-\d\dT\S+Z\s+-$`, out)
	require.NotContains(t, out, "more:", "the only succeeded task")

	// Structured mode, deferred: scheduled; the table names the task.
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	out, err = run("submit", "--type", tasklane.DevEventType, "--id", "cli-2", "--structured", "--deliver-at", at.Format(time.RFC3339), "--ttl", "7200")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^TASK\s+EVENT\s+FUNCTION\s+STATE\s+DUPLICATE$`, out)
	m := regexp.MustCompile(`(?m)^(\S+)\s+cli-2\s+echo\s+scheduled\s+false$`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	out, err = run("tasks", "get", m[1], "--json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(out), &task), out)
	require.Equal(t, contracts.StateScheduled, task.State)
	require.NotNil(t, task.ScheduledAt)
	require.True(t, task.ScheduledAt.Equal(at), "scheduled at %s, want %s", task.ScheduledAt, at)
	// A batch file: every event's tasks, in order.
	batch := filepath.Join(t.TempDir(), "events.json")
	require.NoError(t, os.WriteFile(batch, []byte(`[
  {"specversion":"1.0","id":"cli-b1","source":"/batch","type":"`+tasklane.DevEventType+`","data":{"n":1}},
  {"specversion":"1.0","id":"cli-b2","source":"/batch","type":"`+tasklane.DevEventType+`","data":{"n":2}}
]`), 0o600))
	out, err = run("submit", "--batch-file", batch, "--json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(out), &sr), out)
	require.Len(t, sr.Tasks, 2)
	require.Equal(t, []string{"cli-b1", "cli-b2"}, []string{sr.Tasks[0].EventID, sr.Tasks[1].EventID})
	out, err = run("tasks", "list", "--limit", "1")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^more: --cursor \S+$`, out, "a page of 1 among several tasks says how to go on")
	_, err = run("submit", "--batch-file", batch, "--type", "x")
	require.EqualError(t, err, "--batch-file: the file's events carry their own attributes; --type does not apply")
	_, err = run("submit", "--type", "x", "--deliver-at", "tomorrow")
	require.EqualError(t, err, `--deliver-at: want an RFC 3339 time, e.g. 2026-12-24T08:00:00Z, got "tomorrow"`)

	// The routing table: --json is a contracts.RoutingView, the table
	// shows each lane.
	out, err = run("routing", "show", "--json")
	require.NoError(t, err)
	var rv contracts.RoutingView
	require.NoError(t, json.Unmarshal([]byte(out), &rv), out)
	require.NotEmpty(t, rv.Lanes)
	out, err = run("routing", "show")
	require.NoError(t, err)
	require.Contains(t, out, fmt.Sprintf("routing table version %d", rv.Version))
	require.Regexp(t, `(?m)^LANE\s+KIND\s+BACKLOG\s+CONSUMERS$`, out)
	for _, l := range rv.Lanes {
		require.Regexp(t, `(?m)^`+regexp.QuoteMeta(l.Name)+`\s+`+regexp.QuoteMeta(l.Kind)+`\s+\d+\s+\d+$`, out)
	}

	// The functions: --json is a contracts.FunctionsView with every
	// configured function, the table shows one line each (no limits in dev).
	out, err = run("functions", "list", "--json")
	require.NoError(t, err)
	var fv contracts.FunctionsView
	require.NoError(t, json.Unmarshal([]byte(out), &fv), out)
	require.Len(t, fv.Functions, len(cfg.Functions))
	for i, f := range cfg.Functions {
		require.Equal(t, f.Name, fv.Functions[i].Name)
		require.Zero(t, fv.Functions[i].Limit, "dev functions have no limit")
		require.False(t, fv.Functions[i].Adaptive)
	}
	out, err = run("functions", "list")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^FUNCTION\s+LIMIT\s+RUNNING\s+WAITING\s+HIGH\s+NORMAL\s+LOW\s+THROTTLED/MIN$`, out)
	for _, f := range cfg.Functions {
		require.Regexp(t, `(?m)^`+regexp.QuoteMeta(f.Name)+`\s+unlimited\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+$`, out)
	}

	// The probe command, the version in /healthz and in the metrics.
	var hout, herr bytes.Buffer
	require.Equal(t, ExitOK, Run(nil, []string{"health", app.URL()}, &hout, &herr), herr.String())
	require.Equal(t, app.URL()+": ready\n", hout.String())
	version := buildinfo.Read().Version
	r, err := http.Get(app.URL() + "/healthz")
	require.NoError(t, err)
	var hz map[string]string
	require.NoError(t, json.NewDecoder(r.Body).Decode(&hz))
	r.Body.Close()
	require.Equal(t, map[string]string{"status": "ok", "version": version}, hz)
	r, err = http.Get(app.URL() + "/metrics")
	require.NoError(t, err)
	b, err := io.ReadAll(r.Body)
	r.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(b), `tasklane_build_info{commit="`+buildinfo.Read().Commit+`",version="`+version+`"} 1`)
	require.Contains(t, string(b), `tasklane_function_limit{function="echo"} 0`)
	require.Contains(t, string(b), `tasklane_function_waiting{function="echo"} 0`)

	_, err = run("tasks", "cancel", id)
	require.EqualError(t, err, "server answered 409: task cannot be cancelled: it is succeeded (only tasks that have not ended can be cancelled)")
	_, err = run("dlq", "purge", "01KH62FBSQY4E00SB1AA863NEG")
	require.EqualError(t, err, "server answered 404: task not found")
	_, err = run("dlq", "list", "--since", "yesterday")
	require.EqualError(t, err, "--since: want an RFC 3339 time, e.g. 2026-11-27T08:00:00Z")
	out, err = run("dlq", "redrive", "--all", "--dry-run", "--json")
	require.NoError(t, err)
	require.JSONEq(t, `{"matched":0,"done":0,"dry_run":true}`, out)

	// Pauses and cancel by selector.
	out, err = run("pause", "--function", "echo", "--json")
	require.NoError(t, err)
	var p contracts.Pause
	require.NoError(t, json.Unmarshal([]byte(out), &p), out)
	require.Equal(t, "echo", p.Selector.Function)
	out, err = run("pauses", "list")
	require.NoError(t, err)
	require.Regexp(t, `(?m)^ID\s+CREATED\s+PAUSED\s+STATUS\s+SELECTOR$`, out)
	require.Regexp(t, `(?m)^`+p.ID+`\s+\S.*\s+\d+\s+active\s+function=echo$`, out)
	out, err = run("resume", p.ID)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("resumed %d tasks\n", p.Paused), out, "what it paused when created (nothing else is submitted meanwhile)")
	out, err = run("pauses", "list", "--json")
	require.NoError(t, err)
	require.JSONEq(t, `{"pauses":[]}`, out)
	out, err = run("tasks", "cancel", "--function", "echo", "--dry-run")
	require.NoError(t, err)
	require.Regexp(t, `^\d+ tasks match \(dry run: none cancelled\)\n$`, out)
	_, err = run("pause", "--state", "queued")
	require.ErrorContains(t, err, "give a selector")
	_, err = run("tasks", "cancel", id, "--function", "echo")
	require.EqualError(t, err, "give a task id or a selector, not both")
	_, err = run("resume", p.ID)
	require.EqualError(t, err, "server answered 404: pause not found")
	out, err = run("dlq", "redrive", "--all", "--dry-run")
	require.NoError(t, err)
	require.Equal(t, "0 dead-lettered tasks match (dry run: nothing redriven)\n", out)
	out, err = run("dlq", "list", "--json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(out), &l), out)
	require.Empty(t, l.Tasks)
	out, err = run("dlq", "list")
	require.NoError(t, err)
	require.Equal(t, "no dead-lettered tasks\n", out)
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

// serve refuses a go: endpoint the binary has no handler for (its tasks
// could never run), as config validate does.
func TestServeRefusesAnUnregisteredGoEndpoint(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "go.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`tenants: [{id: acme, api_keys: [acme-dev-key]}]
functions:
  - {name: a, events: [a], endpoint: "go:resise"}
`), 0o600))
	var out, errOut bytes.Buffer
	cmd := NewCommand(nil, &out, &errOut)
	cmd.SetArgs([]string{"serve", "--config", path})
	err := cmd.Execute()
	require.ErrorContains(t, err, path+`:3:38: functions[0].endpoint: no Go handler registered as "resise"`)
}
