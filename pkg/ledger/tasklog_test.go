package ledger_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

func kinds(es []contracts.LogEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = fmt.Sprintf("%s/%d", e.Kind, e.Attempt)
	}
	return out
}

func TestTaskLogFollowsTheTask(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	id := b.record(t, "a", "f1", 5)
	require.NoError(t, b.l.DropGuards(ctx, []ledger.Guard{{Tenant: "a", ID: id, Lane: "lane.07", At: b.now}}))
	b.advance(time.Millisecond)
	require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f1", 5).Verdict)
	b.advance(time.Millisecond)
	tk := b.take(t, "f1", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	b.advance(5 * time.Millisecond)
	d := int64(5)
	ok, err := b.l.Retry(ctx, "a", id, "f1", ledger.Fence{Attempt: 1}, b.now.Add(time.Second), "HTTP 500: boom", false,
		contracts.LogEntry{At: b.now.Add(-2 * time.Millisecond), Kind: contracts.LogLine, Attempt: 1, Message: "working"},
		contracts.LogEntry{At: b.now, Kind: contracts.LogEnded, Attempt: 1, Status: 500, DurationMS: &d, Message: "HTTP 500: boom"},
		contracts.LogEntry{At: b.now, Kind: contracts.LogRetry, Attempt: 1, Message: "retry at ..."})
	require.NoError(t, err)
	require.True(t, ok)
	// A fenced-off retry (a stale attempt) appends nothing.
	ok, err = b.l.Retry(ctx, "a", id, "f1", ledger.Fence{Attempt: 7}, b.now, "stale", false, contracts.LogEntry{Kind: contracts.LogEnded, Attempt: 7})
	require.NoError(t, err)
	require.False(t, ok)

	b.advance(time.Second)
	require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f1", 5).Verdict)
	tk = b.take(t, "f1", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	b.advance(time.Millisecond)
	ok, err = b.l.Finish(ctx, "a", id, "f1", ledger.Fence{Attempt: 2}, ledger.Outcome{State: contracts.StateDead, Error: "HTTP 500: boom",
		Reason: contracts.ReasonAttemptsExhausted, Log: []contracts.LogEntry{{At: b.now, Kind: contracts.LogEnded, Attempt: 2, Status: 500}}})
	require.NoError(t, err)
	require.True(t, ok)

	log, err := b.l.Log(ctx, "a", id)
	require.NoError(t, err)
	require.Equal(t, []string{"accepted/0", "published/0", "admitted/0", "started/1", "line/1", "ended/1", "retry/1",
		"admitted/0", "started/2", "ended/2", "dead/2"}, kinds(log))
	require.Equal(t, 500, log[5].Status)
	require.Equal(t, int64(5), *log[5].DurationMS)
	require.Contains(t, log[1].Message, "lane.07")
	require.Contains(t, log[8].Message, "started by d1")
	require.Equal(t, "dead-lettered (attempts_exhausted): HTTP 500: boom", log[10].Message)
	for i := 1; i < len(log); i++ {
		require.False(t, log[i].At.Before(log[i-1].At), "entries in time order")
	}

	// The log expires with the record.
	rdb := b.l.Redis()
	logTTL, hashTTL := rdb.PTTL(ctx, b.l.LogKey("a", id)).Val(), rdb.PTTL(ctx, b.l.TaskKey("a", id)).Val()
	require.Positive(t, logTTL)
	require.InDelta(t, hashTTL.Seconds(), logTTL.Seconds(), 1)

	_, err = b.l.Log(ctx, "b", id)
	require.ErrorIs(t, err, ledger.ErrNotFound, "another tenant does not see the log")
	require.ErrorIs(t, b.l.AppendLog(ctx, "b", id, contracts.LogEntry{Kind: contracts.LogLine, Message: "x"}), ledger.ErrNotFound)
	require.Zero(t, rdb.Exists(ctx, b.l.LogKey("b", id)).Val(), "an append for a missing task writes nothing")

	// Redrive keeps the log forever again; purge deletes it.
	require.NoError(t, b.l.Redrive(ctx, "a", id))
	require.Equal(t, time.Duration(-1), rdb.PTTL(ctx, b.l.LogKey("a", id)).Val())
	log, err = b.l.Log(ctx, "a", id)
	require.NoError(t, err)
	require.Equal(t, contracts.LogRedriven, log[len(log)-1].Kind)
}

func TestTaskLogPurgeAndCancel(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	id := b.record(t, "a", "f1", 5)
	_, err := b.l.Cancel(ctx, "a", id)
	require.NoError(t, err)
	log, err := b.l.Log(ctx, "a", id)
	require.NoError(t, err)
	require.Equal(t, []string{"accepted/0", "cancelled/0"}, kinds(log))
	require.Equal(t, "cancelled: cancelled by request", log[1].Message)
	// Function lines after the end still land, with the record's TTL.
	require.NoError(t, b.l.AppendLog(ctx, "a", id, contracts.LogEntry{Kind: contracts.LogLine, Message: "late"}))
	require.Positive(t, b.l.Redis().PTTL(ctx, b.l.LogKey("a", id)).Val())

	dead := b.record(t, "a", "f1", 5)
	b.admit(t, "a", dead, "f1", 5)
	tk := b.take(t, "f1", 1, ledger.TakeLimits{})
	ok, err := b.l.Finish(ctx, "a", dead, "f1", tk.Tasks[0].Fence(), ledger.Outcome{State: contracts.StateDead, Reason: contracts.ReasonNonRetryable})
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, b.l.Purge(ctx, "a", dead))
	require.Zero(t, b.l.Redis().Exists(ctx, b.l.LogKey("a", dead)).Val())
}

func TestTaskLogIsBounded(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	id := b.record(t, "a", "f1", 5)
	line := strings.Repeat("x", 1000)
	appendN := func(from, n int) {
		var es []contracts.LogEntry
		for i := range n {
			b.advance(time.Microsecond)
			es = append(es, contracts.LogEntry{At: b.now, Kind: contracts.LogLine, Attempt: 1, Message: fmt.Sprintf("%05d %s", from+i, line)})
		}
		require.NoError(t, b.l.AppendLog(ctx, "a", id, es...))
	}
	appendN(0, 100)
	size := func() int {
		n := 0
		for _, s := range b.l.Redis().LRange(ctx, b.l.LogKey("a", id), 0, -1).Val() {
			n += len(s)
		}
		return n
	}
	require.LessOrEqual(t, size(), ledger.LogMaxBytes)
	log, err := b.l.Log(ctx, "a", id)
	require.NoError(t, err)
	require.Equal(t, contracts.LogTruncated, log[0].Kind)
	first := len(log) - 1 // lines kept
	dropped := 101 - first
	require.Contains(t, log[0].Message, fmt.Sprintf("%d earlier entries dropped", dropped), "the accepted entry and the oldest lines")
	require.True(t, strings.HasPrefix(log[len(log)-1].Message, "00099 "), "the newest line is kept")

	appendN(100, 10)
	require.LessOrEqual(t, size(), ledger.LogMaxBytes)
	log, err = b.l.Log(ctx, "a", id)
	require.NoError(t, err)
	require.Equal(t, contracts.LogTruncated, log[0].Kind)
	for _, e := range log[1:] {
		require.Equal(t, contracts.LogLine, e.Kind, "one marker only")
	}
	require.Contains(t, log[0].Message, fmt.Sprintf("%d earlier entries dropped", dropped+10))
	require.True(t, strings.HasPrefix(log[len(log)-1].Message, "00109 "))
	require.Equal(t, fmt.Sprint(dropped+10), b.l.Redis().HGet(ctx, b.l.TaskKey("a", id), "log_dropped").Val(), "the record counts what was dropped")

	// Seqs survive the bound: entry n (accepted is 1, line k is k+2) keeps
	// seq n; the marker has the seq of the last entry it stands for.
	require.EqualValues(t, dropped+10, log[0].Seq)
	for _, e := range log[1:] {
		var k int64
		_, err := fmt.Sscanf(e.Message, "%05d", &k)
		require.NoError(t, err)
		require.Equal(t, k+2, e.Seq, e.Message[:5])
	}
	after, last, err := b.l.LogAfter(ctx, "a", id, 100)
	require.NoError(t, err)
	require.EqualValues(t, 111, last, "accepted and 110 lines")
	require.Len(t, after, 11)
	require.EqualValues(t, 101, after[0].Seq)
	after, _, err = b.l.LogAfter(ctx, "a", id, 3)
	require.NoError(t, err)
	require.Equal(t, contracts.LogTruncated, after[0].Kind, "a follower that fell behind the bound is told entries were dropped")
	require.Len(t, after, len(log))

	// One message is cut to LogMessageMaxBytes.
	require.NoError(t, b.l.AppendLog(ctx, "a", id, contracts.LogEntry{Kind: contracts.LogLine, Message: strings.Repeat("y", 10_000)}))
	log, err = b.l.Log(ctx, "a", id)
	require.NoError(t, err)
	require.Len(t, log[len(log)-1].Message, ledger.LogMessageMaxBytes)
	require.True(t, strings.HasSuffix(log[len(log)-1].Message, "[cut]"))

	// The count of dropped entries survives the end (the compact record
	// keeps it), so the marker goes on counting for later appends.
	before := b.l.Redis().HGet(ctx, b.l.TaskKey("a", id), "log_dropped").Val()
	_, err = b.l.Cancel(ctx, "a", id)
	require.NoError(t, err)
	n, err := strconv.Atoi(b.l.Redis().HGet(ctx, b.l.TaskKey("a", id), "log_dropped").Val())
	require.NoError(t, err)
	was, _ := strconv.Atoi(before)
	require.GreaterOrEqual(t, n, was, "kept through the compaction")
	log, err = b.l.Log(ctx, "a", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateCancelled, contracts.State(log[len(log)-1].Kind))
	require.Contains(t, log[0].Message, fmt.Sprintf("%d earlier entries dropped", n))
}

func TestTaskLogSeqIsStableAndContinues(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	id := b.record(t, "a", "f1", 5)
	b.advance(time.Millisecond)
	require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f1", 5).Verdict)
	// A publish confirmed late lands after admitted, with an earlier time.
	require.NoError(t, b.l.DropGuards(ctx, []ledger.Guard{{Tenant: "a", ID: id, Lane: "lane.07", At: b.now.Add(-time.Microsecond)}}))

	log, last, err := b.l.LogAfter(ctx, "a", id, 0)
	require.NoError(t, err)
	require.Equal(t, []string{"accepted/0", "published/0", "admitted/0"}, kinds(log), "time order")
	require.Equal(t, []int64{1, 3, 2}, []int64{log[0].Seq, log[1].Seq, log[2].Seq}, "seq: append order")
	require.EqualValues(t, 3, last)
	again, _, err := b.l.LogAfter(ctx, "a", id, 0)
	require.NoError(t, err)
	require.Equal(t, log, again, "the same entries, the same seqs")

	none, last2, err := b.l.LogAfter(ctx, "a", id, last)
	require.NoError(t, err)
	require.Empty(t, none)
	require.Equal(t, last, last2)
	require.NoError(t, b.l.AppendLog(ctx, "a", id, contracts.LogEntry{Kind: contracts.LogLine, Message: "x"}))
	fresh, last, err := b.l.LogAfter(ctx, "a", id, last)
	require.NoError(t, err)
	require.Len(t, fresh, 1)
	require.EqualValues(t, 4, fresh[0].Seq)
	require.EqualValues(t, 4, last)

	_, _, err = b.l.LogAfter(ctx, "b", id, 0)
	require.ErrorIs(t, err, ledger.ErrNotFound)
}

// A follower reading with after = the last seq it got while others append
// sees every entry exactly once.
func TestTaskLogAfterUnderConcurrentAppends(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	id := b.record(t, "a", "f1", 5)
	const writers, appends, lines = 4, 30, 2
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range appends {
				es := make([]contracts.LogEntry, lines)
				for j := range es {
					es[j] = contracts.LogEntry{Kind: contracts.LogLine, Message: fmt.Sprintf("w%d-%d-%d", w, i, j)}
				}
				if err := b.l.AppendLog(ctx, "a", id, es...); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	seen := map[int64]string{}
	msgs := map[string]bool{}
	var after int64
	read := func() {
		es, last, err := b.l.LogAfter(ctx, "a", id, after)
		require.NoError(t, err)
		for _, e := range es {
			require.Greater(t, e.Seq, after)
			require.LessOrEqual(t, e.Seq, last)
			require.NotContains(t, seen, e.Seq, "seq %d given twice", e.Seq)
			require.False(t, msgs[e.Message], "entry %q given twice", e.Message)
			seen[e.Seq], msgs[e.Message] = e.Message, true
		}
		require.Len(t, es, int(last-after), "every entry after %d up to %d", after, last)
		after = last
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		read()
	}
	read()
	require.Len(t, seen, 1+writers*appends*lines, "accepted and every line")
	for seq := int64(1); seq <= int64(len(seen)); seq++ {
		require.Contains(t, seen, seq, "no gap")
	}
}

// TestDropGuardsLogsPublishedInTheSameCall: confirming a batch of one
// partition's tasks drops their guards and appends their "published"
// entries in one script call (it was one call more per task), with
// AppendLog's rules: a guard whose score changed stays, a missing record
// gets no log.
func TestDropGuardsLogsPublishedInTheSameCall(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	now := time.Now().Truncate(time.Millisecond)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions(), PublishGuard: 30 * time.Second,
		Now: func() time.Time { return now }})
	ctx := context.Background()
	ids := []string{testkit.UniqueName("task"), testkit.UniqueName("task"), testkit.UniqueName("task")}
	ev := ledger.EventTasks{Tenant: "a", Event: contracts.EventRef{ID: testkit.UniqueName("ev"), Source: "/test", Type: "t"}}
	for _, id := range ids {
		ev.Tasks = append(ev.Tasks, ledger.NewTask{ID: id, Function: "f1", Message: []byte("m")})
	}
	c, err := l.Create(ctx, []ledger.EventTasks{ev})
	require.NoError(t, err)
	guard := c[0].GuardScore
	// The third task's guard was replaced (a retry scheduled meanwhile).
	require.NoError(t, rdb.ZAdd(ctx, l.DelayKey("a"), redis.Z{Score: float64(guard + 1), Member: ledger.Member("a", ids[2])}).Err())
	missing := testkit.UniqueName("task")

	calls := &cmdCounter{names: []string{"eval", "evalsha"}}
	rdb.AddHook(calls)
	guards := []ledger.Guard{{Tenant: "a", ID: missing, Score: guard, Lane: "lane.01", At: now}}
	for _, id := range ids {
		guards = append(guards, ledger.Guard{Tenant: "a", ID: id, Score: guard, Lane: "lane.01", At: now})
	}
	require.NoError(t, l.DropGuards(ctx, guards))
	require.EqualValues(t, 1, calls.n.Load(), "one script call for the batch")

	for i, id := range ids {
		_, err := rdb.ZScore(ctx, l.DelayKey("a"), ledger.Member("a", id)).Result()
		if i < 2 {
			require.ErrorIs(t, err, redis.Nil, "the guard of %s is dropped", id)
		} else {
			require.NoError(t, err, "a replaced guard stays")
		}
		log, err := l.Log(ctx, "a", id)
		require.NoError(t, err)
		require.Equal(t, []string{"accepted/0", "published/0"}, kinds(log), "task %d", i)
		require.Equal(t, "published to lane lane.01", log[1].Message)
	}
	n, err := rdb.Exists(ctx, l.TenantKeyPrefix("a")+"log:"+missing).Result()
	require.NoError(t, err)
	require.Zero(t, n, "no log for a missing record")
}

// A short log costs one RPUSH per append and no accounting in the record;
// an entry a script builds past the entry bound (an ending's message with
// a long error) is cut to it at a UTF-8 boundary.
func TestTaskLogShortLogsAndLongEntries(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	id := b.record(t, "a", "f1", 5)
	require.Equal(t, ledger.AdmitAdmitted, b.admit(t, "a", id, "f1", 5).Verdict)
	tk := b.take(t, "f1", 1, ledger.TakeLimits{})
	require.Len(t, tk.Tasks, 1)
	long := strings.Repeat("é", ledger.LogMessageMaxBytes) // 2 bytes each
	ok, err := b.l.Finish(ctx, "a", id, "f1", tk.Tasks[0].Fence(), ledger.Outcome{State: contracts.StateFailed, Error: long})
	require.NoError(t, err)
	require.True(t, ok)
	raw, err := b.l.Redis().LRange(ctx, b.l.LogKey("a", id), 0, -1).Result()
	require.NoError(t, err)
	end := raw[len(raw)-1]
	require.Less(t, len(end), len(long), "the ending's entry is cut")
	require.LessOrEqual(t, len(end), ledger.LogMessageMaxBytes+128)
	require.True(t, utf8.ValidString(end), "cut at a UTF-8 boundary")
	log, err := b.l.Log(ctx, "a", id)
	require.NoError(t, err)
	require.Equal(t, []string{"accepted/0", "admitted/0", "started/1", "failed/1"}, kinds(log))
	fields, err := b.l.Redis().HKeys(ctx, b.l.TaskKey("a", id)).Result()
	require.NoError(t, err)
	require.NotContains(t, fields, "log_dropped")
	require.NotContains(t, fields, "log_bytes")
}
