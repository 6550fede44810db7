package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/pkg/groupcommit"
)

// Group commit. The dispatcher runs hundreds of consumers and the gateway
// serves many requests at once; each claim, finish and single-event create
// is one script call, and goes out through a groupcommit.Batcher: calls
// that arrive while earlier ones are on the wire share the next pipeline.
// Each call is still its own atomic script, so nothing about what the
// ledger promises changes.
//
// Every ledger script call, batched or not, goes out through exec: marked
// so that go-redis never sends it twice, and sent again only when Redis
// answered NOSCRIPT.

// errBatchFull is the answer to a call when the batcher's queue is full.
var errBatchFull = fmt.Errorf("ledger overloaded: %w", groupcommit.ErrFull)

// scriptCall is one script call and, once sent, its reply (cmd).
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
}

func call(script *redis.Script, keys []string, args ...any) *scriptCall {
	return &scriptCall{script: script, keys: keys, args: args}
}

type batcher struct {
	rdb  redis.UniversalClient
	load func(context.Context) error // loads the scripts after NOSCRIPT
	q    *groupcommit.Batcher[*scriptCall]
	// replicas and waitTimeout are Config.WaitReplicas and WaitTimeout
	// (replicas.go); 0 replicas: no WAIT.
	replicas    int
	waitTimeout time.Duration
}

func newBatcher(rdb redis.UniversalClient, load func(context.Context) error, replicas int, waitTimeout time.Duration) *batcher {
	b := &batcher{rdb: rdb, load: load, replicas: replicas, waitTimeout: waitTimeout}
	b.q = groupcommit.New(groupcommit.Limits{}, func(c *scriptCall) int { return argBytes(c.args) }, func(calls []*scriptCall) {
		// The calls' own contexts may end while they are on the wire;
		// the pipeline runs under the client's timeouts instead.
		_ = b.exec(context.Background(), calls...)
	})
	return b
}

// eval runs script through the batcher and returns its reply. When ctx ends
// before the call was sent, the call is dropped and eval returns ctx's
// error; when it ends after, eval returns ctx's error at once and the call
// may have run (as when a reply is lost on the wire).
func (b *batcher) eval(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := call(script, keys, args...)
	switch err := b.q.Do(ctx, c); {
	case errors.Is(err, groupcommit.ErrFull):
		return failed(ctx, errBatchFull)
	case err != nil:
		return failed(ctx, err)
	}
	return c.cmd
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
	if b.replicas > 0 {
		b.pipelineWaiting(ctx, calls)
		return
	}
	b.send(ctx, calls)
}

// send sends calls in one pipeline through the client.
func (b *batcher) send(ctx context.Context, calls []*scriptCall) {
	if len(calls) == 0 {
		return
	}
	_, _ = b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		b.process(ctx, p, calls)
		return nil
	})
}

// process adds calls to p, each marked noRetry.
func (b *batcher) process(ctx context.Context, p redis.Pipeliner, calls []*scriptCall) {
	for _, c := range calls {
		c.cmd = evalSHA(ctx, c.script, c.keys, c.args)
		_ = p.Process(ctx, noRetry{c.cmd})
	}
}
