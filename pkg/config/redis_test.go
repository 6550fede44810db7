package config_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
)

func TestRedisClusterSettings(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, doc, want string // want "" for valid
	}{
		{"one Redis", `redis: {url: "redis://r:6379/2"}`, ""},
		{"cluster", `redis: {url: "redis://h1:7000?addr=h2:7001&addr=h3:7002", cluster: true}`, ""},
		{"cluster database 0", `redis: {url: "rediss://u:p@h1:7000/0?addr=h2:7001", cluster: true}`, ""},
		{"wait replicas", `redis: {wait_replicas: 1}`, ""},
		{"seeds without cluster", "redis:\n  url: \"redis://h1:7000?addr=h2:7001&addr=h3:7002\"\n",
			`tasklane.yaml:2:8: redis.url: lists more addresses (addr=h2:7001, addr=h3:7002): that is a Redis Cluster URL; set redis.cluster: true for a cluster, or name one Redis (e.g. redis://127.0.0.1:6379/0)`},
		{"cluster database", "redis:\n  cluster: true\n  url: \"redis://h1:7000/3?addr=h2:7001\"\n",
			`tasklane.yaml:3:8: redis.url: database 3: a Redis Cluster has database 0 only (want e.g. redis://10.0.0.1:6379?addr=10.0.0.2:6379&addr=10.0.0.3:6379)`},
		{"bad seed", "redis:\n  cluster: true\n  url: \"redis://h1:7000?addr=h2\"\n",
			`tasklane.yaml:3:8: redis.url: invalid seed address addr=h2 (want host:port, e.g. redis://10.0.0.1:6379?addr=10.0.0.2:6379&addr=10.0.0.3:6379)`},
		{"negative wait", "redis:\n  wait_replicas: -1\n", `tasklane.yaml:2:18: redis.wait_replicas: must be between 0 and 16, got -1`},
		{"too many replicas", "redis:\n  wait_replicas: 17\n", `tasklane.yaml:2:18: redis.wait_replicas: must be between 0 and 16, got 17`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse(file, []byte(c.doc))
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, c.want)
		})
	}
}

func TestRedisClusterEnv(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	_, err := config.Parse(file, []byte(`redis: {url: "redis://h1:7000?addr=h2:7001"}`))
	require.Error(t, err, "seeds without redis.cluster")

	cfg, err := config.Parse(file, []byte(""))
	require.NoError(t, err)
	cfg.ApplyEnv(env(map[string]string{"TASKLANE_REDIS_URL": "redis://h1:7000?addr=h2:7001", "TASKLANE_REDIS_CLUSTER": "true"}))
	require.True(t, cfg.Redis.Cluster)
	require.NoError(t, cfg.Validate())

	cfg.ApplyEnv(env(map[string]string{"TASKLANE_REDIS_CLUSTER": "false"}))
	require.False(t, cfg.Redis.Cluster)

	cfg, err = config.Parse(file, []byte(""))
	require.NoError(t, err)
	cfg.ApplyEnv(env(map[string]string{"TASKLANE_REDIS_CLUSTER": "yes"}))
	require.EqualError(t, cfg.Validate(), `redis.cluster: want true or false, got "yes" (set by TASKLANE_REDIS_CLUSTER)`)
}

// Serve runs on a Redis Cluster and waits for replicas.
func TestCheckServeAcceptsWaitReplicas(t *testing.T) {
	t.Parallel()
	const rest = "functions: [{name: echo, events: [com.example.echo], endpoint: \"builtin:echo\"}]\n" +
		"tenants: [{id: acme, api_keys: [acme-dev-key]}]\n"
	c, err := config.Parse(file, []byte(rest+"redis:\n  url: \"redis://h1:7000?addr=h2:7001\"\n  cluster: true\n  wait_replicas: 1\n"))
	require.NoError(t, err)
	require.NoError(t, c.CheckServe(false))
}

func TestLedgerPartitions(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	cfg, err := config.Parse(file, []byte(""))
	require.NoError(t, err)
	require.Zero(t, cfg.LedgerPartitions(), "one Redis: the legacy layout")

	cfg, err = config.Parse(file, []byte("ledger: {partitions: 4}"))
	require.NoError(t, err)
	require.Equal(t, 4, cfg.LedgerPartitions())

	cfg, err = config.Parse(file, []byte(`redis: {cluster: true, url: "redis://h1:7000?addr=h2:7001"}`))
	require.NoError(t, err)
	require.Equal(t, config.ClusterPartitionsDefault, cfg.LedgerPartitions(), "0 on a cluster")

	for _, bad := range []string{"-1", "1025"} {
		_, err = config.Parse(file, []byte("ledger: {partitions: "+bad+"}"))
		require.ErrorContains(t, err, "ledger.partitions: must be between 1 and 1024, got "+bad)
	}

	cfg, err = config.Parse(file, []byte(""))
	require.NoError(t, err)
	cfg.ApplyEnv(env(map[string]string{"TASKLANE_LEDGER_PARTITIONS": "16"}))
	require.NoError(t, cfg.Validate())
	require.Equal(t, 16, cfg.LedgerPartitions())
	cfg.ApplyEnv(env(map[string]string{"TASKLANE_LEDGER_PARTITIONS": "many"}))
	require.EqualError(t, cfg.Validate(), `ledger.partitions: want a whole number, got "many" (set by TASKLANE_LEDGER_PARTITIONS)`)
}
