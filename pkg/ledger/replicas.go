package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Waiting for replicas (redis.wait_replicas, decision 0017's failover row).
// Redis replicates asynchronously: a master that dies right after it
// answered a create may take the create with it, and the 202 the gateway
// gave for it is then a lie. With Config.WaitReplicas N > 0 every create
// script goes to the master that owns its keys, on that master's own
// connection, and the pipeline ends with WAIT N timeout: WAIT counts the
// replicas that acknowledged every write made so far on the connection it
// runs on, so one WAIT per master per pipeline covers every create of the
// batch (a WAIT on another connection would return at once). A create
// answers only once WAIT reported N replicas; fewer within the timeout
// fails the create with ErrNotReplicated.
//
// Only creates wait. Claims, finishes, retries and the rest go out as
// before: losing one in a failover re-runs an attempt or re-delivers a
// message (the platform is at-least-once), and the create's lane message
// finds its record. The one write whose loss breaks a promise is the
// acceptance itself.

// WaitTimeoutDefault bounds a WAIT when Config.WaitTimeout is 0: long
// enough for a replica a network round trip away under load, short enough
// that a client whose create could not be confirmed hears so well within
// its own request timeout. It must stay below the Redis client's read
// timeout (go-redis's default 3 s), which bounds the pipeline that carries
// the WAIT.
const WaitTimeoutDefault = time.Second

// ErrNotReplicated is the error of a create whose writes did not reach
// Config.WaitReplicas replicas within the WAIT timeout. The tasks are
// recorded on the master (with their publish guards, so they run unless
// the master is lost before replicating them): the caller must not report
// them accepted; a client that retries with the same event ids gets the
// same tasks from dedup.
var ErrNotReplicated = errors.New("the ledger's writes did not reach redis.wait_replicas replicas in time")

// waits reports whether c must be confirmed by WAIT: a create, while
// waiting is on.
func (b *batcher) waits(c *scriptCall) bool {
	return b.replicas > 0 && c.script == createScript
}

// pipelineWaiting is pipeline when waiting is on: the creates among calls
// go to their masters (one pipeline per master, in parallel, each ending
// with WAIT), the other calls in one pipeline through the client as ever.
func (b *batcher) pipelineWaiting(ctx context.Context, calls []*scriptCall) {
	var creates, rest []*scriptCall
	for _, c := range calls {
		if b.waits(c) {
			creates = append(creates, c)
		} else {
			rest = append(rest, c)
		}
	}
	if len(creates) == 0 {
		b.send(ctx, rest)
		return
	}
	groups, err := b.byMaster(ctx, creates)
	if err != nil {
		for _, c := range creates {
			c.cmd = failed(ctx, err)
		}
	}
	var wg sync.WaitGroup
	for node, group := range groups {
		wg.Go(func() { b.sendWaiting(ctx, node, group) })
	}
	b.send(ctx, rest)
	wg.Wait()
}

// byMaster groups calls by the client of the master that owns their keys
// (a create's keys are all in one slot: its tenant's).
func (b *batcher) byMaster(ctx context.Context, calls []*scriptCall) (map[*redis.Client][]*scriptCall, error) {
	switch rdb := b.rdb.(type) {
	case *redis.Client:
		return map[*redis.Client][]*scriptCall{rdb: calls}, nil
	case *redis.ClusterClient:
		groups := make(map[*redis.Client][]*scriptCall)
		for _, c := range calls {
			node, err := rdb.MasterForKey(ctx, c.keys[0])
			if err != nil {
				return nil, fmt.Errorf("finding the master of %s: %w", c.keys[0], err)
			}
			groups[node] = append(groups[node], c)
		}
		return groups, nil
	default:
		return nil, fmt.Errorf("redis.wait_replicas needs a Redis or Redis Cluster client, not %T", b.rdb)
	}
}

// sendWaiting sends calls and WAIT in one pipeline on node: a pipeline of
// a node's client runs on one connection (the calls are noRetry, so it is
// never re-sent on another). When WAIT does not confirm b.replicas
// replicas, each call that succeeded gets ErrNotReplicated instead; a call
// that failed keeps its error (NOSCRIPT among them: exec sends it again).
func (b *batcher) sendWaiting(ctx context.Context, node *redis.Client, calls []*scriptCall) {
	var wait *redis.IntCmd
	_, _ = node.Pipelined(ctx, func(p redis.Pipeliner) error {
		b.process(ctx, p, calls)
		// Pipeliner has no Wait: the command as cmdable.Wait builds it.
		wait = redis.NewIntCmd(ctx, "wait", b.replicas, b.waitTimeout.Milliseconds())
		_ = p.Process(ctx, wait)
		return nil
	})
	n, err := wait.Result()
	if err != nil || movedAway(calls) {
		if cc, ok := b.rdb.(*redis.ClusterClient); ok {
			// The node may no longer be the master (a failover, a slot
			// moved; a node client does not follow MOVED): the cluster
			// client learns the new map before the client retries.
			cc.ReloadState(ctx)
		}
	}
	switch {
	case err == nil && n >= int64(b.replicas):
		return
	case err == nil:
		err = fmt.Errorf("%w: WAIT %d %d on %s answered %d", ErrNotReplicated, b.replicas, b.waitTimeout.Milliseconds(), node.Options().Addr, n)
	default:
		err = fmt.Errorf("%w: WAIT on %s: %w", ErrNotReplicated, node.Options().Addr, err)
	}
	for _, c := range calls {
		if e := c.cmd.Err(); e == nil || errors.Is(e, redis.Nil) {
			c.cmd.SetErr(err)
		}
	}
}

// movedAway reports whether a call was answered MOVED or ASK: its slot is
// served by another node now.
func movedAway(calls []*scriptCall) bool {
	for _, c := range calls {
		if err := c.cmd.Err(); redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK") {
			return true
		}
	}
	return false
}
