// Package testkit connects tests to the real RabbitMQ and Redis of the
// machine. A test that needs them and cannot reach them fails: it never
// skips, so a CI run without brokers is red, not silently green.
//
// Addresses come from TASKLANE_TEST_REDIS_URL and TASKLANE_TEST_AMQP_URL,
// defaulting to the local services.
//
// Short mode (go test -short, `make test/short`) needs no services: Redis is
// an embedded Redis-compatible server (miniredis) started once per test
// binary, and a test that needs RabbitMQ, or something of the real Redis the
// embedded one lacks, skips saying why. TASKLANE_TEST_REDIS=embedded selects
// the embedded Redis without -short. Only short mode skips: a full run never
// does.
package testkit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/oklog/ulid/v2"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// EmbeddedRedisEnv names the environment variable that, set to
// "embedded", makes the tests use the embedded Redis without -short.
const EmbeddedRedisEnv = "TASKLANE_TEST_REDIS"

// EmbeddedRedis reports whether the tests use the embedded Redis: under
// -short, or when TASKLANE_TEST_REDIS=embedded.
func EmbeddedRedis() bool {
	return testing.Short() || os.Getenv(EmbeddedRedisEnv) == "embedded"
}

// LedgerPartitionsEnv names the environment variable that, set to a
// number P, makes the tests' ledgers (those built with LedgerPartitions)
// use the partitioned key layout with P partitions instead of the legacy
// one: TASKLANE_TEST_PARTITIONS=4 go test ./... runs the suite on it.
const LedgerPartitionsEnv = "TASKLANE_TEST_PARTITIONS"

// LedgerPartitions is the ledger.Config.Partitions the tests use: 0 (the
// legacy layout) unless TASKLANE_TEST_PARTITIONS says otherwise, and 0
// with the embedded Redis (RequirePartitionedRedis).
func LedgerPartitions() int {
	if EmbeddedRedis() {
		return 0
	}
	n, _ := strconv.Atoi(os.Getenv(LedgerPartitionsEnv))
	return max(n, 0)
}

// RequirePartitionedRedis skips a test of a ledger with partitions (> 0)
// on the embedded Redis: the partitioned layout's scripts start with
// "#!lua" (so that a Redis Cluster refuses an undeclared key of another
// slot), which the embedded Redis cannot compile.
func RequirePartitionedRedis(t testing.TB, partitions int) {
	t.Helper()
	if partitions > 0 {
		RequireRealRedis(t, "the partitioned layout's scripts start with #!lua, which it cannot compile")
	}
}

// embeddedTimeout bounds a command's round trip to the embedded Redis.
const embeddedTimeout = 30 * time.Second

var embedded struct {
	once sync.Once
	url  string
	err  error
}

// embeddedRedisURL starts the embedded Redis on first use and returns its
// URL. One server serves the whole test binary (tests keep apart by their
// key prefixes) and lives until the process ends. Its TTLs follow the wall
// clock, as Redis's do, moved by moveTTLs: a key expires at most
// embeddedTick late while the server holds few keys.
//
// Not miniredis's ClockTTL: it moves the TTLs on every command (each
// redis.call of a Lua script too) by walking and sorting every key of the
// server, so a test with a thousand tasks spent minutes sorting keys.
func embeddedRedisURL() (string, error) {
	embedded.once.Do(func() {
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			embedded.err = fmt.Errorf("starting the embedded Redis: %w", err)
			return
		}
		go moveTTLs(mr)
		embedded.url = "redis://" + mr.Addr() + "/0"
	})
	return embedded.url, embedded.err
}

// embeddedTick is how often the embedded Redis's TTLs move on, at most.
const embeddedTick = 20 * time.Millisecond

// embeddedTickShare bounds the share of the time the TTL walk holds the
// embedded Redis: the next walk waits at least this many times as long as
// the last one took.
const embeddedTickShare = 20

// embeddedTickMax bounds the spacing of the walks (a walk preempted on a
// busy machine takes long on the wall clock without holding much CPU).
const embeddedTickMax = 250 * time.Millisecond

// moveTTLs moves the embedded Redis's TTLs with the wall clock, every
// embeddedTick while the server holds few keys. FastForward walks and sorts
// every key under the server's lock, and a package whose parallel tests
// hold tens of thousands of keys spent a third of its CPU time there,
// every command waiting behind it: the walks are spaced so that they hold
// the lock at most 1/embeddedTickShare of the time (keys then expire later,
// by as long as the spacing, at most embeddedTickMax).
func moveTTLs(mr *miniredis.Miniredis) {
	last := time.Now()
	for {
		now := time.Now()
		mr.FastForward(now.Sub(last))
		last = now
		time.Sleep(min(max(embeddedTick, embeddedTickShare*time.Since(now)), embeddedTickMax))
	}
}

// RedisURL is the Redis the tests use: the embedded one when EmbeddedRedis,
// else TASKLANE_TEST_REDIS_URL or the local Redis.
func RedisURL() string {
	if EmbeddedRedis() {
		u, err := embeddedRedisURL()
		if err != nil {
			panic(err) // a listener on 127.0.0.1 that cannot open: nothing to test with
		}
		return u
	}
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
	if EmbeddedRedis() {
		// The embedded server runs Lua in Go (gopher-lua) under one lock:
		// a burst of script calls, slower still under -race on a busy
		// machine, can outlast go-redis's 3s default.
		opt.ReadTimeout, opt.WriteTimeout = embeddedTimeout, embeddedTimeout
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
		if EmbeddedRedis() {
			t.Fatalf("the embedded Redis at %s does not answer: %v", RedisURL(), err)
		}
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

// SkipShort skips the test under -short, naming why it needs a full run
// (RabbitMQ, a Redis feature the embedded one lacks, a restart, timing).
// Without -short it does nothing: a full run never skips.
func SkipShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("skipped under -short: %s (make test runs it)", why)
	}
}

// NeedsStreamLag is the reason a test that reads a consumer group's lag
// (XINFO GROUPS) gives RequireRealRedis: the embedded Redis reports the
// stream's length as the lag, read or not.
const NeedsStreamLag = "reads XINFO GROUPS lag, which the embedded Redis reports as the stream's length"

// RequireRealRedis skips the test when the tests use the embedded Redis
// (-short or TASKLANE_TEST_REDIS=embedded), naming what of the real Redis
// it needs; otherwise it does nothing.
func RequireRealRedis(t testing.TB, why string) {
	t.Helper()
	if EmbeddedRedis() {
		t.Skipf("skipped with the embedded Redis: %s (make test runs it)", why)
	}
}

// RequireAMQP fails the test when RabbitMQ does not accept TCP connections.
// Under -short it skips the test instead: short mode runs without services.
func RequireAMQP(t testing.TB) string {
	t.Helper()
	SkipShort(t, "needs RabbitMQ")
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

// DeleteExchanges deletes the named RabbitMQ exchanges if they exist (a
// test's results exchange under its own broker prefix).
func DeleteExchanges(t testing.TB, exchanges ...string) {
	t.Helper()
	conn, err := amqp.Dial(RequireAMQP(t))
	if err != nil {
		t.Fatalf("connecting to RabbitMQ: %v", err)
	}
	defer conn.Close()
	for _, x := range exchanges {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatalf("opening channel: %v", err)
		}
		// Deleting an exchange that does not exist is not an error.
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			t.Fatalf("deleting exchange %s: %v", x, err)
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

// SyncBuffer collects output (logs, a child process's stdout) written by
// other goroutines while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// WriteString appends v.
func (s *SyncBuffer) WriteString(v string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.WriteString(v)
}

// String is everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
