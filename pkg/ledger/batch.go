package ledger

import (
	"context"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Group commit. The dispatcher runs hundreds of consumers and the gateway
// serves many requests at once; each claim, finish and single-event create
// is one script call. Sent alone, every call costs a round trip, which on
// the machines measured is mostly system calls on both sides (a write and
// one or two reads in Tasklane, the same in Redis). The batcher sends the
// calls that arrive while earlier ones are on the wire together, in one
// pipeline: alone, a call goes out at once; under load, calls share round
// trips. Each call is still its own atomic script, so nothing about what
// the ledger promises changes.

const (
	// batchFlushers bounds the pipelines in flight at once.
	batchFlushers = 4
	// batchMax bounds the calls in one pipeline.
	batchMax = 256
)

type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	done   chan struct{}
}

type batcher struct {
	rdb  redis.UniversalClient
	load func(context.Context) error // loads the scripts after NOSCRIPT

	mu       sync.Mutex
	queue    []*scriptCall
	flushers int
}

// eval runs script through the batcher and returns its reply. When ctx ends
// first, eval returns ctx's error; the call may still run (as when a reply
// is lost on the wire).
func (b *batcher) eval(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &scriptCall{script: script, keys: keys, args: args, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if b.flushers < batchFlushers {
		b.flushers++
		go b.flush()
	}
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.cmd
	case <-ctx.Done():
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(ctx.Err())
		return cmd
	}
}

// flush sends queued calls until the queue is empty.
func (b *batcher) flush() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), batchMax)
		if n == 0 {
			b.flushers--
			b.mu.Unlock()
			return
		}
		calls := make([]*scriptCall, n)
		copy(calls, b.queue)
		b.queue = b.queue[n:]
		if len(b.queue) == 0 {
			b.queue = nil // let the backing array go
		}
		b.mu.Unlock()
		b.send(calls)
	}
}

func (b *batcher) send(calls []*scriptCall) {
	// The calls' own contexts may end while they wait; the pipeline runs
	// under the client's timeouts instead, as one write.
	ctx := context.Background()
	_, _ = b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range calls {
			c.cmd = c.script.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	// A call answered NOSCRIPT did not run: Redis lost its script cache
	// (a restart, SCRIPT FLUSH). Load the scripts and send those again.
	var again []*scriptCall
	for _, c := range calls {
		if err := c.cmd.Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			again = append(again, c)
		}
	}
	if len(again) > 0 && b.load(ctx) == nil {
		_, _ = b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range again {
				c.cmd = c.script.EvalSha(ctx, p, c.keys, c.args...)
			}
			return nil
		})
	}
	for _, c := range calls {
		close(c.done)
	}
}
