package ledger_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// The ledger benchmarks run against the real Redis (TASKLANE_TEST_REDIS_URL,
// default 127.0.0.1:6379/0) under a key prefix of their own, deleted at the
// end. Each op is one round trip unless its name says otherwise, so they
// measure the Lua scripts plus the loopback round trip.

// benchLedger returns a ledger under a fresh key prefix, cleaned up after b.
func benchLedger(b *testing.B) *ledger.Ledger {
	b.Helper()
	rdb, prefix := testkit.Redis(b)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
	ctx := context.Background()
	if err := l.LoadScripts(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if len(keys) == 1000 {
				rdb.Unlink(ctx, keys...)
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			rdb.Unlink(ctx, keys...)
		}
	})
	return l
}

// benchMessage is about the size of a lane message with a 64-byte payload.
var benchMessage = bytes.Repeat([]byte("m"), 400)

func benchEvent(i int, run string) ledger.EventTasks {
	id := fmt.Sprintf("%s-%d", run, i)
	return ledger.EventTasks{
		Tenant: "bench",
		Event:  contracts.EventRef{ID: id, Source: "/bench", Type: "com.example.noop"},
		Tasks:  []ledger.NewTask{{ID: "t-" + id, Function: "noop", Message: benchMessage}},
	}
}

// createTasks records n one-task events in batches of 100 and returns them.
func createTasks(b *testing.B, l *ledger.Ledger, n int) []ledger.EventTasks {
	b.Helper()
	run := testkit.UniqueName("ev")
	evs := make([]ledger.EventTasks, n)
	for i := range evs {
		evs[i] = benchEvent(i, run)
	}
	for lo := 0; lo < n; lo += 100 {
		if _, err := l.Create(context.Background(), evs[lo:min(lo+100, n)]); err != nil {
			b.Fatal(err)
		}
	}
	return evs
}

// BenchmarkLedgerCreate records one event with one task per call: the
// gateway's single-event path (dedup check, record, publish guard).
func BenchmarkLedgerCreate(b *testing.B) {
	l := benchLedger(b)
	ctx := context.Background()
	run := testkit.UniqueName("ev")
	i := 0
	for b.Loop() {
		if _, err := l.Create(ctx, []ledger.EventTasks{benchEvent(i, run)}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkLedgerCreateBatch100 records 100 events in one pipelined call
// (the batch ingest path); ns/op is per batch, events/s is reported.
func BenchmarkLedgerCreateBatch100(b *testing.B) {
	l := benchLedger(b)
	ctx := context.Background()
	run := testkit.UniqueName("ev")
	evs := make([]ledger.EventTasks, 100)
	i := 0
	for b.Loop() {
		for j := range evs {
			evs[j] = benchEvent(i, run)
			i++
		}
		if _, err := l.Create(ctx, evs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkLedgerDedupHit submits an event the ledger has already seen: the
// dedup check answers the earlier tasks (one script plus one read of them).
func BenchmarkLedgerDedupHit(b *testing.B) {
	l := benchLedger(b)
	ctx := context.Background()
	evs := createTasks(b, l, 1000)
	i := 0
	for b.Loop() {
		out, err := l.Create(ctx, []ledger.EventTasks{evs[i%len(evs)]})
		if err != nil || !out[0].Duplicate {
			b.Fatalf("want a duplicate: %+v, %v", out, err)
		}
		i++
	}
}

// BenchmarkLedgerClaim and BenchmarkLedgerFinish prepare b.N tasks first,
// so they use b.N rather than b.Loop.

// BenchmarkLedgerClaim claims a queued task (no limits): queued -> running
// with a lease.
func BenchmarkLedgerClaim(b *testing.B) {
	l := benchLedger(b)
	ctx := context.Background()
	evs := createTasks(b, l, b.N)
	b.ResetTimer()
	for i := range b.N {
		ev := evs[i]
		c, err := l.Claim(ctx, ledger.ClaimRequest{Tenant: ev.Tenant, ID: ev.Tasks[0].ID, Function: "noop", Owner: "bench", Lease: 15 * time.Second})
		if err != nil || c.Verdict != ledger.VerdictRun {
			b.Fatalf("claim: %+v, %v", c, err)
		}
	}
}

// BenchmarkLedgerFinish records a running task's success and its outbox
// entry.
func BenchmarkLedgerFinish(b *testing.B) {
	l := benchLedger(b)
	ctx := context.Background()
	evs := createTasks(b, l, b.N)
	for _, ev := range evs {
		if _, err := l.Claim(ctx, ledger.ClaimRequest{Tenant: ev.Tenant, ID: ev.Tasks[0].ID, Function: "noop", Owner: "bench", Lease: time.Minute}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		ev := evs[i]
		ok, err := l.Finish(ctx, ev.Tenant, ev.Tasks[0].ID, "noop", ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateSucceeded})
		if err != nil || !ok {
			b.Fatalf("finish: %v, %v", ok, err)
		}
	}
}

// BenchmarkLedgerLifecycleParallel runs create, claim and finish of one task
// per op from 16 goroutines per CPU: the ledger's share of a task at full load.
func BenchmarkLedgerLifecycleParallel(b *testing.B) {
	l := benchLedger(b)
	ctx := context.Background()
	run := testkit.UniqueName("ev")
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		w := testkit.UniqueName("w")
		i := 0
		for pb.Next() {
			ev := benchEvent(i, run+w)
			i++
			if _, err := l.Create(ctx, []ledger.EventTasks{ev}); err != nil {
				b.Error(err)
				return
			}
			id := ev.Tasks[0].ID
			if _, err := l.Claim(ctx, ledger.ClaimRequest{Tenant: ev.Tenant, ID: id, Function: "noop", Owner: w, Lease: time.Minute}); err != nil {
				b.Error(err)
				return
			}
			if _, err := l.Finish(ctx, ev.Tenant, id, "noop", ledger.Fence{Attempt: 1}, ledger.Outcome{State: contracts.StateSucceeded}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}
