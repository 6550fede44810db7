// Package functions_test runs the example functions in Python and Node
// (examples/functions/python, examples/functions/node) under Tasklane: each
// is started with its interpreter, a function points at it, and events are
// submitted through the API.
package functions_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/tasklane"
)

const eventType = "com.example.function.called"

// TestExampleFunctions runs each example: an event ends succeeded with the
// example's answer as result, and an event asking for a 429 is classified
// throttled: with max_attempts 1, a retryable or non-retryable answer would
// end the task dead; a throttled one is retried without using the attempt.
func TestExampleFunctions(t *testing.T) {
	for _, ex := range []struct{ runtime, interpreter, script string }{
		{"python", "python3", "python/server.py"},
		{"node", "node", "node/server.js"},
	} {
		t.Run(ex.runtime, func(t *testing.T) {
			t.Parallel()
			bin, err := exec.LookPath(ex.interpreter)
			if err != nil {
				t.Skipf("%s is not installed: the %s example is not run", ex.interpreter, ex.runtime)
			}
			// The function posts log lines to the API: it is told the
			// address the app will listen on.
			apiAddr := freeAddr(t)
			addr, logs := startFunction(t, bin, ex.script, "http://"+apiAddr)

			cfg := (&config.Config{
				Server: config.Server{Addr: apiAddr},
				Functions: []config.Function{{
					Name:     ex.runtime,
					Events:   []string{eventType},
					Endpoint: "http://" + addr + "/",
					Timeout:  config.Duration(10 * time.Second),
					Retry:    config.Retry{MaxAttempts: 1},
				}},
			}).WithDefaults()
			stop, err := tasklane.UseEmbeddedStore(cfg)
			require.NoError(t, err)
			defer stop()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			app, err := tasklane.Start(ctx, cfg, tasklane.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			require.NoError(t, err)
			defer func() { require.NoError(t, app.Shutdown(context.Background())) }()

			// A plain event: the task succeeds with the example's answer.
			id := submit(t, app.URL(), "ev-plain", `{"name":"world"}`)
			task := waitEnded(t, app.URL(), id)
			require.Equal(t, contracts.StateSucceeded, task.State, "task %+v", task)
			require.JSONEq(t, fmt.Sprintf(`{"runtime":%q,"event_id":"ev-plain","type":%q,"data":{"name":"world"}}`,
				ex.runtime, eventType), string(task.Result))
			require.Equal(t, 1, task.Attempts)
			// The log line names the task, the attempt, the deadline and the event.
			require.Regexp(t, `task=`+id+` attempt=1 deadline=\d{4}-\d\d-\d\dT\S+ event=ev-plain type=`+eventType+
				` source=/examples answer=200`, logs.String())
			// ... and the function posted a line to the task's log.
			require.Equal(t, []string{ex.runtime + ": handled event ev-plain"}, logLines(t, app.URL(), id))

			// {"throttle": true}: 429 with Retry-After first, then success.
			id = submit(t, app.URL(), "ev-throttle", `{"throttle":true}`)
			task = waitEnded(t, app.URL(), id)
			require.Equal(t, contracts.StateSucceeded, task.State, "task %+v", task)
			require.JSONEq(t, fmt.Sprintf(`{"runtime":%q,"event_id":"ev-throttle","type":%q,"data":{"throttle":true}}`,
				ex.runtime, eventType), string(task.Result))
			require.Equal(t, 1, task.Attempts, "the throttled answer gave its attempt back")
			// Both calls posted a line to the task's log with their token.
			lines := logLines(t, app.URL(), id)
			require.Equal(t, []string{ex.runtime + ": throttled, try again in 1s", ex.runtime + ": handled event ev-throttle"}, lines)
			require.NotContains(t, logs.String(), "posting the log line failed")
			calls := regexp.MustCompile(`task=`+id+` attempt=(\d+) .* answer=(\d+)`).FindAllStringSubmatch(logs.String(), -1)
			require.Len(t, calls, 2, "the function was called twice for %s:\n%s", id, logs.String())
			require.Equal(t, []string{"1", "429"}, calls[0][1:])
			require.Equal(t, []string{"1", "200"}, calls[1][1:])
		})
	}
}

// startFunction runs the example on a free port and returns its address and
// its output so far (read as it comes). The process is killed at cleanup.
func startFunction(t *testing.T, bin, script, api string) (addr string, logs *testkit.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, script)
	cmd.Env = append(cmd.Environ(), "HOST=127.0.0.1", "PORT=0", "PYTHONUNBUFFERED=1", "TASKLANE_URL="+api)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &testkit.SyncBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	logs = &testkit.SyncBuffer{}
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done // the pipe is read to its end before Wait closes it
		_ = cmd.Wait()
	})
	listening := make(chan string, 1)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if a, ok := strings.CutPrefix(line, "listening on "); ok {
				select {
				case listening <- a:
				default:
				}
			}
			_, _ = logs.WriteString(line + "\n")
		}
	}()
	select {
	case addr = <-listening:
		return addr, logs
	case <-done:
		t.Fatalf("%s %s exited before listening; stderr:\n%s", bin, script, stderr.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("%s %s did not print its address within 15s; stderr:\n%s", bin, script, stderr.String())
	}
	return "", nil
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// logLines returns the lines the function wrote to the task's log.
func logLines(t *testing.T, base, id string) []string {
	t.Helper()
	resp, err := http.Get(base + "/v1/tasks/" + id + "/logs")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var lg contracts.TaskLog
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&lg))
	var lines []string
	for _, e := range lg.Entries {
		if e.Kind == contracts.LogLine {
			lines = append(lines, e.Message)
		}
	}
	return lines
}

// submit posts a binary-mode CloudEvent and returns its task's id.
func submit(t *testing.T, base, eventID, data string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/v1/events", strings.NewReader(data))
	require.NoError(t, err)
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-id", eventID)
	req.Header.Set("ce-source", "/examples")
	req.Header.Set("ce-type", eventType)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", body)
	var sr contracts.SubmitResponse
	require.NoError(t, json.Unmarshal(body, &sr))
	require.Len(t, sr.Tasks, 1)
	return sr.Tasks[0].ID
}

// waitEnded polls the task until it is terminal.
func waitEnded(t *testing.T, base, id string) contracts.Task {
	t.Helper()
	var task contracts.Task
	testkit.Eventually(t, 20*time.Second, func() bool {
		resp, err := http.Get(base + "/v1/tasks/" + id)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		task = contracts.Task{}
		return json.NewDecoder(resp.Body).Decode(&task) == nil && task.State.Terminal()
	}, "task %s ended (state %q)", id, task.State)
	return task
}
