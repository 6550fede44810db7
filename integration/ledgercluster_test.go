//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/tasklane"
)

// The suite's skeleton, dedup, delay, poison and crash scenarios, unchanged,
// with the ledger (and the redisstream driver's lanes and results) on a
// Redis Cluster of 3 masters and 3 replicas started by the test:
// redis.cluster true, ledger.partitions 64 by default. Each test starts a
// cluster of its own (about 3 s) and fails, never skips, without
// redis-server.

func TestIntegrationClusterSkeleton(t *testing.T) { onClusterRun(t, runSkeleton) }
func TestIntegrationClusterDedup(t *testing.T)    { onClusterRun(t, runDedup) }
func TestIntegrationClusterDelay(t *testing.T)    { onClusterRun(t, runDelaysTTLAndCancel) }
func TestIntegrationClusterPoison(t *testing.T)   { onClusterRun(t, runPoison) }
func TestIntegrationClusterKill9(t *testing.T)    { onClusterRun(t, runKill9) }

// onClusterRun runs scenario for every driver with every stack on a Redis
// Cluster of 3 masters with a replica each.
func onClusterRun(t *testing.T, scenario func(t *testing.T, driver string)) {
	onCluster(t, testkit.StartCluster(t, 3, 1))
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { scenario(t, driver) })
	}
}

// TestIntegrationClusterChaos runs a deployment of separate processes on a
// Redis Cluster (3 masters, 3 replicas) and the machine's RabbitMQ: 2
// gateways, 3 dispatchers, 2 notifiers and 2 schedulers, under a steady
// load. While tasks flow it kills (SIGKILL) a dispatcher, then a gateway,
// then a Redis master (its replica takes over; killed once the replica
// has every write the master acknowledged). Every task a gateway
// accepted (202) must reach exactly one terminal state: a result event,
// never two distinct successes, and a terminal record in the ledger.
//
// The killed dispatcher and gateway run as child processes (kill -9); the
// others are tasklane.Start apps with one role each in this process.
func TestIntegrationClusterChaos(t *testing.T) {
	const (
		rate     = 200 // tasks/s, in batches of batch
		batch    = 20
		duration = 15 * time.Second
	)
	cl := testkit.StartCluster(t, 3, 1)
	onCluster(t, cl)
	c := newChecker(t, 20*time.Millisecond)
	e := newStack(t, config.BrokerDriverAMQP, fmt.Sprintf(`
functions:
  - {name: work, events: [com.example.work], endpoint: %q}
subscriptions:
  - {name: results, sink: %q}
`, c.fn.URL, c.sink.URL))
	require.True(t, e.cfg.Redis.Cluster)
	require.Equal(t, config.ClusterPartitionsDefault, e.cfg.LedgerPartitions(), "64 partitions by default on a cluster")

	doomedDispatcher := e.spawn("dispatcher")
	doomedGateway := e.spawn("gateway")
	gateways := []string{doomedGateway.url(), e.startRole(tasklane.RoleGateway).URL()}
	for range 2 {
		e.startRole(tasklane.RoleDispatcher)
	}
	for range 2 {
		e.startRole(tasklane.RoleNotifier)
		e.startRole(tasklane.RoleScheduler)
	}

	// Load: a batch every batch/rate, to each gateway in turn; a gateway
	// that is gone (or a batch that fails while a master fails over) is
	// not accepted, and the next batch goes to the other one.
	var gatewayDown atomic.Bool
	var refused atomic.Int64
	submitted := make(chan struct{})
	go func() {
		defer close(submitted)
		tick := time.NewTicker(time.Second * batch / rate)
		defer tick.Stop()
		end := time.Now().Add(duration)
		for n, i := 0, 0; time.Now().Before(end); i++ {
			<-tick.C
			gw := gateways[i%2]
			if gatewayDown.Load() {
				gw = gateways[1]
			}
			var buf bytes.Buffer
			buf.WriteByte('[')
			for k := range batch {
				if k > 0 {
					buf.WriteByte(',')
				}
				fmt.Fprintf(&buf, `{"specversion":"1.0","id":"chaos-%d","source":"/chaos","type":"com.example.work","data":{"n":%d}}`, n, n)
				n++
			}
			buf.WriteByte(']')
			ids, err := submitBatch(gw, buf.Bytes())
			if err != nil {
				refused.Add(1)
				continue
			}
			c.accept(ids...)
		}
	}()

	// The kills, a few seconds apart while the load runs.
	waitAccepted := func(n int) {
		testkit.Eventually(t, duration, func() bool { return c.total() >= n }, "%d tasks accepted before the next kill", n)
	}
	waitAccepted(rate * 3)
	doomedDispatcher.kill()
	t.Logf("killed a dispatcher at %d accepted", c.total())
	waitAccepted(rate * 6)
	gatewayDown.Store(true)
	doomedGateway.kill()
	t.Logf("killed a gateway at %d accepted", c.total())
	waitAccepted(rate * 9)
	master := cl.Nodes()[0] // redis-cli --cluster create made the first nodes masters
	// Killed once its replica holds every write it acknowledged: Redis
	// replicates asynchronously, and the last writes of a master killed at
	// a random moment may be lost with it (decision 0017's failover row;
	// redis.wait_replicas closes it for acceptances). What this test
	// checks is that Tasklane survives the failover, not that window.
	require.NoError(t, cl.KillSynced(master))
	t.Logf("killed the Redis master %s at %d accepted", master.Addr, c.total())
	<-submitted

	testkit.Eventually(t, 90*time.Second, func() bool { return c.finished() == c.total() },
		"every accepted task has a result (%d of %d)", c.finished(), c.total())
	testkit.Eventually(t, 30*time.Second, e.outboxDrained, "results outbox drained")
	v := c.check(t, e, "default")
	t.Logf("%s; %d batches refused during the faults", v, refused.Load())
	require.Greater(t, v.Accepted, rate*9)
	require.Zero(t, v.Lost, "lost")
	require.Zero(t, v.Stuck, "stuck")
	require.Zero(t, v.DuplicateSuccesses, "duplicate successes")
	require.Zero(t, v.ConflictingResults, "conflicting results")
}

// startRole starts one more app of the stack in this process, with role
// only, stopped when the test ends.
func (e *env) startRole(role string) *tasklane.App {
	t := e.t
	t.Helper()
	roles, err := tasklane.ParseRoles(role)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	app, err := tasklane.Start(ctx, e.cfg, tasklane.Options{Logger: testLogger(t).With("role", role), Roles: roles})
	require.NoError(t, err)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		require.NoError(t, app.Shutdown(sctx))
	})
	return app
}

// submitBatch posts a batch of events to the gateway at url and returns
// the ids of the tasks it accepted (202), or why it did not.
func submitBatch(url string, body []byte) ([]string, error) {
	resp, err := http.Post(url+"/v1/events", "application/cloudevents-batch+json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("submit answered %d", resp.StatusCode)
	}
	var sr contracts.SubmitResponse
	if err := json.NewDecoder(resp.Body).Decode(&sr); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(sr.Tasks))
	for _, task := range sr.Tasks {
		ids = append(ids, task.ID)
	}
	return ids, nil
}

// TestIntegrationClusterWithoutDispatch runs what needs none of the
// dispatch scripts on a Redis Cluster: the gateway (create, dedup, get,
// list), the scheduler (expiry of tasks nobody took, in every partition)
// and the notifier (the results of 64 partitions' outbox streams, in
// several slots, to a sink). Tenants of several partitions submit tasks
// with a one-second ttl; no dispatcher runs, so each expires, and each
// expiry's result event reaches the sink once.
func TestIntegrationClusterWithoutDispatch(t *testing.T) {
	onCluster(t, testkit.StartCluster(t, 3, 1))
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			sk := newSink(t)
			e := newStack(t, driver, fmt.Sprintf(`
tenants:
  - {id: a, api_keys: ["key-a-cluster"]}
  - {id: b, api_keys: ["key-b-cluster"]}
  - {id: c, api_keys: ["key-c-cluster"]}
functions:
  - {name: work, events: [com.example.work], endpoint: "builtin:noop"}
subscriptions:
  - {name: all, sink: %q}
`, sk.srv.URL))
			e.start(tasklane.RoleGateway, tasklane.RoleScheduler, tasklane.RoleNotifier)
			require.True(t, e.cfg.Redis.Cluster)
			ids := map[string]string{} // task id -> tenant
			for _, tenant := range []string{"a", "b", "c"} {
				for i := range 20 {
					h := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": fmt.Sprintf("ttl-%d", i), "Ce-Source": "/cluster",
						"Ce-Type": "com.example.work", "Ce-Ttl": "1"}
					status, body := e.post("/v1/events", "key-"+tenant+"-cluster", "", h, nil)
					require.Equal(t, http.StatusAccepted, status, "%s", body)
					var sr contracts.SubmitResponse
					require.NoError(t, json.Unmarshal(body, &sr))
					ids[sr.Tasks[0].ID] = tenant
					// A duplicate finds the same task.
					status, body = e.post("/v1/events", "key-"+tenant+"-cluster", "", h, nil)
					require.Equal(t, http.StatusAccepted, status, "%s", body)
					require.Contains(t, string(body), `"duplicate":true`)
					require.Contains(t, string(body), sr.Tasks[0].ID)
				}
				status, body := e.get("/v1/tasks?limit=100", "key-"+tenant+"-cluster")
				require.Equal(t, http.StatusOK, status, "%s", body)
				var page contracts.TaskList
				require.NoError(t, json.Unmarshal(body, &page))
				require.Len(t, page.Tasks, 20, "tenant %s lists its tasks", tenant)
			}
			testkit.Eventually(t, 30*time.Second, func() bool { return sk.count() >= len(ids) }, "a result for every task")
			testkit.Eventually(t, 10*time.Second, e.outboxDrained, "every partition's outbox drained")
			sk.mu.Lock()
			defer sk.mu.Unlock()
			require.Empty(t, sk.bad)
			for id, tenant := range ids {
				require.Len(t, sk.byTask[id], 1, "one result for %s", id)
				require.Equal(t, contracts.StateExpired, sk.byTask[id][0].State)
				task, err := e.ledger().Get(context.Background(), tenant, id)
				require.NoError(t, err)
				require.Equal(t, contracts.StateExpired, task.State)
			}
		})
	}
}
