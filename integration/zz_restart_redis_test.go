//go:build integration

package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
)

// The restart scenarios live in zz_ files: go test runs a package's tests in
// file-name order, and these take a service down, so they run after every
// other scenario. The RabbitMQ restart starts the machine's RabbitMQ again
// whatever happens; the Redis restart kills only a Redis of its own.

// TestIntegrationRedisRestart runs Tasklane's ledger on a Redis of the
// test's own (AOF, appendfsync always: every acknowledged write survives a
// process crash) and kills that Redis with SIGKILL mid-run, then starts it
// again on the same port and directory. On the amqp driver the lanes are on
// the machine's RabbitMQ; on the redisstream driver that Redis is the broker
// too (its lanes, their consumer groups and pending entries, and the
// results stream), so this is also the redisstream driver's broker restart
// (TestIntegrationRabbitMQRestart is the amqp driver's). While it is down
// the gateway answers 503 (refused batches are sent again with the same
// event ids), dispatchers cannot claim and the notifier cannot read the
// outbox; the app's clients reconnect once it is back. Pass: every
// 202-accepted task is in the ledger and ends succeeded with one result,
// nothing lost, stuck, unexpected or succeeded twice.
func TestIntegrationRedisRestart(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runRedisRestart(t, driver) })
	}
}

func runRedisRestart(t *testing.T, driver string) {
	rs := startRedisServer(t)
	c := newChecker(t, 20*time.Millisecond)
	e := newStackAt(t, driver, stackAt{AppRedis: rs.url()}, faultConfig(c))
	app := e.spawn(appRoles...)

	l := startLoad(t, c, app.url(), "redis", 50, 100*time.Millisecond, e.ledger())
	testkit.Eventually(t, 60*time.Second, func() bool { return c.finished() >= 2000 }, "2000 tasks done before the kill")

	faultStart := time.Now()
	rs.kill()
	time.Sleep(3 * time.Second) // hold the outage
	rs.start()
	faultEnd := time.Now()
	t.Logf("%s: Redis killed at %s, serving again after %.1fs", driver, faultStart.Format("15:04:05.000"), faultEnd.Sub(faultStart).Seconds())

	time.Sleep(5 * time.Second) // load after the fault, not synchronisation
	faultRun{t: t, e: e, c: c, app: app, load: l, faultEnd: faultEnd}.finish(90 * time.Second)
	app.stop()
}

// redisServer is a redis-server child process with AOF on, killable.
type redisServer struct {
	t       *testing.T
	port    int
	dir     string
	logPath string
	cmd     *exec.Cmd
	starts  int
}

// startRedisServer starts redis-server on a free port with a fresh data
// directory; it is killed when the test ends.
func startRedisServer(t *testing.T) *redisServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	dir := t.TempDir()
	rs := &redisServer{t: t, port: port, dir: dir, logPath: filepath.Join(dir, "redis.log")}
	rs.start()
	t.Cleanup(func() {
		if rs.running() {
			rs.kill()
		}
	})
	return rs
}

func (rs *redisServer) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", rs.port) }

func (rs *redisServer) running() bool { return rs.cmd != nil && rs.cmd.ProcessState == nil }

// start runs redis-server (same port, same directory: a restart loads the
// AOF) and waits until it answers PING.
func (rs *redisServer) start() {
	rs.t.Helper()
	logf, err := os.OpenFile(rs.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(rs.t, err)
	defer logf.Close()
	rs.starts++
	fmt.Fprintf(logf, "--- start %d\n", rs.starts)
	rs.cmd = exec.Command("redis-server", "--port", strconv.Itoa(rs.port), "--bind", "127.0.0.1",
		"--dir", rs.dir, "--appendonly", "yes", "--appendfsync", "always", "--save", "",
		"--daemonize", "no")
	rs.cmd.Stdout, rs.cmd.Stderr = logf, logf
	rs.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(rs.t, rs.cmd.Start())
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", rs.port), MaxRetries: -1})
	defer c.Close()
	testkit.Eventually(rs.t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// PING answers LOADING errors while the AOF loads.
		return c.Ping(ctx).Err() == nil
	}, "redis-server on port %d answers PING; log: %s", rs.port, rs.logPath)
}

// kill sends SIGKILL: no shutdown, no final fsync (appendfsync always
// already wrote every acknowledged command).
func (rs *redisServer) kill() {
	rs.t.Helper()
	require.NoError(rs.t, rs.cmd.Process.Signal(syscall.SIGKILL))
	_ = rs.cmd.Wait()
}
