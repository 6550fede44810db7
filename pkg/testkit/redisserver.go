package testkit

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a redis-server a test started on a free local port.
type RedisServer struct {
	// Addr is "127.0.0.1:<port>".
	Addr string
	cmd  *exec.Cmd
}

// StartRedis starts a redis-server (no persistence, its directory a
// temporary one) with args added to its command line (such as
// "--replicaof", host, port), and returns once it answers PING. It is
// killed when the test ends; StartRedis skips under -short.
func StartRedis(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	SkipShort(t, "starts redis-server processes")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("StartRedis: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	all := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()}, args...)
	s := &RedisServer{Addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: exec.Command("redis-server", all...)}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("StartRedis: %v", err)
	}
	t.Cleanup(s.Kill)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitPing(ctx, s.Addr); err != nil {
		t.Fatalf("StartRedis: redis-server on %s does not answer: %v", s.Addr, err)
	}
	return s
}

// Port is the server's port, as "--replicaof" takes it.
func (s *RedisServer) Port() string {
	_, port, _ := net.SplitHostPort(s.Addr)
	return port
}

// Kill stops the server with SIGKILL and waits for it to end.
func (s *RedisServer) Kill() {
	if s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// Client returns a client of the server, closed when the test ends.
func (s *RedisServer) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}
