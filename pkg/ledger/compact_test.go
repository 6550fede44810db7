package ledger_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// tracedEvent is an event with every optional record field set.
func tracedEvent(id string) ledger.EventTasks {
	ev := event("acme", id, "f1")
	ev.Event.Subject = "s"
	ev.Batch = "b1"
	ev.Parent = "parent-task"
	ev.Tasks[0].TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	ev.Tasks[0].Message = []byte(`{"a big stored lane message":"` + string(make([]byte, 512)) + `"}`)
	return ev
}

// The record fields a finished task keeps: what RecordFromFields reads, the
// trace parent and the log's dropped-entry count (a long log's).
var compactFields = []string{
	"id", "tenant", "function", "ev_id", "ev_source", "ev_type", "ev_subject", "parent", "state", "attempts",
	"priority", "batch", "created", "scheduled", "started", "finished", "wait_ms", "run_ms", "error", "result",
	"reason", "redrives", "tp", "log_dropped",
}

// A task that ends (here: succeeds) keeps a compact record: no stored
// message, no lease or expiry fields; the record read back and the result
// outbox entry are the same as before, the entry carrying only record
// fields.
func TestFinishedRecordIsCompact(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ev := tracedEvent("e1")
	exp := b.now.Add(time.Hour)
	ev.ExpiresAt = &exp
	c, err := b.l.Create(ctx, []ledger.EventTasks{ev})
	require.NoError(t, err)
	id := c[0].Tasks[0].ID
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: time.Minute})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictRun, cl.Verdict)
	b.advance(5 * time.Millisecond)
	ok, err := b.l.Finish(ctx, "acme", id, "f1", ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateSucceeded, Result: []byte(`{"ok":true}`)})
	require.NoError(t, err)
	require.True(t, ok)

	rdb := b.l.Redis()
	h, err := rdb.HGetAll(ctx, b.l.TaskKey("acme", id)).Result()
	require.NoError(t, err)
	for f := range h {
		require.Contains(t, compactFields, f, "a finished record keeps only record fields")
	}
	require.Equal(t, ev.Tasks[0].TraceParent, h[ledger.FieldTraceParent])
	require.Equal(t, "parent-task", h["parent"])
	require.NotContains(t, h, "log_dropped", "a short log needs no accounting")
	_, err = b.l.Message(ctx, "acme", id)
	require.ErrorIs(t, err, ledger.ErrNotFound, "the stored message is dropped")
	ttl, err := rdb.PTTL(ctx, b.l.TaskKey("acme", id)).Result()
	require.NoError(t, err)
	require.Positive(t, ttl, "the compact record keeps its retention")

	task, err := b.l.Get(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateSucceeded, task.State)
	require.Equal(t, "s", task.Event.Subject)
	require.Equal(t, "b1", task.Batch)
	require.Equal(t, "parent-task", task.Parent)
	require.Equal(t, 1, task.Attempts)
	require.EqualValues(t, 5, *task.RunMS)
	require.JSONEq(t, `{"ok":true}`, string(task.Result))

	entries, err := rdb.XRange(ctx, b.l.OutboxStream("acme"), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, entries, 1)
	for f := range entries[0].Values {
		require.Contains(t, compactFields, f)
		require.NotEqual(t, "log_dropped", f, "the outbox entry is the record")
	}
	require.Equal(t, *task, ledger.RecordFromValues(entries[0].Values), "the result event's record is the stored one")
	require.Equal(t, ev.Tasks[0].TraceParent, entries[0].Values[ledger.FieldTraceParent])
}

// Cancelled and expired tasks are compact too; a dead one keeps its stored
// message (a redrive publishes it), and is compact once it ends again.
func TestDeadTaskKeepsItsMessageUntilItEndsAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e-cancel", "f1")})
	require.NoError(t, err)
	cancelled := c[0].Tasks[0].ID
	_, err = b.l.Cancel(ctx, "acme", cancelled)
	require.NoError(t, err)
	_, err = b.l.Message(ctx, "acme", cancelled)
	require.ErrorIs(t, err, ledger.ErrNotFound, "a cancelled task drops its message")

	dead := deadTask(t, b, "e-dead", "f1", contracts.ReasonNonRetryable)
	msg, err := b.l.Message(ctx, "acme", dead)
	require.NoError(t, err)
	require.Equal(t, "m-f1", string(msg), "a dead task keeps what a redrive needs")
	h, err := b.l.Redis().HGetAll(ctx, b.l.TaskKey("acme", dead)).Result()
	require.NoError(t, err)
	require.NotContains(t, h, "lease")
	require.NotContains(t, h, "owner")

	require.NoError(t, b.l.Redrive(ctx, "acme", dead))
	due, err := b.l.TakeDue(ctx, 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, due, 1)
	require.Equal(t, "m-f1", string(due[0].Message), "the redriven task is published with its message")
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: dead, Function: "f1", Owner: "d2", Lease: time.Minute})
	require.NoError(t, err)
	ok, err := b.l.Finish(ctx, "acme", dead, "f1", cl.Fence(), ledger.Outcome{State: contracts.StateSucceeded})
	require.NoError(t, err)
	require.True(t, ok)
	_, err = b.l.Message(ctx, "acme", dead)
	require.ErrorIs(t, err, ledger.ErrNotFound)
	task, err := b.l.Get(ctx, "acme", dead)
	require.NoError(t, err)
	require.Equal(t, 1, task.Redrives)
}

// A record written by the previous release (whole hash kept, extra fields)
// still ends normally and becomes compact.
func TestRecordOfThePreviousReleaseEnds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	c, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")})
	require.NoError(t, err)
	id := c[0].Tasks[0].ID
	key := b.l.TaskKey("acme", id)
	require.NoError(t, b.l.Redis().HSet(ctx, key, "throttles", "0", "some_old_field", "x").Err())
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: time.Minute})
	require.NoError(t, err)
	ok, err := b.l.Finish(ctx, "acme", id, "f1", cl.Fence(), ledger.Outcome{State: contracts.StateFailed, Error: "boom"})
	require.NoError(t, err)
	require.True(t, ok)
	h, err := b.l.Redis().HGetAll(ctx, key).Result()
	require.NoError(t, err)
	keys := slices.Sorted(maps.Keys(h))
	require.NotContains(t, keys, "some_old_field")
	require.NotContains(t, keys, "env")
	require.Equal(t, "boom", h["error"])
}

// Dedup keys are short; an event accepted by the previous release (its
// dedup and event-id keys under their old names) is still deduplicated and
// found by its id until its window ends. Only in the legacy layout: no
// release before wrote the partitioned one, which reads no old names.
func TestDedupKeysOfThePreviousReleaseStillDedup(t *testing.T) {
	t.Parallel()
	t.Run("Legacy", func(t *testing.T) { testPreviousReleaseDedup(t, 0) })
	t.Run("Partitioned", func(t *testing.T) { testPreviousReleaseDedup(t, 4) })
}

func testPreviousReleaseDedup(t *testing.T, partitions int) {
	t.Parallel()
	b := setupLayout(t, partitions, nil)
	ctx := context.Background()
	rdb := b.l.Redis()
	first, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")})
	require.NoError(t, err)
	id := first[0].Tasks[0].ID
	keys, err := rdb.Keys(ctx, b.l.AllKey("acme")[:len(b.l.AllKey("acme"))-len("tasks")]+"d:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.Len(t, keys[0], len(b.l.AllKey("acme"))-len("tasks")+len("d:")+22, "a short key name")
	val, err := rdb.Get(ctx, keys[0]).Result()
	require.NoError(t, err)
	require.Equal(t, id, val, "the value is the task ids only")

	// Rename the keys as the previous release named them.
	sum := sha256.Sum256([]byte("/test\x00e1"))
	tp := b.l.AllKey("acme")[:len(b.l.AllKey("acme"))-len("tasks")]
	require.NoError(t, rdb.Rename(ctx, keys[0], tp+"dedup:"+hex.EncodeToString(sum[:])).Err())
	ev, err := rdb.Keys(ctx, tp+"e:*").Result()
	require.NoError(t, err)
	require.Len(t, ev, 1)
	sum = sha256.Sum256([]byte("e1"))
	require.NoError(t, rdb.Rename(ctx, ev[0], tp+"evid:"+hex.EncodeToString(sum[:])).Err())

	again, err := b.l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")})
	require.NoError(t, err)
	if partitions > 0 {
		require.False(t, again[0].Duplicate, "the partitioned layout reads no old names")
		return
	}
	require.True(t, again[0].Duplicate)
	require.Equal(t, id, again[0].Tasks[0].ID)
	byID, err := b.l.List(ctx, "acme", ledger.ListFilter{EventID: "e1"})
	require.NoError(t, err)
	require.Equal(t, []string{id}, ids(byID))
	bySource, err := b.l.List(ctx, "acme", ledger.ListFilter{EventID: "e1", EventSource: "/test"})
	require.NoError(t, err)
	require.Equal(t, []string{id}, ids(bySource))
}
