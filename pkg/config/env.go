package config

import (
	"maps"
	"strconv"
)

// Environment variables read by [Config.ApplyEnv].
const (
	// EnvAddr overrides Server.Addr.
	EnvAddr = "TASKLANE_ADDR"
	// EnvAMQPURL overrides Broker.URL.
	EnvAMQPURL = "TASKLANE_AMQP_URL"
	// EnvRedisURL overrides Redis.URL.
	EnvRedisURL = "TASKLANE_REDIS_URL"
	// EnvRedisCluster overrides Redis.Cluster: "true" or "false" (any
	// form strconv.ParseBool reads).
	EnvRedisCluster = "TASKLANE_REDIS_CLUSTER"
	// EnvLedgerPartitions overrides Ledger.Partitions: a whole number.
	EnvLedgerPartitions = "TASKLANE_LEDGER_PARTITIONS"
)

// ApplyEnv overrides Server.Addr, Broker.URL, Redis.URL, Redis.Cluster and
// Ledger.Partitions from TASKLANE_ADDR, TASKLANE_AMQP_URL,
// TASKLANE_REDIS_URL, TASKLANE_REDIS_CLUSTER and TASKLANE_LEDGER_PARTITIONS
// when getenv returns a non-empty value for them. Pass [os.Getenv]; tests
// pass a map lookup. Call Validate afterwards to check the overridden
// values (a TASKLANE_REDIS_CLUSTER that is not a boolean, or a
// TASKLANE_LEDGER_PARTITIONS that is not a number, is reported there).
func (c *Config) ApplyEnv(getenv func(string) string) {
	for _, o := range []struct {
		name, path string
		field      *string
	}{
		{EnvAddr, "server.addr", &c.Server.Addr},
		{EnvAMQPURL, "broker.url", &c.Broker.URL},
		{EnvRedisURL, "redis.url", &c.Redis.URL},
	} {
		v := getenv(o.name)
		if v == "" {
			continue
		}
		*o.field = v
		c.setByEnv(o.path, o.name)
	}
	if v := getenv(EnvRedisCluster); v != "" {
		if b, err := strconv.ParseBool(v); err == nil {
			c.Redis.Cluster = b
		} else {
			c.markEnvBad("redis.cluster", v)
		}
		c.setByEnv("redis.cluster", EnvRedisCluster)
	}
	if v := getenv(EnvLedgerPartitions); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			c.Ledger.Partitions = n
		} else {
			c.markEnvBad("ledger.partitions", v)
		}
		c.setByEnv("ledger.partitions", EnvLedgerPartitions)
	}
}

// markEnvBad records that ApplyEnv could not read value for path.
func (c *Config) markEnvBad(path, value string) { c.envBad = withEntry(c.envBad, path, value) }

// setByEnv records that variable name set path.
func (c *Config) setByEnv(path, name string) { c.env = withEntry(c.env, path, name) }

// withEntry is m with key set to value, copied on write: copies made by
// WithDefaults share the maps.
func withEntry(m map[string]string, key, value string) map[string]string {
	m = maps.Clone(m)
	if m == nil {
		m = map[string]string{}
	}
	m[key] = value
	return m
}
