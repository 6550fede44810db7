// Package testkit connects tests to the real RabbitMQ and Redis of the
// machine. A test that needs them and cannot reach them fails: it never
// skips, so a CI run without brokers is red, not silently green.
//
// Addresses come from TASKLANE_TEST_REDIS_URL and TASKLANE_TEST_AMQP_URL,
// defaulting to the local services.
package testkit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// RedisURL is the Redis the tests use.
func RedisURL() string {
	if u := os.Getenv("TASKLANE_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// AMQPURL is the RabbitMQ the tests use.
func AMQPURL() string {
	if u := os.Getenv("TASKLANE_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// Redis returns a client of the test Redis and a key prefix unique to this
// test. When the test ends (after the cleanups registered later, such as
// stopping what used the keys), every key under the prefix is deleted and
// the client closed.
func Redis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	opt, err := redis.ParseURL(RedisURL())
	if err != nil {
		t.Fatalf("parsing TASKLANE_TEST_REDIS_URL: %v", err)
	}
	c := redis.NewClient(opt)
	prefix := UniqueName("tltest")
	t.Cleanup(func() {
		DeleteKeys(c, prefix)
		_ = c.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s is not reachable (start it: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no): %v", RedisURL(), err)
	}
	return c, prefix
}

// DeleteKeys deletes every key under prefix ("<prefix>:*").
func DeleteKeys(rdb redis.UniversalClient, prefix string) {
	ctx := context.Background()
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+":*", 1000).Result()
		if err != nil {
			return
		}
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		if cursor = next; cursor == 0 {
			return
		}
	}
}

// RequireAMQP fails the test when RabbitMQ does not accept TCP connections.
func RequireAMQP(t testing.TB) string {
	t.Helper()
	u, err := url.Parse(AMQPURL())
	if err != nil {
		t.Fatalf("parsing TASKLANE_TEST_AMQP_URL: %v", err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatalf("RabbitMQ at %s is not reachable (start it: rabbitmq-server -detached): %v", u.Host, err)
	}
	_ = conn.Close()
	return AMQPURL()
}

// UniqueName returns prefix plus a unique, lower-case suffix.
func UniqueName(prefix string) string {
	return prefix + "-" + strings.ToLower(ulid.Make().String())
}

// Eventually polls cond every few milliseconds until it returns true or the
// deadline passes, then fails the test with msg.
func Eventually(t testing.TB, within time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, fmt.Sprintf(msg, args...))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// PurgeQueues deletes the named RabbitMQ queues if they exist, so a test
// starts from empty lanes (Tasklane declares them again).
func PurgeQueues(t testing.TB, queues ...string) {
	t.Helper()
	conn, err := amqp.Dial(RequireAMQP(t))
	if err != nil {
		t.Fatalf("connecting to RabbitMQ: %v", err)
	}
	defer conn.Close()
	for _, q := range queues {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatalf("opening channel: %v", err)
		}
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			t.Fatalf("deleting queue %s: %v", q, err)
		}
		_ = ch.Close()
	}
}

// QueueDepth reports how many ready messages queue holds, and whether it
// exists at all.
func QueueDepth(t testing.TB, queue string) (int, bool) {
	t.Helper()
	conn, err := amqp.Dial(RequireAMQP(t))
	if err != nil {
		t.Fatalf("connecting to RabbitMQ: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("opening channel: %v", err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.NotFound {
		return 0, false
	}
	if err != nil {
		t.Fatalf("reading queue %s: %v", queue, err)
	}
	return q.Messages, true
}

// Logger sends logs at level and above to the test log until the test
// ends. Its cleanup is registered first, so it runs after every cleanup
// registered later: goroutines that outlive a Close may still log, and
// logging to a finished test panics.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// CountWrites makes the clients built from opt count their writes in n:
// go-redis writes each command or pipeline once, so writes are round trips.
func CountWrites(opt *redis.Options, n *atomic.Int64) {
	opt.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, writes: n}, nil
	}
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}
