//go:build integration

package integration

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// startupFunctions is the config body of the start-up tests: one echo
// function.
const startupFunctions = `functions: [{name: echo, events: [com.example.startup], endpoint: "builtin:echo"}]`

// TestServeStartsBeforeItsServices starts `tasklane serve` while nothing
// listens at its broker and Redis addresses, as a container orchestrator
// may. The process stays up, answers /healthz 200 and /readyz 503 naming
// what is missing, logs one line per retry naming the service, the URL
// without its password and the cause; once forwarders to the real RabbitMQ
// and Redis listen on those addresses it becomes ready by itself and runs a
// task. SIGTERM then ends it cleanly. Both drivers (redisstream waits for
// Redis only).
func TestServeStartsBeforeItsServices(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { testServeStartsBeforeItsServices(t, driver) })
	}
}

func testServeStartsBeforeItsServices(t *testing.T, driver string) {
	amqpReal, err := url.Parse(testkit.AMQPURL())
	require.NoError(t, err)
	redisReal, err := redis.ParseURL(redisURL(driver))
	require.NoError(t, err)
	amqpAddr, redisAddr := reservePort(t), reservePort(t)
	amqpURL := *amqpReal
	amqpURL.Host = amqpAddr
	appRedis := strings.Replace(redisURL(driver), redisReal.Addr, redisAddr, 1)
	require.NotEqual(t, redisURL(driver), appRedis)
	e := newStackAt(t, driver, stackAt{AppAMQP: amqpURL.String(), AppRedis: appRedis, Redis: redisURL(driver)}, startupFunctions)
	amqp := driver == config.BrokerDriverAMQP

	p := e.launch()
	base := p.listenURL()
	requireStatus(t, base+"/healthz", http.StatusOK)
	testkit.Eventually(t, 10*time.Second, func() bool {
		_, checks := readyz(t, base)
		return strings.Contains(checks["redis"], "connection refused")
	}, "/readyz names the Redis cause")
	status, checks := readyz(t, base)
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Contains(t, checks["redis"], "connection refused", "readyz: %v", checks)
	if amqp {
		testkit.Eventually(t, 10*time.Second, func() bool {
			_, checks = readyz(t, base)
			return strings.Contains(checks["broker"], "connection refused")
		}, "/readyz names the broker cause: %v", checks)
	} else {
		testkit.Eventually(t, 10*time.Second, func() bool {
			_, checks = readyz(t, base)
			return checks["broker"] == "waiting for Redis"
		}, "/readyz says the broker waits for Redis: %v", checks)
	}
	require.NotEqual(t, "ok", checks["lanes"], "readyz: %v", checks)

	// Two retry lines per service: the process keeps trying.
	redacted := redactedURL(amqpURL)
	testkit.Eventually(t, 20*time.Second, func() bool {
		return (!amqp || len(p.retries("rabbitmq", redacted, "connection refused")) >= 2) &&
			len(p.retries("redis", appRedis, "connection refused")) >= 2
	}, "two retry lines each for rabbitmq (%s) and redis (%s) naming the cause; log: %s", redacted, appRedis, p.logPath)
	p.requireNoSecret(amqpReal)
	requireStatus(t, base+"/v1/tasks", http.StatusServiceUnavailable)

	if amqp {
		forward(t, amqpAddr, amqpReal.Host)
	}
	forward(t, redisAddr, redisReal.Addr)
	testkit.Eventually(t, 15*time.Second, func() bool {
		s, _ := readyz(t, base)
		return s == http.StatusOK
	}, "/readyz 200 once the broker and Redis are reachable")
	p.requireNoSecret(amqpReal)

	id := submit(t, base)
	var task contracts.Task
	testkit.Eventually(t, 20*time.Second, func() bool {
		task = getTask(t, base, id)
		return task.State == contracts.StateSucceeded
	}, "task %s succeeded (state %q)", id, task.State)
	p.stop()
	p.requireNoPanic()
}

// TestServeWaitsForItsVhost starts `tasklane serve` against a RabbitMQ
// vhost that does not exist: it stays up and not ready, saying why, and
// becomes ready once the vhost exists and guest may use it.
func TestServeWaitsForItsVhost(t *testing.T) {
	amqpReal, err := url.Parse(testkit.AMQPURL())
	require.NoError(t, err)
	vhost := testkit.UniqueName("tasklane-startup")
	t.Cleanup(func() {
		// Also on failure: the vhost and every queue in it go.
		out, err := exec.Command("rabbitmqctl", "delete_vhost", vhost).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "does not exist") && !strings.Contains(string(out), "not found") {
			t.Errorf("rabbitmqctl delete_vhost %s: %v: %s", vhost, err, out)
		}
	})
	amqpURL := *amqpReal
	amqpURL.Path = "/" + vhost
	e := newStackAt(t, config.BrokerDriverAMQP, stackAt{AppAMQP: amqpURL.String()}, startupFunctions)

	p := e.launch()
	base := p.listenURL()
	redacted := redactedURL(amqpURL)
	testkit.Eventually(t, 20*time.Second, func() bool {
		return len(p.retries("rabbitmq", redacted, "vhost")) >= 2
	}, "two retry lines for rabbitmq (%s) naming the vhost; log: %s", redacted, p.logPath)
	requireStatus(t, base+"/healthz", http.StatusOK)
	// Redis connects on its own, whatever the broker does.
	var status int
	var checks map[string]string
	testkit.Eventually(t, 20*time.Second, func() bool {
		status, checks = readyz(t, base)
		return checks["redis"] == "ok"
	}, "redis connected while the vhost is missing")
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Contains(t, checks["broker"], vhost, "readyz: %v", checks)

	rabbitmqctl(t, "add_vhost", vhost)
	rabbitmqctl(t, "set_permissions", "-p", vhost, amqpReal.User.Username(), ".*", ".*", ".*")
	testkit.Eventually(t, 15*time.Second, func() bool {
		s, _ := readyz(t, base)
		return s == http.StatusOK
	}, "/readyz 200 once the vhost exists")
	id := submit(t, base)
	testkit.Eventually(t, 20*time.Second, func() bool {
		return getTask(t, base, id).State == contracts.StateSucceeded
	}, "task %s succeeded", id)
	p.requireNoSecret(amqpReal)
	p.stop()
	p.requireNoPanic()
}

// TestServeStopsWhileConnecting sends SIGTERM to a `tasklane serve` that is
// still waiting for RabbitMQ and Redis: it exits 0, promptly, with no panic.
func TestServeStopsWhileConnecting(t *testing.T) {
	amqpReal, err := url.Parse(testkit.AMQPURL())
	require.NoError(t, err)
	amqpURL := *amqpReal
	amqpURL.Host = reservePort(t)
	appRedis := "redis://" + reservePort(t) + "/0"
	e := newStackAt(t, config.BrokerDriverAMQP, stackAt{AppAMQP: amqpURL.String(), AppRedis: appRedis, Redis: redisURL(config.BrokerDriverAMQP)}, startupFunctions)

	p := e.launch()
	p.listenURL()
	testkit.Eventually(t, 20*time.Second, func() bool {
		return len(p.retries("rabbitmq", redactedURL(amqpURL), "connection refused")) >= 1
	}, "a retry line for rabbitmq; log: %s", p.logPath)
	start := time.Now()
	p.stop()
	require.Less(t, time.Since(start), 10*time.Second, "shutdown while connecting took %s", time.Since(start))
	p.requireNoPanic()
}

// serveProc is a `tasklane serve` child process that may not be ready.
type serveProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the process has exited
	waitErr error         // its exit status, once exited is closed
}

// TestServeWaitsThroughAuthFailure starts `tasklane serve` with a wrong
// RabbitMQ password: it stays up and not ready, says authentication
// failed, and never logs the password.
func TestServeWaitsThroughAuthFailure(t *testing.T) {
	amqpReal, err := url.Parse(testkit.AMQPURL())
	require.NoError(t, err)
	amqpURL := *amqpReal
	amqpURL.User = url.UserPassword(amqpReal.User.Username(), "wrong-password-4217")
	e := newStackAt(t, config.BrokerDriverAMQP, stackAt{AppAMQP: amqpURL.String()}, startupFunctions)

	p := e.launch()
	base := p.listenURL()
	testkit.Eventually(t, 20*time.Second, func() bool {
		return len(p.retries("rabbitmq", redactedURL(amqpURL), "authentication failed")) >= 2
	}, "two retry lines for rabbitmq naming the authentication failure; log: %s", p.logPath)
	status, checks := readyz(t, base)
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Contains(t, checks["broker"], "authentication failed", "readyz: %v", checks)
	requireStatus(t, base+"/healthz", http.StatusOK)
	p.requireNoSecret(&amqpURL)
	p.stop()
	p.requireNoPanic()
}

// launch starts `tasklane serve` with every role in a child process and
// returns at once, without waiting for it to become ready.
func (e *env) launch() *serveProc {
	t := e.t
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "tasklane.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(e.doc), 0o600))
	p := &serveProc{t: t, logPath: filepath.Join(dir, "tasklane.log"), exited: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	require.NoError(t, err)
	defer logf.Close()
	p.cmd = exec.Command(tasklaneBinary(t), serveArgs(len(e.cfg.Tenants) == 0, "--config", cfgPath, "--log-format", "json")...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, p.cmd.Start())
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("last lines of %s:\n%s", p.logPath, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return p
}

// logLines reads the process's JSON log lines; lines that are not JSON
// (a panic's stack) come back as {"raw": line}.
func (p *serveProc) logLines() []map[string]any {
	f, err := os.Open(p.logPath)
	require.NoError(p.t, err)
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			m = map[string]any{"raw": sc.Text()}
		}
		out = append(out, m)
	}
	return out
}

// listenURL waits for the "listening" line and returns the server's URL; it
// fails at once if the process exits first.
func (p *serveProc) listenURL() string {
	p.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		for _, l := range p.logLines() {
			if l["msg"] == "listening" {
				addr, _ := l["addr"].(string)
				host, port, err := net.SplitHostPort(addr)
				require.NoError(p.t, err, "listening line %v", l)
				if host == "" || host == "::" || host == "0.0.0.0" {
					host = "127.0.0.1"
				}
				return "http://" + net.JoinHostPort(host, port)
			}
		}
		select {
		case <-p.exited:
			b, _ := os.ReadFile(p.logPath)
			p.t.Fatalf("tasklane serve exited before listening (%v):\n%s", p.waitErr, b)
		case <-deadline:
			p.t.Fatalf("no \"listening\" line within 30s; log: %s", p.logPath)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// retries returns the retry lines for service at url whose cause contains
// cause. It fails the test if one retry is logged twice (two lines with the
// same check and attempt).
func (p *serveProc) retries(service, url, cause string) []map[string]any {
	var out []map[string]any
	seen := map[string]bool{}
	for _, l := range p.logLines() {
		c, _ := l["cause"].(string)
		if l["service"] == service && l["url"] == url && strings.Contains(c, cause) {
			key := fmt.Sprint(l["check"], "/", l["attempt"])
			require.False(p.t, seen[key], "retry %s of %s logged twice", key, service)
			seen[key] = true
			out = append(out, l)
		}
	}
	return out
}

// requireNoSecret checks that u's password appears nowhere in the log.
func (p *serveProc) requireNoSecret(u *url.URL) {
	p.t.Helper()
	pw, ok := u.User.Password()
	if !ok {
		return
	}
	b, err := os.ReadFile(p.logPath)
	require.NoError(p.t, err)
	require.NotContains(p.t, string(b), ":"+pw+"@", "the broker password is in the log")
}

// stop sends SIGTERM and requires a clean exit (status 0) within 30s.
func (p *serveProc) stop() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.exited:
		require.NoError(p.t, p.waitErr, "exit status after SIGTERM")
	case <-time.After(30 * time.Second):
		p.t.Fatal("no exit within 30s of SIGTERM")
	}
}

func (p *serveProc) requireNoPanic() {
	p.t.Helper()
	b, err := os.ReadFile(p.logPath)
	require.NoError(p.t, err)
	require.NotContains(p.t, string(b), "panic")
	require.NotContains(p.t, string(b), "goroutine ")
}

// redactedURL is u as the logs show it: the password replaced by "xxxxx".
func redactedURL(u url.URL) string { return u.Redacted() }

// reservePort returns a 127.0.0.1 address where nothing listens (for now).
func reservePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// forward listens on addr and copies every connection to and from target,
// until the test ends.
func forward(t *testing.T, addr, target string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			track(c)
			track(up)
			wg.Go(func() { _, _ = io.Copy(up, c); _ = up.Close() })
			wg.Go(func() { _, _ = io.Copy(c, up); _ = c.Close() })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

func requireStatus(t *testing.T, u string, want int) {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, want, resp.StatusCode, "GET %s: %s", u, b)
}

func readyz(t *testing.T, base string) (int, map[string]string) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	var checks map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&checks))
	return resp.StatusCode, checks
}

// submit posts one structured event and returns its task's id.
func submit(t *testing.T, base string) string {
	t.Helper()
	body := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"startup-test","type":"com.example.startup","data":{"n":1}}`,
		testkit.UniqueName("ev"))
	resp, err := http.Post(base+"/v1/events", "application/cloudevents+json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", b)
	var sr contracts.SubmitResponse
	require.NoError(t, json.Unmarshal(b, &sr))
	require.Len(t, sr.Tasks, 1)
	return sr.Tasks[0].ID
}

func getTask(t *testing.T, base, id string) contracts.Task {
	t.Helper()
	resp, err := http.Get(base + "/v1/tasks/" + id)
	require.NoError(t, err)
	defer resp.Body.Close()
	var task contracts.Task
	if err := json.NewDecoder(resp.Body).Decode(&task); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("decoding task %s: %v", id, err)
	}
	return task
}
