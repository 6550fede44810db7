package sdk

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// LogLine is a line a handler wrote to its task's log.
type LogLine struct {
	At   time.Time
	Text string
}

// MaxLogLines bounds the lines one attempt keeps; later ones are counted
// and summed up in a last line.
const MaxLogLines = 255

// Lines collects the lines of one attempt. The executor installs one in
// each Go handler's context (CaptureLogs); tests of handlers can too.
type Lines struct {
	mu      sync.Mutex
	lines   []LogLine
	dropped int
}

// Lines returns the lines written so far, and a last line counting those
// dropped past MaxLogLines.
func (c *Lines) Lines() []LogLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := append([]LogLine(nil), c.lines...)
	if c.dropped > 0 {
		out = append(out, LogLine{At: time.Now(), Text: fmt.Sprintf("[%d more lines dropped: at most %d per attempt]", c.dropped, MaxLogLines)})
	}
	return out
}

func (c *Lines) add(text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lines) >= MaxLogLines {
		c.dropped++
		return
	}
	c.lines = append(c.lines, LogLine{At: time.Now(), Text: text})
}

// Write adds one line per call (slog handlers write one record per call);
// a trailing newline is dropped.
func (c *Lines) Write(p []byte) (int, error) {
	c.add(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

type linesKey struct{}

// CaptureLogs returns ctx carrying a fresh Lines that Logger and Logf in
// ctx write to.
func CaptureLogs(ctx context.Context) (context.Context, *Lines) {
	c := &Lines{}
	return context.WithValue(ctx, linesKey{}, c), c
}

// Logger returns a logger whose records become lines of the task's log
// (text form: level, message, attributes). Outside a task's context it
// discards.
func Logger(ctx context.Context) *slog.Logger {
	c, ok := ctx.Value(linesKey{}).(*Lines)
	if !ok {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(c, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{} // the log entry has its own time
			}
			return a
		},
	}))
}

// Logf writes one formatted line to the task's log. Outside a task's
// context it does nothing.
func Logf(ctx context.Context, format string, args ...any) {
	if c, ok := ctx.Value(linesKey{}).(*Lines); ok {
		c.add(fmt.Sprintf(format, args...))
	}
}
