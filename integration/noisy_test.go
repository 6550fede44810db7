//go:build integration && !race

package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/routing"
	"github.com/tasklane/tasklane/services/tasklane"
)

// TestIntegrationNoisyNeighbour: tenants b..f each submit a steady 20
// tasks/s to a 20 ms function; then tenant a bursts 20,000 tasks as fast as
// it can. With the controller, a is moved to a dedicated lane within
// seconds, and b..f's queue wait (submit to start) p99 during the burst
// stays far below a's own queue wait (a tenth of a's median): they are not
// queued behind a. Their p99 against a target of twice their solo p99 plus
// 50 ms is reported. The same run without the
// controller is measured too, so the difference shows. Every one of b..f
// shares one of a's two lanes (see the shard check), so this is the case
// shuffle sharding alone does not cover.
//
// This test measures latency, so it is built without the race detector
// (which multiplies CPU cost several times over on a 2-core machine and
// would measure the instrumentation): `make test` runs it in a second,
// race-free pass.
func TestIntegrationNoisyNeighbour(t *testing.T) {
	st, err := routing.NewStatic(16, 2)
	require.NoError(t, err)
	for _, tenant := range []string{"b", "c", "d", "e", "f"} {
		overlap := 0
		for _, lane := range st.Shard(tenant) {
			if slices.Contains(st.Shard("a"), lane) {
				overlap++
			}
		}
		require.Less(t, overlap, 2, "tenant %s shares a's whole shard (the 1/120 case)", tenant)
	}
	// Subtests, so each stack stops (its cleanups run) before the next
	// starts: they measure latency on the same machine.
	var withController, without, withBackpressure noisyResult
	t.Run("controller", func(t *testing.T) { withController = runNoisy(t, true, false) })
	t.Run("no-controller", func(t *testing.T) { without = runNoisy(t, false, false) })
	// Backpressure on: a's backlog is capped at 2,000 waiting tasks; its
	// burst is refused (429) and resubmitted after Retry-After, and
	// nobody else is ever refused (a steady submit answered 429 fails the
	// test).
	t.Run("backpressure", func(t *testing.T) { withBackpressure = runNoisy(t, false, true) })
	if t.Failed() {
		return
	}
	t.Logf("backpressure on (a's max_backlog 2000): a refused %d times; b..f queue wait during a's burst %s; a's 20,000 tasks took %.1fs",
		withBackpressure.refused, withBackpressure.burst, withBackpressure.aTook.Seconds())
	require.Positive(t, withBackpressure.refused, "a's burst passed its max_backlog")
	t.Logf("b..f queue wait p50/p99: solo %s; during a's burst, controller on: %s, controller off: %s",
		withController.solo, withController.burst, without.burst)
	t.Logf("controller on: a moved to a dedicated lane %.1fs after its burst began; a's 20,000 tasks took %.1fs (controller off: %.1fs)",
		withController.splitAfter.Seconds(), withController.aTook.Seconds(), without.aTook.Seconds())
	// Isolation: b..f are not queued behind a. Queued behind a, their wait
	// would be of the order of a's own (seconds: a's backlog drains for
	// the whole burst); isolated, it is the dispatch path's latency, which
	// on a 2-core machine that a's 20,000 tasks saturate grows with CPU
	// contention (controller off measures the same figure). So the bound is
	// relative to a's median wait in the same run, which scales with the
	// machine's speed and load alike; the latency target (2x solo p99 +
	// 50 ms) is reported, not asserted (performance is measured, not
	// timed in tests).
	target := 2*withController.solo.p99 + 50*time.Millisecond
	t.Logf("a's queue wait p50/p99: %s; b..f p99 during the burst %.1fms against a target of %.1fms",
		withController.aWait, float64(withController.burst.p99)/1e6, float64(target)/1e6)
	require.LessOrEqual(t, withController.burst.p99, withController.aWait.p50/10,
		"b..f p99 during the burst is not a tenth of a's median wait: b..f queue behind a")
}

type waits struct{ p50, p99 time.Duration }

func (w waits) String() string {
	return fmt.Sprintf("%.1fms/%.1fms", float64(w.p50)/1e6, float64(w.p99)/1e6)
}

type noisyResult struct {
	solo, burst       waits
	aWait             waits // a's own queue waits during its burst
	splitAfter, aTook time.Duration
	refused           int
}

func runNoisy(t *testing.T, controller, backpressure bool) noisyResult {
	t.Helper()
	const burst = 20000
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(20 * time.Millisecond) // the function's work
	}))
	t.Cleanup(fn.Close)
	tenants := []string{"a", "b", "c", "d", "e", "f"}
	var cfg bytes.Buffer
	cfg.WriteString("server: {admin_keys: [\"admin-integration-key\"], max_batch_events: 1000}\nrouting: {window: 1s, hot_share: 0.25, hot_backlog: 200, cooldown: 5s}\ntenants:\n")
	for _, tenant := range tenants {
		backlog := 0
		if backpressure && tenant == "a" {
			backlog = 2000
		}
		fmt.Fprintf(&cfg, "  - {id: %s, api_keys: [\"key-%s-integration\"], max_backlog: %d}\n", tenant, tenant, backlog)
	}
	fmt.Fprintf(&cfg, "functions:\n  - {name: work, events: [com.example.work], endpoint: %q}\n", fn.URL)
	e := newStack(t, "amqp", cfg.String()) // a's dedicated lane is deleted with the stack's lanes
	roles := []string{tasklane.RoleGateway, tasklane.RoleDispatcher, tasklane.RoleScheduler, tasklane.RoleNotifier}
	if controller {
		roles = append(roles, tasklane.RoleController)
	}
	e.start(roles...)

	var retryAfter atomic.Int64 // seconds, from the last 429
	post := func(tenant string, body []byte, ct string) int {
		req, _ := http.NewRequest(http.MethodPost, e.app.URL()+"/v1/events", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer key-"+tenant+"-integration")
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			n, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			retryAfter.Store(int64(n))
		}
		return resp.StatusCode
	}
	// Steady tenants: 20 tasks/s each until told to stop.
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopSteady := func() { stopOnce.Do(func() { close(stop) }) }
	t.Cleanup(stopSteady)
	var steady sync.WaitGroup
	var seq atomic.Int64
	accepted := map[string]*atomic.Int64{}
	for _, tenant := range tenants[1:] {
		accepted[tenant] = new(atomic.Int64)
	}
	for _, tenant := range tenants[1:] {
		steady.Add(1)
		go func() {
			defer steady.Done()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				body := fmt.Appendf(nil, `{"specversion":"1.0","id":"s-%d","source":"/steady","type":"com.example.work"}`, seq.Add(1))
				if status := post(tenant, body, "application/cloudevents+json"); status != http.StatusAccepted {
					t.Errorf("%s: steady submit answered %d", tenant, status)
					continue
				}
				accepted[tenant].Add(1)
			}
		}()
	}
	time.Sleep(8 * time.Second) // the solo phase: steady load only
	burstStart := time.Now()

	// a's burst, as fast as it can, in batches of 500.
	var splitAfter time.Duration
	var refused int
	burstDone := make(chan struct{})
	go func() {
		defer close(burstDone)
		for start := 0; start < burst; start += 500 {
			var b bytes.Buffer
			b.WriteByte('[')
			for n := start; n < start+500; n++ {
				if n > start {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"specversion":"1.0","id":"a-%d","source":"/burst","type":"com.example.work"}`, n)
			}
			b.WriteByte(']')
			status := post("a", b.Bytes(), "application/cloudevents-batch+json")
			for backpressure && status == http.StatusTooManyRequests {
				// Refused whole: wait as told (a client's pacing, not
				// synchronisation), then send the same batch again.
				refused++
				time.Sleep(time.Duration(max(retryAfter.Load(), 1)) * time.Second)
				status = post("a", b.Bytes(), "application/cloudevents-batch+json")
			}
			if status != http.StatusAccepted {
				t.Errorf("a: burst submit answered %d", status)
				return
			}
		}
	}()
	ctx := context.Background()
	led := e.app.Ledger()
	aDone := func() bool {
		n, err := e.rdb.ZCard(ctx, e.ledger().TenantKeyPrefix("a")+"st:succeeded").Result()
		return err == nil && n == burst
	}
	if controller {
		testkit.Eventually(t, 30*time.Second, func() bool {
			snap, err := routing.NewStoreAt(e.rdb, e.ledger().RoutingKey()).Load(ctx)
			if err == nil && snap.Dedicated["a"] != "" {
				splitAfter = time.Since(burstStart)
				return true
			}
			return false
		}, "a moved to a dedicated lane")
	}
	<-burstDone
	for deadline, next := time.Now().Add(120*time.Second), time.Now(); !aDone(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(next) {
			t.Logf("%.0fs into the burst, a's tasks: %s", time.Since(burstStart).Seconds(), stateCounts(e, "a"))
			next = time.Now().Add(5 * time.Second)
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's tasks did not all succeed within 120s: %s", stateCounts(e, "a"))
		}
	}
	aTook := time.Since(burstStart)
	burstEnd := time.Now()
	stopSteady()
	steady.Wait()

	// Every steady task ran; queue waits by phase from the ledger records.
	var solo, during []time.Duration
	bySec := map[int][]time.Duration{}
	for _, tenant := range tenants[1:] {
		testkit.Eventually(t, 30*time.Second, func() bool {
			for _, task := range allTasks(t, led, tenant) {
				if task.State != contracts.StateSucceeded {
					return false
				}
			}
			return true
		}, "%s's tasks all succeeded", tenant)
		tasks := allTasks(t, led, tenant)
		require.Len(t, tasks, int(accepted[tenant].Load()), "%s: every accepted task is in the ledger", tenant)
		for _, task := range tasks {
			wait := task.StartedAt.Sub(task.CreatedAt)
			switch {
			case task.CreatedAt.Before(burstStart):
				solo = append(solo, wait)
			case task.CreatedAt.Before(burstEnd):
				during = append(during, wait)
				sec := int(task.CreatedAt.Sub(burstStart) / (5 * time.Second))
				bySec[sec] = append(bySec[sec], wait)
			}
		}
	}
	require.NotEmpty(t, solo)
	require.NotEmpty(t, during)
	for i := 0; i <= int(aTook/(5*time.Second)); i++ {
		if len(bySec[i]) > 0 {
			t.Logf("b..f tasks submitted %2ds-%2ds into the burst: %4d, queue wait p50/p99 %s", 5*i, 5*i+5, len(bySec[i]), pct(bySec[i]))
		}
	}
	var aWaits []time.Duration
	for _, task := range allTasks(t, led, "a") {
		aWaits = append(aWaits, task.StartedAt.Sub(task.CreatedAt))
	}
	return noisyResult{solo: pct(solo), burst: pct(during), aWait: pct(aWaits), splitAfter: splitAfter, aTook: aTook, refused: refused}
}

func pct(d []time.Duration) waits {
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return waits{p50: at(0.50), p99: at(0.99)}
}

// stateCounts describes how many of tenant's tasks are in each state.
func stateCounts(e *env, tenant string) string {
	out := ""
	for _, st := range contracts.States {
		n, _ := e.rdb.ZCard(context.Background(), e.ledger().TenantKeyPrefix(tenant)+"st:"+string(st)).Result()
		if n > 0 {
			out += fmt.Sprintf("%s=%d ", st, n)
		}
	}
	return out
}
