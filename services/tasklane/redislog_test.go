package tasklane

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
)

// jsonLines is the buffer's JSON log lines.
func jsonLines(t *testing.T, s *testkit.SyncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "not a JSON log line: %q", l)
		out = append(out, m)
	}
	return out
}

// The go-redis logger logs each kind of message once per window at WARN
// with component=redis, and the next line of that kind counts the ones
// left out.
func TestRedisLoggerOneLinePerKindPerWindow(t *testing.T) {
	t.Parallel()
	var buf testkit.SyncBuffer
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	l := newRedisLogger(slog.New(slog.NewJSONHandler(&buf, nil)), 10*time.Second, func() time.Time { return now })
	ctx := context.Background()
	dial := "redis: connection pool: failed to dial after %d attempts: %v"
	for range 50 {
		l.Printf(ctx, dial, 5, "dial tcp 127.0.0.1:1: connect: connection refused")
	}
	l.Printf(ctx, "pubsub: reconnecting to new endpoint %s (was %s)", "a", "b")
	now = now.Add(9 * time.Second)
	l.Printf(ctx, dial, 5, "still refused")
	now = now.Add(2 * time.Second)
	l.Printf(ctx, dial, 5, "refused again")

	got := jsonLines(t, &buf)
	require.Len(t, got, 3, "%v", got)
	for _, m := range got {
		require.Equal(t, "WARN", m["level"])
		require.Equal(t, "redis", m["component"])
	}
	require.Equal(t, "connection pool: failed to dial after 5 attempts: dial tcp 127.0.0.1:1: connect: connection refused", got[0]["msg"])
	require.NotContains(t, got[0], "repeated")
	require.Equal(t, "pubsub: reconnecting to new endpoint a (was b)", got[1]["msg"])
	require.Equal(t, "connection pool: failed to dial after 5 attempts: refused again", got[2]["msg"])
	require.EqualValues(t, 50, got[2]["repeated"], "49 in the first window and 1 in the second were left out")
}

// RouteRedisLogs takes go-redis's own lines (here: the pool failing to
// dial a closed port) off stderr and into Tasklane's logger.
func TestRouteRedisLogs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	var buf testkit.SyncBuffer
	RouteRedisLogs(slog.New(slog.NewJSONHandler(&buf, nil)))
	t.Cleanup(func() { RouteRedisLogs(slog.Default()) })
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialerRetries: 1, MaxRetries: -1})
	defer rdb.Close()
	require.Error(t, rdb.Ping(context.Background()).Err())

	got := jsonLines(t, &buf)
	require.NotEmpty(t, got, "go-redis's dial failure is logged through slog")
	require.Equal(t, "redis", got[0]["component"])
	require.Contains(t, got[0]["msg"], "failed to dial")
	require.Contains(t, got[0]["msg"], addr)
}
