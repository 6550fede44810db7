package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/redisconn"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// The batcher on a Redis Cluster: one pipeline of creates for tenants of
// every partition is split by node, and a call answered NOSCRIPT, by a
// master whose script cache was flushed or by a replica that took over
// from a master, is sent again once the scripts are loaded on every
// master (go-redis's ClusterClient.ScriptLoad loads on each shard). A
// dead master's slots go to its replica within redisconn.ClusterStateReload
// of the failover.
func TestBatcherOnClusterSurvivesNoScriptAndFailover(t *testing.T) {
	cl := testkit.StartCluster(t, 3, 1)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), ClusterStateReloadInterval: redisconn.ClusterStateReload})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: "tl", Partitions: 64})
	require.NoError(t, l.LoadScripts(ctx))

	round := 0
	create := func() error {
		round++
		var evs []ledger.EventTasks
		for i := range 32 { // tenants of many partitions, on every master
			evs = append(evs, event(fmt.Sprintf("t%d", i), fmt.Sprintf("e%d", round), "f1"))
		}
		created, err := l.Create(ctx, evs)
		if err != nil {
			return err
		}
		for i, c := range created {
			task, err := l.Get(ctx, evs[i].Tenant, c.Tasks[0].ID)
			if err != nil {
				return err
			}
			if task.State != contracts.StateQueued {
				return fmt.Errorf("task %s is %s", task.ID, task.State)
			}
		}
		return nil
	}
	require.NoError(t, create())

	require.NoError(t, rdb.ScriptFlush(ctx).Err()) // every master
	require.NoError(t, create(), "after SCRIPT FLUSH on every master")

	cl.Kill(cl.Nodes()[0]) // a master: its replica takes over
	var errs []string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) { // polling
		err := create()
		if err == nil {
			break
		}
		if len(errs) == 0 || errs[len(errs)-1] != err.Error() {
			errs = append(errs, err.Error())
		}
		require.True(t, time.Now().Before(deadline), "creates fail 20s after the failover: %q", errs)
	}
	t.Logf("errors during the failover: %q", errs)
	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	require.NoError(t, create(), "after SCRIPT FLUSH on the new masters")
}
