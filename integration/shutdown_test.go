//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// TestServeStopsQuietly runs `tasklane serve` (every role, no tenants, so
// --insecure-no-auth) with a task running, a result subscription and a
// cron trigger, and sends SIGTERM: the running attempt finishes, the
// process exits 0, and its log has no ERROR line, no stack trace, only
// JSON lines (go-redis's too), one warning about the open API, and ends
// with the "stopped" line. Both drivers.
func TestServeStopsQuietly(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { testServeStopsQuietly(t, driver) })
	}
}

func testServeStopsQuietly(t *testing.T, driver string) {
	started := make(chan struct{}, 16)
	release := make(chan struct{})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseAll)
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(fn.Close)
	e := newStack(t, driver, fmt.Sprintf(`functions:
  - {name: echo, events: [com.example.startup, com.example.tick], endpoint: "builtin:echo"}
  - {name: slow, events: [com.example.slow], endpoint: %q}
subscriptions: [{name: results, sink: %q}]
triggers:
  - {name: tick, cron: {schedule: "@every 1s"}, event: {type: com.example.tick, source: /tick}}
`, fn.URL+"/slow", fn.URL+"/sink"))
	p := e.launch()
	base := p.listenURL()
	testkit.Eventually(t, 30*time.Second, func() bool {
		s, _ := readyz(t, base)
		return s == http.StatusOK
	}, "/readyz 200")
	first := submit(t, base)
	body := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"shutdown-test","type":"com.example.slow"}`, testkit.UniqueName("ev"))
	resp, err := http.Post(base+"/v1/events", "application/cloudevents+json", strings.NewReader(body))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the slow function was not called")
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		return len(listTasks(t, base, contracts.StateSucceeded)) >= 1
	}, "the echo task of %s succeeded", first)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	testkit.Eventually(t, 10*time.Second, func() bool {
		return bytes.Contains(mustRead(t, p.logPath), []byte("shutting down"))
	}, "the shutdown began")
	releaseAll() // the running attempt finishes during the drain
	select {
	case <-p.exited:
		require.NoError(t, p.waitErr, "exit status after SIGTERM")
	case <-time.After(45 * time.Second):
		t.Fatal("no exit within 45s of SIGTERM")
	}

	lines := p.logLines()
	require.NotEmpty(t, lines)
	openAPI := 0
	for _, l := range lines {
		require.NotContains(t, l, "raw", "every line is Tasklane's JSON: %v", l)
		require.NotEqual(t, "ERROR", l["level"], "an ERROR line: %v", l)
		msg, _ := l["msg"].(string)
		if l["level"] == "WARN" && strings.Contains(msg, "no tenants") {
			openAPI++
		}
	}
	require.NotContains(t, string(mustRead(t, p.logPath)), "goroutine ")
	require.Equal(t, 1, openAPI, "one warning that the API takes requests without a key")
	last := lines[len(lines)-1]
	require.Equal(t, "stopped", last["msg"], "the last line: %v", last)
	require.Equal(t, "INFO", last["level"])
}

// TestServeRefusesAConfigWithoutFunctions: exit status 1, and the message
// names the file.
func TestServeRefusesAConfigWithoutFunctions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.yaml")
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	out, err := exec.Command(tasklaneBinary(t), "serve", "--config", path, "--insecure-no-auth").CombinedOutput()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "exit status: %v; output: %s", err, out)
	require.Equal(t, 1, exit.ExitCode())
	require.Contains(t, string(out), path+": functions: no functions configured")
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

func listTasks(t *testing.T, base string, state contracts.State) []contracts.Task {
	t.Helper()
	resp, err := http.Get(base + "/v1/tasks?state=" + string(state))
	require.NoError(t, err)
	defer resp.Body.Close()
	var l contracts.TaskList
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&l))
	return l.Tasks
}
