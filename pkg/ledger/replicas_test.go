package ledger_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/redisconn"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// waitTimeout is the tests' WAIT timeout: the default, as a busy machine
// (2 cores running other tests) can take hundreds of milliseconds to
// relay a replica's acknowledgement.
const waitTimeout = ledger.WaitTimeoutDefault

// cmdCounter is a go-redis hook that counts the commands named in names
// (lower case) a client sends, alone or in pipelines.
type cmdCounter struct {
	names []string
	n     atomic.Int64
}

func (c *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.count(cmd)
		return next(ctx, cmd)
	}
}

func (c *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			c.count(cmd)
		}
		return next(ctx, cmds)
	}
}

func (c *cmdCounter) count(cmd redis.Cmder) {
	if slices.Contains(c.names, strings.ToLower(cmd.Name())) {
		c.n.Add(1)
	}
}

// startReplicated starts a master and one replica of it, and returns once
// the master counts the replica online.
func startReplicated(t *testing.T) (master, replica *testkit.RedisServer) {
	master = testkit.StartRedis(t)
	replica = testkit.StartRedis(t, "--replicaof", "127.0.0.1", master.Port())
	c := master.Client(t)
	testkit.Eventually(t, 10*time.Second, func() bool {
		info, _ := c.Info(context.Background(), "replication").Result()
		return strings.Contains(info, "state=online")
	}, "the master has its replica online (it counts in WAIT)")
	return master, replica
}

// On one Redis with a replica and redis.wait_replicas 1, Create answers
// once the replica has the tasks (read there right after), with one WAIT
// per pipeline, not per event; with the replica gone it fails with
// ErrNotReplicated after the WAIT timeout, the tasks recorded on the
// master.
func TestCreateWaitsForReplica(t *testing.T) {
	t.Parallel()
	master, replica := startReplicated(t)
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: master.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	waits := &cmdCounter{names: []string{"wait"}}
	rdb.AddHook(waits)
	onReplica := redis.NewClient(&redis.Options{Addr: replica.Addr})
	t.Cleanup(func() { _ = onReplica.Close() })
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: "tl", Partitions: testkit.LedgerPartitions(), WaitReplicas: 1, WaitTimeout: waitTimeout})
	require.NoError(t, l.LoadScripts(ctx))

	evs := []ledger.EventTasks{event("acme", "e1", "f1", "f2"), event("acme", "e2", "f1"), event("umbrella", "e1", "f1")}
	created, err := l.Create(ctx, evs)
	require.NoError(t, err)
	require.EqualValues(t, 1, waits.n.Load(), "one WAIT for the pipeline of three creates")
	for i, c := range created {
		for _, task := range c.Tasks {
			n, err := onReplica.Exists(ctx, l.TaskKey(evs[i].Tenant, task.ID)).Result()
			require.NoError(t, err)
			require.EqualValues(t, 1, n, "task %s is on the replica when Create returns", task.ID)
		}
	}
	one := event("acme", "e3", "f1") // through the group commit
	created, err = l.Create(ctx, []ledger.EventTasks{one})
	require.NoError(t, err)
	require.EqualValues(t, 2, waits.n.Load())
	n, err := onReplica.Exists(ctx, l.TaskKey("acme", created[0].Tasks[0].ID)).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	replica.Kill()
	lost := event("acme", "e4", "f1")
	start := time.Now()
	_, err = l.Create(ctx, []ledger.EventTasks{lost})
	took := time.Since(start)
	require.ErrorIs(t, err, ledger.ErrNotReplicated)
	require.Contains(t, err.Error(), "WAIT 1 1000 on "+master.Addr+" answered 0")
	require.GreaterOrEqual(t, took, waitTimeout)
	require.Less(t, took, waitTimeout+2*time.Second)
	_, err = l.Get(ctx, "acme", lost.Tasks[0].ID)
	require.NoError(t, err, "the unconfirmed task is recorded on the master (its publish guard runs it)")
}

// With redis.wait_replicas 0 no WAIT is sent: the legacy cost.
func TestCreateWithoutWaitReplicasSendsNoWait(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	waits := &cmdCounter{names: []string{"wait"}}
	rdb.AddHook(waits)
	ctx := context.Background()
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
	require.NoError(t, l.LoadScripts(ctx))
	_, err := l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1")})
	require.NoError(t, err)
	_, err = l.Create(ctx, []ledger.EventTasks{event("acme", "e2", "f1"), event("umbrella", "e2", "f1")})
	require.NoError(t, err)
	require.Zero(t, waits.n.Load())
}

// On a Redis Cluster with a replica per master, Create waits on each
// master that owns a created tenant: every task is on that master's
// replica when Create returns. With one replica killed, a create for a
// tenant of its master fails with ErrNotReplicated; one for a tenant of
// another master is still confirmed.
func TestCreateWaitsForReplicaOnCluster(t *testing.T) {
	cl := testkit.StartCluster(t, 3, 1)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), ClusterStateReloadInterval: redisconn.ClusterStateReload})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: "tl", Partitions: 64, WaitReplicas: 1, WaitTimeout: waitTimeout})
	require.NoError(t, l.LoadScripts(ctx))

	replicaOf := func(tenant string) string {
		m, err := rdb.MasterForKey(ctx, l.DelayKey(tenant))
		require.NoError(t, err)
		role, err := m.Do(ctx, "role").Slice()
		require.NoError(t, err)
		replicas := role[2].([]any)
		require.Len(t, replicas, 1)
		r := replicas[0].([]any)
		return fmt.Sprintf("%s:%s", r[0], r[1])
	}
	for _, n := range cl.Nodes() {
		// StartCluster waits for the replicas to attach; a master counts
		// a replica in WAIT once it is online there (its first ack).
		c := redis.NewClient(&redis.Options{Addr: n.Addr})
		testkit.Eventually(t, 10*time.Second, func() bool {
			info, _ := c.Info(ctx, "replication").Result()
			return strings.Contains(info, "role:slave") || strings.Contains(info, "state=online")
		}, "master %s has its replica online", n.Addr)
		_ = c.Close()
	}
	var evs []ledger.EventTasks
	masters := map[string]bool{}
	for i := range 32 { // tenants of many partitions, on every master
		tenant := fmt.Sprintf("t%d", i)
		evs = append(evs, event(tenant, "e1", "f1"))
		m, err := rdb.MasterForKey(ctx, l.DelayKey(tenant))
		require.NoError(t, err)
		masters[m.Options().Addr] = true
	}
	require.Len(t, masters, 3)
	created, err := l.Create(ctx, evs)
	require.NoError(t, err)
	for i, c := range created {
		r := redis.NewClient(&redis.Options{Addr: replicaOf(evs[i].Tenant),
			OnConnect: func(ctx context.Context, cn *redis.Conn) error { return cn.ReadOnly(ctx).Err() }})
		n, err := r.Exists(ctx, l.TaskKey(evs[i].Tenant, c.Tasks[0].ID)).Result()
		_ = r.Close()
		require.NoError(t, err)
		require.EqualValues(t, 1, n, "task %s of %s is on its master's replica when Create returns", c.Tasks[0].ID, evs[i].Tenant)
	}

	gone, other := replicaOf("t0"), ""
	for i := range 32 {
		if tenant := fmt.Sprintf("t%d", i); replicaOf(tenant) != gone {
			other = tenant
			break
		}
	}
	require.NotEmpty(t, other)
	for _, n := range cl.Nodes() {
		if n.Addr == gone {
			cl.Kill(n)
		}
	}
	_, err = l.Create(ctx, []ledger.EventTasks{event("t0", "e2", "f1")})
	require.ErrorIs(t, err, ledger.ErrNotReplicated)
	_, err = l.Create(ctx, []ledger.EventTasks{event(other, "e2", "f1")})
	require.NoError(t, err, "a master with its replica still confirms")
}
