package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/buildinfo"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/tasklane"
)

// run runs the command line and returns its exit code, stdout and stderr.
func run(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := Run(nil, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestCLIUsageErrors: an unknown command, subcommand or flag, or a wrong
// number of arguments, exits 2 with the problem and a suggestion; the
// server's flags are on serve and dev only.
func TestCLIUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"UnknownCommand", []string{"tsks", "list"}, []string{`unknown command "tsks" for "tasklane"`, "Did you mean this?\n\ttasks\n", "Run 'tasklane --help' for usage."}},
		{"UnknownTasksSubcommand", []string{"tasks", "lsit"}, []string{`unknown command "lsit" for "tasklane tasks"`, "Did you mean this?\n\tlist\n", "Run 'tasklane tasks --help' for usage."}},
		{"UnknownDLQSubcommand", []string{"dlq", "redrve", "--all"}, []string{`unknown command "redrve" for "tasklane dlq"`, "Did you mean this?\n\tredrive\n"}},
		{"UnknownConfigSubcommand", []string{"config", "validte", "x.yaml"}, []string{`unknown command "validte" for "tasklane config"`, "\tvalidate\n"}},
		{"NoSuggestion", []string{"routing", "frobnicate"}, []string{`unknown command "frobnicate" for "tasklane routing"`}},
		{"LogLevelOnAClientCommand", []string{"tasks", "list", "--log-level", "debug"}, []string{"unknown flag: --log-level", "Run 'tasklane tasks list --help' for usage."}},
		{"PprofOnSubmit", []string{"submit", "--type", "x", "--pprof"}, []string{"unknown flag: --pprof"}},
		{"LogFormatOnRoot", []string{"--log-format", "json", "version"}, []string{"unknown flag: --log-format"}},
		{"MissingArgument", []string{"tasks", "get"}, []string{"accepts 1 arg(s), received 0", "Run 'tasklane tasks get --help' for usage."}},
		{"ExtraArgument", []string{"version", "now"}, []string{`unknown command "now" for "tasklane version"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := run(tc.args...)
			require.Equal(t, ExitUsage, code, errOut)
			require.Empty(t, out)
			require.True(t, strings.HasPrefix(errOut, "tasklane: "), errOut)
			for _, w := range tc.want {
				require.Contains(t, errOut, w)
			}
			if tc.name == "NoSuggestion" {
				require.NotContains(t, errOut, "Did you mean")
			}
		})
	}

	// serve and dev take the server's flags: the error is past the flags.
	code, _, errOut := run("serve", "--log-level", "debug", "--log-format", "json", "--pprof")
	require.Equal(t, ExitError, code)
	require.Equal(t, "tasklane: --config is required (see examples/tasklane.yaml)\n", errOut)
	code, _, errOut = run("dev", "--log-level", "loud", "--pprof")
	require.Equal(t, ExitError, code)
	require.Contains(t, errOut, "--log-level:")
	// A command that groups others, given none, shows its help.
	code, out, errOut := run("dlq")
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "Available Commands:")
	require.Contains(t, out, "redrive")
	code, out, errOut = run("tasks", "--help")
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "Examples:")
	code, _, errOut = run("tasks", "--bogus")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, errOut, "unknown flag: --bogus")
}

// TestCLIHelpHasExamples: every command's help shows an example.
func TestCLIHelpHasExamples(t *testing.T) {
	t.Parallel()
	root := NewCommand(nil, io.Discard, io.Discard)
	cmds := root.Commands()
	for len(cmds) > 0 {
		c := cmds[0]
		cmds = append(cmds[1:], c.Commands()...)
		if c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		require.NotEmpty(t, c.Example, "%s has no Example", c.CommandPath())
	}
}

// TestVersion: `tasklane version` prints what the build recorded.
func TestVersion(t *testing.T) {
	t.Parallel()
	bi := buildinfo.Read()
	code, out, errOut := run("version")
	require.Equal(t, ExitOK, code, errOut)
	require.Equal(t, "tasklane "+bi.Version+" (commit "+bi.Commit+", "+bi.Go+")\n", out)
	code, out, errOut = run("version", "--json")
	require.Equal(t, ExitOK, code, errOut)
	var got buildinfo.Info
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.Equal(t, bi, got)
	require.NotEmpty(t, got.Version)
	require.NotEmpty(t, got.Commit)
}

// closedAddr is a local address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestHealthNotReady: `tasklane health` exits 1 with the reason against a
// server that waits for Redis and the broker, and against no server.
func TestHealthNotReady(t *testing.T) {
	t.Parallel()
	cfg := tasklane.DevConfig()
	cfg.Server.Addr = "127.0.0.1:0"
	cfg.Redis.URL = "redis://" + closedAddr(t) + "/0"
	app, err := tasklane.Launch(context.Background(), cfg, tasklane.Options{Logger: quietLogger()})
	require.NoError(t, err)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, app.Shutdown(ctx))
	}()
	var code int
	var out, errOut string
	testkit.Eventually(t, 10*time.Second, func() bool {
		code, out, errOut = run("health", app.URL())
		return strings.Contains(errOut, "connection refused")
	}, "health names the cause: %s", errOut)
	require.Equal(t, ExitError, code)
	require.Empty(t, out)
	require.Contains(t, errOut, "tasklane: "+app.URL()+": server answered 503: not ready: ")
	require.Regexp(t, `redis: [^;]*connection refused`, errOut)

	addr := closedAddr(t)
	code, out, errOut = run("health", "http://"+addr, "--timeout", "2s")
	require.Equal(t, ExitError, code)
	require.Empty(t, out)
	require.Contains(t, errOut, "connection refused")
	// A password in the URL is never printed.
	code, _, errOut = run("health", "http://probe:s3cret-pw@"+addr, "--timeout", "2s")
	require.Equal(t, ExitError, code)
	require.NotContains(t, errOut, "s3cret-pw")
	require.Contains(t, errOut, "probe:xxxxx@")
	code, _, errOut = run("health", "127.0.0.1:8080")
	require.Equal(t, ExitError, code)
	require.Contains(t, errOut, "want http://host[:port]")
	code, _, errOut = run("health", "http://"+addr, "--timeout", "0s")
	require.Equal(t, ExitError, code)
	require.Contains(t, errOut, "--timeout: want a positive duration")
}

// TestSubmitSendsTheFlags: what submit sends for each mode and flag.
func TestSubmitSendsTheFlags(t *testing.T) {
	t.Parallel()
	type request struct {
		header http.Header
		body   string
	}
	var mu sync.Mutex
	var got []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, request{r.Header.Clone(), string(b)})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_ = json.NewEncoder(w).Encode(contracts.SubmitResponse{Tasks: []contracts.SubmittedTask{{ID: "T1", EventID: "e1", Function: "f", State: contracts.StateScheduled}}})
	}))
	defer srv.Close()
	last := func() request {
		mu.Lock()
		defer mu.Unlock()
		require.NotEmpty(t, got)
		return got[len(got)-1]
	}

	code, _, errOut := run("submit", "--server", srv.URL, "--type", "com.example.t", "--id", "e1", "--data", `{"a":1}`,
		"--ttl", "90", "--deliver-at", "2030-01-02T03:04:05Z", "--priority", "3")
	require.Equal(t, ExitOK, code, errOut)
	r := last()
	require.Equal(t, "1.0", r.header.Get("Ce-Specversion"))
	require.Equal(t, "90", r.header.Get("Ce-Ttl"))
	require.Equal(t, "2030-01-02T03:04:05Z", r.header.Get("Ce-Deliverat"))
	require.Equal(t, "3", r.header.Get("Ce-Priority"))
	require.JSONEq(t, `{"a":1}`, r.body)

	code, _, errOut = run("submit", "--server", srv.URL, "--structured", "--type", "com.example.t", "--id", "e1", "--source", "/s",
		"--data", `{"a":1}`, "--ttl", "90", "--deliver-at", "2030-01-02T03:04:05Z", "--subject", "sub")
	require.Equal(t, ExitOK, code, errOut)
	r = last()
	require.Equal(t, "application/cloudevents+json", r.header.Get("Content-Type"))
	require.Empty(t, r.header.Get("Ce-Specversion"))
	require.JSONEq(t, `{"specversion":"1.0","id":"e1","source":"/s","type":"com.example.t","subject":"sub",
		"datacontenttype":"application/json","ttl":"90","deliverat":"2030-01-02T03:04:05Z","data":{"a":1}}`, r.body)

	batch := `[{"specversion":"1.0","id":"1","source":"/b","type":"t","data":"x"},{"specversion":"1.0","id":"2","source":"/b","type":"t"}]`
	file := filepath.Join(t.TempDir(), "batch.json")
	require.NoError(t, os.WriteFile(file, []byte(batch), 0o600))
	code, out, errOut := run("submit", "--server", srv.URL, "--batch-file", file)
	require.Equal(t, ExitOK, code, errOut)
	r = last()
	require.Equal(t, "application/cloudevents-batch+json", r.header.Get("Content-Type"))
	require.Equal(t, batch, r.body)
	require.Regexp(t, `(?m)^T1\s+e1\s+f\s+scheduled\s+false$`, out)

	// Refused before sending.
	n := len(got)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--type", "t", "--delay", "5", "--deliver-at", "2030-01-02T03:04:05Z"}, "give --delay or --deliver-at, not both"},
		{[]string{"--type", "t", "--ttl", "-1"}, "--delay and --ttl: want whole seconds, 0 or more"},
		{[]string{"--type", "t", "--priority", "10"}, "--priority: want 0 to 9, got 10"},
		{[]string{"--batch-file", file, "--structured"}, "--structured does not apply"},
		{[]string{"--batch-file", filepath.Join(t.TempDir(), "missing.json")}, "--batch-file: open"},
		{[]string{"--data", "x"}, "--type is required (or --batch-file)"},
	} {
		code, _, errOut := run(append([]string{"submit", "--server", srv.URL}, tc.args...)...)
		require.Equal(t, ExitError, code, "%v", tc.args)
		require.Contains(t, errOut, tc.want, "%v", tc.args)
	}
	for _, bad := range []string{`{"id":"1"}`, `[]`, `[1, 2]`, `not json`} {
		require.NoError(t, os.WriteFile(file, []byte(bad), 0o600))
		code, _, errOut := run("submit", "--server", srv.URL, "--batch-file", file)
		require.Equal(t, ExitError, code, bad)
		require.Contains(t, errOut, "--batch-file "+file+": ", bad)
	}
	require.Len(t, got, n, "nothing sent")
}

// TestTaskTables: the tables show each field of the records.
func TestTaskTables(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 4, 8, 0, 0, 0, time.UTC)
	finished := created.Add(90 * time.Second)
	wait, runMS := int64(1500), int64(250)
	dead := contracts.Task{
		ID: "01KH62FBSQY4E00SB1AA863NEG", Tenant: "acme", Function: "thumbnail",
		Event: contracts.EventRef{ID: "img-7", Source: "/uploads", Type: "com.example.image", Subject: "cat.png"},
		State: contracts.StateDead, Attempts: 5, Priority: 4, CreatedAt: created, StartedAt: &created, FinishedAt: &finished,
		QueueWaitMS: &wait, RunMS: &runMS, Error: "HTTP 500:\nboom " + strings.Repeat("x", 100), Reason: contracts.ReasonAttemptsExhausted, Redrives: 2,
		EventData: json.RawMessage(`{"key": "cat.png"}`), EventDataBytes: 18,
	}
	var b bytes.Buffer
	printTaskList(&b, &contracts.TaskList{Tasks: []contracts.Task{dead}, NextCursor: "c2"}, true)
	out := b.String()
	require.Regexp(t, `(?m)^ID\s+FUNCTION\s+EVENT TYPE\s+REASON\s+ATTEMPTS\s+REDRIVES\s+DIED\s+ERROR$`, out)
	require.Regexp(t, `(?m)^01KH62FBSQY4E00SB1AA863NEG\s+thumbnail\s+com\.example\.image\s+attempts_exhausted\s+5\s+2\s+2026-12-04T08:01:30Z\s+HTTP 500: boom x+\.\.\.$`, out)
	require.Contains(t, out, "\nmore: --cursor c2\n")

	b.Reset()
	printTask(&b, &dead)
	out = b.String()
	for _, re := range []string{`id:\s+01KH62FBSQY4E00SB1AA863NEG`, `tenant:\s+acme`, `function:\s+thumbnail`, `state:\s+dead`,
		`event:\s+id img-7, source /uploads, type com\.example\.image`, `subject:\s+cat\.png`, `attempts:\s+5`, `priority:\s+4`,
		`created_at:\s+2026-12-04T08:00:00Z`, `scheduled_at:\s+-`, `started_at:\s+2026-12-04T08:00:00Z`, `finished_at:\s+2026-12-04T08:01:30Z`,
		`queue_wait:\s+1\.5s`, `run:\s+250ms`, `reason:\s+attempts_exhausted`, `redrives:\s+2`, `error:\s+HTTP 500: boom x{100}`, `event_data:\s+\{"key": "cat\.png"\}`} {
		require.Regexp(t, `(?m)^`+re+`$`, out)
	}
	b.Reset()
	printTaskList(&b, &contracts.TaskList{}, false)
	require.Equal(t, "no tasks\n", b.String())
}
