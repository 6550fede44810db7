package ledger

import (
	"context"
	"errors"
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
//
// Every ledger script call, batched or not, goes out through exec: marked
// so that go-redis never sends it twice, and sent again only when Redis
// answered NOSCRIPT.

const (
	// batchFlushers bounds the pipelines in flight at once.
	batchFlushers = 4
	// batchMax and batchBytes bound one pipeline: in calls, and in the
	// bytes of their string arguments (task messages can be large).
	batchMax   = 256
	batchBytes = 1 << 20
	// batchQueue bounds the calls waiting; past it a call fails at once
	// (Redis has fallen far behind).
	batchQueue = 16384
)

// errBatchFull is the answer to a call when batchQueue calls are waiting.
var errBatchFull = errors.New("ledger overloaded: too many calls waiting for Redis")

// scriptCall is one script call and, once sent, its reply (cmd). ctx, size
// and done serve the batcher.
type scriptCall struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	size   int
	cmd    *redis.Cmd
	done   chan struct{}
}

func call(script *redis.Script, keys []string, args ...any) *scriptCall {
	return &scriptCall{script: script, keys: keys, args: args}
}

type batcher struct {
	rdb  redis.UniversalClient
	load func(context.Context) error // loads the scripts after NOSCRIPT

	mu       sync.Mutex
	queue    []*scriptCall
	flushers int
}

// eval runs script through the batcher and returns its reply. When ctx ends
// before the call was sent, the call is dropped and eval returns ctx's
// error; when it ends after, eval returns ctx's error at once and the call
// may have run (as when a reply is lost on the wire).
func (b *batcher) eval(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	if err := ctx.Err(); err != nil {
		return failed(ctx, err)
	}
	c := call(script, keys, args...)
	c.ctx, c.size, c.done = ctx, argBytes(args), make(chan struct{})
	b.mu.Lock()
	if len(b.queue) >= batchQueue {
		b.mu.Unlock()
		return failed(ctx, errBatchFull)
	}
	b.queue = append(b.queue, c)
	start := b.flushers < batchFlushers
	if start {
		b.flushers++
	}
	b.mu.Unlock()
	switch {
	case start && ctx.Done() == nil:
		// A caller that cannot give up (the dispatcher's detached
		// contexts) sends what is queued, this call among it, itself:
		// a lone call is spared a hand-over. Whatever queued meanwhile
		// goes to a flusher of its own.
		if b.flushOnce() {
			go b.flush()
		}
	case start:
		// One that can give up waits for a flusher, so that it can
		// return when its context ends even while Redis stalls.
		go b.flush()
	}
	select {
	case <-c.done:
		return c.cmd
	case <-ctx.Done():
		select {
		case <-c.done: // both ready: the answer wins
			return c.cmd
		default:
			return failed(ctx, ctx.Err())
		}
	}
}

func failed(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}

func argBytes(args []any) int {
	n := 0
	for _, a := range args {
		switch v := a.(type) {
		case string:
			n += len(v)
		case []byte:
			n += len(v)
		default:
			n += 8
		}
	}
	return n
}

// flush sends queued calls until the queue is empty.
func (b *batcher) flush() {
	for b.flushOnce() {
	}
}

// flushOnce sends up to one pipeline of queued calls. It reports whether
// more are queued; when none are, it has given up its flusher slot.
func (b *batcher) flushOnce() bool {
	b.mu.Lock()
	n, size := 0, 0
	for n < len(b.queue) && n < batchMax && (n == 0 || size+b.queue[n].size <= batchBytes) {
		size += b.queue[n].size
		n++
	}
	calls := make([]*scriptCall, n)
	copy(calls, b.queue)
	clear(b.queue[:n])
	b.queue = b.queue[n:]
	if len(b.queue) == 0 {
		b.queue = nil // let the backing array go
	}
	b.mu.Unlock()
	b.send(calls)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.flushers--
		return false
	}
	return true
}

// noRetry marks a command that go-redis must not send again: a script
// whose reply was lost may have run, and running it twice is not the same
// as running it once (a second claim finds the task busy with itself). A
// pipeline holding one is never retried; the caller gets the error and
// treats the outcome as unknown, as it does for any lost reply.
type noRetry struct{ *redis.Cmd }

func (noRetry) NoRetry() bool { return true }

// evalSHA is the EVALSHA command of script with keys and args.
func evalSHA(ctx context.Context, script *redis.Script, keys []string, args []any) *redis.Cmd {
	all := make([]any, 0, 3+len(keys)+len(args))
	all = append(all, "evalsha", script.Hash(), len(keys))
	for _, k := range keys {
		all = append(all, k)
	}
	return redis.NewCmd(ctx, append(all, args...)...)
}

// run runs one script outside the batcher.
func (l *Ledger) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := call(script, keys, args...)
	_ = l.batch.exec(ctx, c)
	return c.cmd
}

func (b *batcher) send(calls []*scriptCall) {
	// A call whose caller gave up before it went out is not sent.
	live := calls[:0:0]
	for _, c := range calls {
		if err := c.ctx.Err(); err != nil {
			c.cmd = failed(c.ctx, err)
			continue
		}
		live = append(live, c)
	}
	// The calls' own contexts may end while they are on the wire; the
	// pipeline runs under the client's timeouts instead.
	_ = b.exec(context.Background(), live...)
	for _, c := range calls {
		close(c.done)
	}
}

// exec sends calls in one pipeline now, sets each one's reply and returns
// the first error other than redis.Nil (a script answering nil). Every call
// is marked noRetry. A call answered NOSCRIPT did not run (Redis lost its
// script cache: a restart, SCRIPT FLUSH): exec loads the scripts and sends
// those calls again, and only those.
func (b *batcher) exec(ctx context.Context, calls ...*scriptCall) error {
	b.pipeline(ctx, calls)
	var again []*scriptCall
	for _, c := range calls {
		if redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			again = append(again, c)
		}
	}
	if len(again) > 0 {
		if err := b.load(ctx); err != nil {
			return err
		}
		b.pipeline(ctx, again)
	}
	for _, c := range calls {
		if err := c.cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

func (b *batcher) pipeline(ctx context.Context, calls []*scriptCall) {
	if len(calls) == 0 {
		return
	}
	_, _ = b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range calls {
			c.cmd = evalSHA(ctx, c.script, c.keys, c.args)
			_ = p.Process(ctx, noRetry{c.cmd})
		}
		return nil
	})
}
