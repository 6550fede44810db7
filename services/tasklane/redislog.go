package tasklane

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisLogWindow is how long a go-redis message, once logged, is only
// counted: the connection pool logs every failed dial of every connection
// it tries, dozens a second while Redis is away, and the operations that
// failed are logged by their callers anyway.
const RedisLogWindow = 10 * time.Second

// maxRedisLogKinds bounds the messages remembered (go-redis logs from a
// fixed set of format strings; this is a backstop).
const maxRedisLogKinds = 256

// RouteRedisLogs sends go-redis's own log lines (it writes them to stderr
// by default, in its own format) to logger, at WARN with component=redis:
// one line per kind of message per [RedisLogWindow], the next one saying
// how many were left out ("repeated"). go-redis has one logger per
// process, so this applies to every client.
func RouteRedisLogs(logger *slog.Logger) {
	redis.SetLogger(newRedisLogger(logger, RedisLogWindow, time.Now))
}

// redisLogger implements go-redis's internal.Logging.
type redisLogger struct {
	logger *slog.Logger
	window time.Duration
	now    func() time.Time

	mu   sync.Mutex
	seen map[string]*redisLogKind // by format string
}

type redisLogKind struct {
	at      time.Time // last logged
	dropped int       // since then
}

func newRedisLogger(logger *slog.Logger, window time.Duration, now func() time.Time) *redisLogger {
	return &redisLogger{logger: logger.With("component", "redis"), window: window, now: now, seen: map[string]*redisLogKind{}}
}

// Printf logs one go-redis message, or counts it when one of its kind was
// logged within the window.
func (l *redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if !l.logger.Enabled(ctx, slog.LevelWarn) {
		return
	}
	now := l.now()
	l.mu.Lock()
	k := l.seen[format]
	if k != nil && now.Sub(k.at) < l.window {
		k.dropped++
		l.mu.Unlock()
		return
	}
	dropped := 0
	if k != nil {
		dropped = k.dropped
	} else if len(l.seen) >= maxRedisLogKinds {
		clear(l.seen)
	}
	l.seen[format] = &redisLogKind{at: now}
	l.mu.Unlock()

	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	msg = strings.TrimPrefix(msg, "redis: ")
	if dropped > 0 {
		l.logger.WarnContext(ctx, msg, "repeated", dropped)
		return
	}
	l.logger.WarnContext(ctx, msg)
}
