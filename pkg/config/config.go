package config

import (
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"time"

	"github.com/tasklane/tasklane/contracts"
)

// DefaultTenant is the implicit tenant when no tenants are configured (dev
// only: there is no authentication then).
const DefaultTenant = "default"

// Defaults, bounds and allowed values. A zero value in the file (or in a Config
// built in Go) means "use the default", except where a field says otherwise.
const (
	// AddrDefault is the default Server.Addr.
	AddrDefault = "127.0.0.1:8080"
	// MaxEventBytesDefault is the default Server.MaxEventBytes.
	MaxEventBytesDefault int64 = 64 << 10
	// MaxEventBytesMax bounds Server.MaxEventBytes: well under RabbitMQ's
	// max_message_size (16 MiB by default since 4.0), so an event the API
	// takes is a message the broker takes.
	MaxEventBytesMax int64 = 8 << 20
	// MaxBatchBytesDefault is the default Server.MaxBatchBytes.
	MaxBatchBytesDefault int64 = 4 << 20
	// MaxBatchEventsDefault is the default Server.MaxBatchEvents.
	MaxBatchEventsDefault = 1000
	// BulkSyncMaxDefault is the default Server.BulkSyncMax.
	BulkSyncMaxDefault = contracts.BulkSyncMaxDefault
	// WriteTimeoutDefault is the default Server.WriteTimeout.
	WriteTimeoutDefault = Duration(30 * time.Second)
	// MaxHeaderBytesDefault is the default Server.MaxHeaderBytes.
	MaxHeaderBytesDefault = 32 << 10
	// MaxHeaderBytesMin is the smallest Server.MaxHeaderBytes.
	MaxHeaderBytesMin = 4 << 10
	// MaxHeaderBytesMax is the largest Server.MaxHeaderBytes. Binary-mode
	// CloudEvent headers travel on as AMQP headers, which must fit in one
	// RabbitMQ frame (frame_max, 128 KiB by default) with the rest of the
	// message's properties.
	MaxHeaderBytesMax = 64 << 10

	// BrokerDriverAMQP selects RabbitMQ.
	BrokerDriverAMQP = "amqp"
	// BrokerDriverRedisStream selects Redis streams (Broker.URL is ignored and
	// Redis.URL is used).
	BrokerDriverRedisStream = "redisstream"
	// BrokerDriverDefault is the default Broker.Driver.
	BrokerDriverDefault = BrokerDriverAMQP
	// AMQPURLDefault is the default Broker.URL for the amqp driver.
	AMQPURLDefault = "amqp://guest:guest@127.0.0.1:5672/"
	// PublishChannelsDefault is the default Broker.PublishChannels.
	PublishChannelsDefault = 16
	// BrokerPrefixDefault is the default Broker.Prefix.
	BrokerPrefixDefault = "tasklane"
	// PublishChannelsMin is the smallest Broker.PublishChannels.
	PublishChannelsMin = 1
	// PublishChannelsMax is the largest Broker.PublishChannels.
	PublishChannelsMax = 1024
	// PrefetchDefault is the default Broker.Prefetch.
	PrefetchDefault = 256
	// PrefetchMin is the smallest Broker.Prefetch.
	PrefetchMin = 1
	// PrefetchMax is the largest Broker.Prefetch.
	PrefetchMax = 4096

	// RedisURLDefault is the default Redis.URL.
	RedisURLDefault = "redis://127.0.0.1:6379/0"
	// WaitReplicasMax is the largest Redis.WaitReplicas.
	WaitReplicasMax = 16
	// PartitionsMax is the largest Ledger.Partitions.
	PartitionsMax = 1024
	// ClusterPartitionsDefault is the partition count of a ledger on a
	// Redis Cluster when Ledger.Partitions is 0.
	ClusterPartitionsDefault = 64

	// LanesSharedDefault is the default Lanes.Shared.
	LanesSharedDefault = 16
	// LanesSharedMin is the smallest Lanes.Shared.
	LanesSharedMin = 1
	// LanesSharedMax is the largest Lanes.Shared.
	LanesSharedMax = 999
	// ShardSizeDefault is the default Lanes.ShardSize.
	ShardSizeDefault = 2
	// ShardSizeMin is the smallest Lanes.ShardSize (the largest is Lanes.Shared).
	ShardSizeMin = 1
	// QueueTypeClassic is a classic RabbitMQ queue (supports priorities).
	QueueTypeClassic = "classic"
	// QueueTypeQuorum is a replicated RabbitMQ quorum queue.
	QueueTypeQuorum = "quorum"
	// QueueTypeDefault is the default Lanes.QueueType.
	QueueTypeDefault = QueueTypeClassic

	// ConsumersPerLaneDefault is the default Dispatcher.ConsumersPerLane.
	ConsumersPerLaneDefault = 16
	// ConsumersPerLaneMin is the smallest Dispatcher.ConsumersPerLane.
	ConsumersPerLaneMin = 1
	// ConsumersPerLaneMax is the largest Dispatcher.ConsumersPerLane.
	ConsumersPerLaneMax = 256
	// NotifierConsumersDefault is the default Notifier.Consumers.
	NotifierConsumersDefault = 32
	// NotifierConsumersMax is the largest Notifier.Consumers.
	NotifierConsumersMax = 256
	// SinkTimeoutDefault is the default Notifier.SinkTimeout.
	SinkTimeoutDefault = Duration(10 * time.Second)
	// SinkTimeoutMax is the largest Notifier.SinkTimeout.
	SinkTimeoutMax = Duration(5 * time.Minute)
	// SinkAttemptsDefault is the default Notifier.SinkAttempts.
	SinkAttemptsDefault = 10
	// SinkAttemptsMax is the largest Notifier.SinkAttempts.
	SinkAttemptsMax = 100
	// SinkConcurrencyDefault is the default Notifier.SinkConcurrency.
	SinkConcurrencyDefault = 8
	// SinkConcurrencyMax is the largest Notifier.SinkConcurrency.
	SinkConcurrencyMax = 256
	// SinkBacklogDefault is the default Notifier.SinkBacklog.
	SinkBacklogDefault = 10_000
	// SinkBacklogMax is the largest Notifier.SinkBacklog.
	SinkBacklogMax = 1_000_000
	// LeaseTTLDefault is the default Dispatcher.LeaseTTL.
	LeaseTTLDefault = Duration(15 * time.Second)
	// LeaseTTLMin is the smallest Dispatcher.LeaseTTL.
	LeaseTTLMin = Duration(time.Second)
	// AdaptiveIntervalDefault is the default Adaptive.Interval.
	AdaptiveIntervalDefault = Duration(time.Second)
	// AdaptiveIntervalMin and AdaptiveIntervalMax bound Adaptive.Interval.
	AdaptiveIntervalMin = Duration(10 * time.Millisecond)
	AdaptiveIntervalMax = Duration(time.Minute)
	// DrainTimeoutDefault is the default Dispatcher.DrainTimeout.
	DrainTimeoutDefault = Duration(30 * time.Second)
	// MaxResultBytesDefault is the default Dispatcher.MaxResultBytes.
	MaxResultBytesDefault int64 = 64 << 10
	// MaxRunningDefault is the default Dispatcher.MaxRunning.
	MaxRunningDefault = 256
	// MaxRunningMax is the largest Dispatcher.MaxRunning.
	MaxRunningMax = 10000
	// AdaptiveMaxMax is the largest Adaptive.Max.
	AdaptiveMaxMax = 100000
	// AdaptiveIncreaseDefault is the default Adaptive.Increase.
	AdaptiveIncreaseDefault = 1
	// AdaptiveDecreaseDefault is the default Adaptive.Decrease.
	AdaptiveDecreaseDefault = 0.7
	// AdaptiveErrorRateDefault is the default Adaptive.ErrorRate.
	AdaptiveErrorRateDefault = 0.1
	// AdaptiveErrorCountDefault is the default Adaptive.ErrorCount.
	AdaptiveErrorCountDefault = 5
	// AdaptiveErrorCountMax is the largest Adaptive.ErrorCount.
	AdaptiveErrorCountMax = 1_000_000

	// RetentionDefault is the default Ledger.Retention: a day, so that a
	// steady load's finished records fit in RAM (decision 0019); longer
	// history belongs in a results sink.
	RetentionDefault = Duration(24 * time.Hour)
	// DeadRetentionDefault is the default Ledger.DeadRetention: dead tasks
	// wait for a person, and are few.
	DeadRetentionDefault = Duration(720 * time.Hour)
	// DedupWindowDefault is the default Ledger.DedupWindow (at most the
	// retentions: see WithDefaults).
	DedupWindowDefault = Duration(24 * time.Hour)
	// PublishGuardDefault is the default Ledger.PublishGuard.
	PublishGuardDefault = Duration(30 * time.Second)
	// KeyPrefixDefault is the default Ledger.KeyPrefix.
	KeyPrefixDefault = "tl"

	// RoutingWindowDefault is the default Routing.Window.
	RoutingWindowDefault = Duration(2 * time.Second)
	// HotShareDefault is the default Routing.HotShare.
	HotShareDefault = 0.25
	// HotBacklogDefault is the default Routing.HotBacklog.
	HotBacklogDefault = 200
	// CooldownDefault is the default Routing.Cooldown.
	CooldownDefault = Duration(30 * time.Second)
	// MaxDedicatedDefault is the default Routing.MaxDedicated.
	MaxDedicatedDefault = 16
	// LaneGraceDefault is the default Routing.LaneGrace.
	LaneGraceDefault = Duration(60 * time.Second)

	// FunctionTimeoutDefault is the default Function.Timeout.
	FunctionTimeoutDefault = Duration(30 * time.Second)
	// FunctionTimeoutMax is the largest Function.Timeout.
	FunctionTimeoutMax = Duration(24 * time.Hour)
	// MaxAttemptsDefault is the default Retry.MaxAttempts.
	MaxAttemptsDefault = 3
	// MaxAttemptsMin is the smallest Retry.MaxAttempts (no retry).
	MaxAttemptsMin = 1
	// MaxAttemptsMax is the largest Retry.MaxAttempts.
	MaxAttemptsMax = 100
	// MaxThrottledDefault is the default Retry.MaxThrottled.
	MaxThrottledDefault = 20
	// MaxThrottledMax is the largest Retry.MaxThrottled.
	MaxThrottledMax = 1000
	// InitialBackoffDefault is the default Retry.InitialBackoff.
	InitialBackoffDefault = Duration(time.Second)
	// MaxBackoffDefault is the default Retry.MaxBackoff.
	MaxBackoffDefault = Duration(5 * time.Minute)

	// EndpointEcho is the built-in function that succeeds with the event's
	// data as its result.
	EndpointEcho = "builtin:echo"
	// EndpointNoop is the built-in function that succeeds with no result.
	EndpointNoop = "builtin:noop"
	// EndpointGoPrefix prefixes the name of a Go function registered in process
	// ("go:<name>").
	EndpointGoPrefix = "go:"
)

// Config is the whole tasklane configuration file.
type Config struct {
	// Server configures the HTTP API and probes.
	Server Server `yaml:"server"`
	// Broker selects and configures the message broker.
	Broker Broker `yaml:"broker"`
	// Redis configures the Redis store (task ledger, and the broker when
	// Broker.Driver is "redisstream").
	Redis Redis `yaml:"redis"`
	// Lanes configures the broker queues tasks are sharded over.
	Lanes Lanes `yaml:"lanes"`
	// Dispatcher configures the role that calls functions.
	Dispatcher Dispatcher `yaml:"dispatcher"`
	// Admission bounds what the gateway accepts across all tenants.
	Admission Admission `yaml:"admission"`
	// Notifier configures the role that sends result events.
	Notifier Notifier `yaml:"notifier"`
	// Routing configures the routing controller (hot tenants to dedicated
	// lanes and back).
	Routing Routing `yaml:"routing"`
	// Ledger configures task record retention and deduplication.
	Ledger Ledger `yaml:"ledger"`
	// Tenants are the API clients. Default none: one implicit tenant
	// DefaultTenant ("default") and no authentication (dev only).
	Tenants []Tenant `yaml:"tenants"`
	// Functions are the functions events are dispatched to. Default none.
	Functions []Function `yaml:"functions"`
	// Subscriptions receive result events. Default none.
	Subscriptions []Subscription `yaml:"subscriptions"`
	// Triggers turn schedules, webhooks and object-store changes into
	// events. Default none.
	Triggers []Trigger `yaml:"triggers"`
	// Telemetry configures OpenTelemetry tracing. Default: as the standard
	// OTEL_* variables say (off when they name no endpoint).
	Telemetry Telemetry `yaml:"telemetry"`

	// File is the path the config was loaded from, for messages. Empty for a
	// Config built in Go.
	File string `yaml:"-"`

	// pos maps field paths to where they were found in File (see decode.go).
	pos map[string]position
	// env maps field paths set by ApplyEnv to the variable that set them.
	env map[string]string
	// envBad maps field paths to the values ApplyEnv could not read
	// (Validate reports them).
	envBad map[string]string
}

// Server configures the HTTP API.
type Server struct {
	// Addr is the listen address. Default "127.0.0.1:8080" (loopback: set
	// ":8080" or a host to listen beyond it, as containers do).
	Addr string `yaml:"addr"`
	// MaxEventBytes bounds one submitted event whole: every attribute and
	// extension (name and value) plus the data, in every content mode and
	// from triggers (413 above it). Default 65536 (64 KiB); at most 8388608
	// (8 MiB). Attributes and extensions also travel in the lane message's
	// headers: a value above RabbitMQ's frame_max (131072 by default) lets
	// through events whose attributes the broker refuses; those get 413 too.
	MaxEventBytes int64 `yaml:"max_event_bytes"`
	// MaxBatchBytes bounds one batch request body. Default 4194304 (4 MiB), or
	// MaxEventBytes when that is larger; at least MaxEventBytes.
	MaxBatchBytes int64 `yaml:"max_batch_bytes"`
	// MaxBatchEvents bounds the events in one batch. Default 1000.
	MaxBatchEvents int `yaml:"max_batch_events"`
	// BulkSyncMax is how many matching tasks a bulk call (POST
	// /v1/tasks/cancel, /v1/dlq/redrive, /v1/dlq/purge) handles in the
	// request; a larger selection is answered 202 with a job that runs in
	// the background (GET /v1/jobs/{id}). Default 10000.
	BulkSyncMax int `yaml:"bulk_sync_max"`
	// AdminKeys authorize admin operations; each is a plain secret (at least 8
	// characters) or "sha256:" + 64 hex digits. Default none.
	AdminKeys []string `yaml:"admin_keys"`
	// WriteTimeout bounds writing one response, counted from the end of
	// reading the request's headers (so it also bounds reading the body and
	// handling the request): a client that reads slowly, or not at all,
	// holds a connection no longer. No route streams or long-polls.
	// Default 30s.
	WriteTimeout Duration `yaml:"write_timeout"`
	// MaxHeaderBytes bounds a request's header lines (431 above it). Default
	// 32768 (32 KiB), range 4096..65536: headers become AMQP message
	// headers, which must stay well below RabbitMQ's frame size.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MetricsAddr, when set, is a second listen address that serves
	// /metrics, /healthz and /readyz without a key (an internal address for
	// Prometheus). Default none: /metrics is then on Addr only, where it
	// needs an admin key once tenants are configured.
	MetricsAddr string `yaml:"metrics_addr"`
}

// Broker selects the message broker.
type Broker struct {
	// Driver is "amqp" (default) or "redisstream".
	Driver string `yaml:"driver"`
	// URL is the RabbitMQ URL for the amqp driver. Default
	// "amqp://guest:guest@127.0.0.1:5672/". Ignored by redisstream, which uses
	// Redis.URL.
	URL string `yaml:"url"`
	// PublishChannels is the number of AMQP channels publishes are spread over;
	// each carries many unconfirmed publishes at once. Default 16,
	// range 1..1024.
	PublishChannels int `yaml:"publish_channels"`
	// Prefetch is how many unacknowledged deliveries a dispatcher's
	// consumer of one lane may hold on the amqp driver (one consumer and
	// one channel per lane per dispatcher, whatever
	// dispatcher.consumers_per_lane). Default 256, range 1..4096. Ignored
	// by redisstream.
	Prefetch int `yaml:"prefetch"`
	// Prefix starts every exchange, queue and stream name the broker uses
	// (lanes "<prefix>.lane.shared.NN" and "<prefix>.lane.tenant.<tenant>",
	// "<prefix>.quarantine", the results exchange or stream
	// "<prefix>.results"), so several deployments can share a RabbitMQ
	// (or, on redisstream, a Redis). Default "tasklane"; 1 to 64 letters,
	// digits, '-', '_' or '.'.
	Prefix string `yaml:"prefix"`
}

// Redis configures the Redis connection.
type Redis struct {
	// URL is a redis:// or rediss:// URL. Default "redis://127.0.0.1:6379/0".
	// For a Redis Cluster (Cluster true) it is go-redis's cluster form,
	// "redis://h1:p1?addr=h2:p2&addr=h3:p3": every address a seed node,
	// database 0 only.
	URL string `yaml:"url"`
	// Cluster says that URL names a Redis Cluster. Default false: one Redis
	// (standalone, or a master with replicas). The start-up checks that the
	// server agrees. `serve` refuses true for now: the ledger's scripts
	// span cluster slots (docs/decisions/0017-ledger-on-redis-cluster.md).
	Cluster bool `yaml:"cluster"`
	// WaitReplicas, when positive, is the number of replicas that must
	// have a new task's ledger writes (Redis WAIT) before its 202: a
	// failover then loses no accepted task. Default 0 (off), range
	// 0..WaitReplicasMax. A create that WAIT does not confirm within
	// ledger.WaitTimeoutDefault (1 s) is answered 503.
	WaitReplicas int `yaml:"wait_replicas"`
}

// Lanes configures the queues tasks are sharded over.
type Lanes struct {
	// Shared is the number of shared lanes. Default 16, range 1..999.
	Shared int `yaml:"shared"`
	// ShardSize is the number of lanes one function is spread over. Default 2
	// (1 when Shared is 1), range 1..Shared.
	ShardSize int `yaml:"shard_size"`
	// QueueType is "classic" (default) or "quorum".
	QueueType string `yaml:"queue_type"`
}

// Notifier configures the role that sends result events.
type Notifier struct {
	// Consumers is the number of results-outbox entries a notifier process
	// handles at once (each waits for its result publish to be confirmed and
	// to be queued for its sinks). Default 32, range 1..256.
	Consumers int `yaml:"consumers"`
	// SinkTimeout bounds one delivery attempt to a sink. Default 10s, at
	// most 5m.
	SinkTimeout Duration `yaml:"sink_timeout"`
	// SinkAttempts bounds the attempts of one result to one sink (then it
	// is logged and dropped). Default 10, range 1..100.
	SinkAttempts int `yaml:"sink_attempts"`
	// SinkConcurrency bounds the attempts to one sink a notifier process
	// has in flight. Default 8, range 1..256.
	SinkConcurrency int `yaml:"sink_concurrency"`
	// SinkBacklog bounds the deliveries queued in Redis for one sink
	// (waiting for a retry or a free attempt); a result that finds its
	// sink's queue full is not sent to that sink. Default 10000, range
	// 1..1000000.
	SinkBacklog int `yaml:"sink_backlog"`
}

// Dispatcher configures the role that calls functions.
type Dispatcher struct {
	// ConsumersPerLane is how many deliveries of each lane a dispatcher
	// process admits into the ready queues at once (Watermill handlers in
	// process). It creates no broker consumers or channels: a process is
	// one consumer of each lane on either driver (broker.prefetch bounds
	// what that consumer holds on amqp). Default 16, range 1..256.
	ConsumersPerLane int `yaml:"consumers_per_lane"`
	// LeaseTTL is how long a running task's lease lasts before it is renewed.
	// Default 15s, at least 1s.
	LeaseTTL Duration `yaml:"lease_ttl"`
	// DrainTimeout bounds how long shutdown waits for running tasks. Default 30s.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// MaxResultBytes bounds the result kept from a function's answer. Default
	// 65536 (64 KiB).
	MaxResultBytes int64 `yaml:"max_result_bytes"`
	// MaxRunning bounds the attempts one dispatcher process runs at once,
	// across all functions. Default 256, range 1..10000.
	MaxRunning int `yaml:"max_running"`
	// ReservedHigh is the share of each limited function's running slots
	// (its concurrency, or its adaptive limit) that only tasks of priority
	// 7 and above may use, so urgent work keeps headroom. Default 0, range
	// [0, 1).
	ReservedHigh float64 `yaml:"reserved_high"`
}

// Telemetry configures OpenTelemetry tracing (exported over OTLP). Fields
// left unset defer to the standard OTEL_* variables.
type Telemetry struct {
	// Enabled turns tracing on or off whatever the variables say; unset:
	// on when Endpoint or OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set.
	Enabled *bool `yaml:"enabled"`
	// Endpoint is the OTLP collector's base URL, as
	// OTEL_EXPORTER_OTLP_ENDPOINT (http/protobuf sends to <url>/v1/traces).
	Endpoint string `yaml:"endpoint"`
	// Protocol is TelemetryHTTP or TelemetryGRPC; unset:
	// OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf.
	Protocol string `yaml:"protocol"`
	// SampleRatio is the share of new traces sampled, in [0, 1]
	// (parent-based: a client's sampling decision is followed); unset:
	// OTEL_TRACES_SAMPLER, else 1.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName is the spans' service.name; unset: OTEL_SERVICE_NAME,
	// else "tasklane".
	ServiceName string `yaml:"service_name"`
}

// OTLP protocols of telemetry.protocol.
const (
	TelemetryHTTP = "http/protobuf"
	TelemetryGRPC = "grpc"
)

// Routing configures the routing controller.
type Routing struct {
	// Window is the heavy-hitter measurement window. Default 2s.
	Window Duration `yaml:"window"`
	// HotShare is the share of all submitted tasks above which a tenant is
	// hot. Default 0.25, range (0, 1].
	HotShare float64 `yaml:"hot_share"`
	// HotBacklog is the backlog of a hot tenant's shard lanes (tasks waiting)
	// above which it is moved to a dedicated lane. Default 200.
	HotBacklog int64 `yaml:"hot_backlog"`
	// Cooldown is how long a tenant on a dedicated lane must stay below half
	// of HotShare, with its lane empty, before it moves back. Default 30s.
	Cooldown Duration `yaml:"cooldown"`
	// MaxDedicated caps the dedicated lanes, so a flood of tenants cannot
	// create thousands of queues. Default 16, range 0..1000.
	MaxDedicated int `yaml:"max_dedicated"`
	// LaneGrace is how long a lane given up by a merge is still consumed
	// before it is deleted (if empty). Default 60s.
	LaneGrace Duration `yaml:"lane_grace"`
}

// Ledger configures the task record store.
type Ledger struct {
	// Retention is how long finished task records (succeeded, failed,
	// cancelled, expired) are kept. Default 24h, or dedup_window when that
	// is set longer. At least dedup_window.
	Retention Duration `yaml:"retention"`
	// DedupWindow is how long an event's id+source is remembered for
	// deduplication. Default 24h, or the shorter retention when one is set
	// shorter. At most retention and dead_retention, so a duplicate never
	// names a task that is gone.
	DedupWindow Duration `yaml:"dedup_window"`
	// DeadRetention is how long dead-lettered tasks are kept for inspection
	// and redrive (unless purged). Default 720h (30 days). At least
	// dedup_window.
	DeadRetention Duration `yaml:"dead_retention"`
	// PublishGuard is how long a recorded-but-unconfirmed task waits before it
	// is republished. Default 30s.
	PublishGuard Duration `yaml:"publish_guard"`
	// KeyPrefix starts every Redis key of the ledger (and names the
	// redisstream dispatcher group "<key_prefix>-dispatchers"), so several
	// deployments can share one Redis database. Default "tl"; letters,
	// digits, "-", "_" and "." only.
	KeyPrefix string `yaml:"key_prefix"`
	// Partitions selects the ledger's key layout
	// (docs/decisions/0017-ledger-on-redis-cluster.md). 0 (the default) on
	// one Redis is the layout of every release before it: tenant keys
	// "<key_prefix>:{<tenant>}:...", one delay set, expiry set and results
	// outbox. 1..PartitionsMax spreads tenants over that many partitions,
	// each with its own hash tag, delay set, expiry set and outbox, so that
	// a task's changes stay in one Redis Cluster slot; 0 with
	// redis.cluster: true means ClusterPartitionsDefault (see
	// [Config.LedgerPartitions]). Fixed for the life of a deployment: a
	// changed count moves every tenant's keys (a migration).
	Partitions int `yaml:"partitions"`
}

// LedgerPartitions is the partition count the ledger runs with:
// Ledger.Partitions, or ClusterPartitionsDefault on a Redis Cluster when
// it is 0.
func (c *Config) LedgerPartitions() int {
	if c.Ledger.Partitions == 0 && c.Redis.Cluster {
		return ClusterPartitionsDefault
	}
	return c.Ledger.Partitions
}

// Tenant is an API client.
type Tenant struct {
	// ID names the tenant. Required, matching ^[a-z0-9][a-z0-9_-]{0,63}$, unique.
	ID string `yaml:"id"`
	// APIKeys are the tenant's bearer tokens. Required (at least one); each is a
	// plain secret (at least 8 characters, no white space) or "sha256:" + 64 hex
	// digits of the secret's SHA-256. A key may belong to one tenant only.
	APIKeys []string `yaml:"api_keys"`
	// LatencySensitive tenants are kept off lanes with backlog: each task
	// goes to the least-loaded shared lane, not only of its shard. Default
	// false.
	LatencySensitive bool `yaml:"latency_sensitive"`
	// Rate caps how many of the tenant's tasks start per second, across all
	// its functions and the whole cluster. Default 0: no limit.
	Rate float64 `yaml:"rate"`
	// Burst is how many may start at once within Rate. Default: Rate rounded
	// up, at least 1.
	Burst int `yaml:"burst"`
	// Concurrency bounds the tenant's running attempts across all its
	// functions and the whole cluster. Default 0: no limit.
	Concurrency int `yaml:"concurrency"`
	// MaxBacklog is the number of the tenant's waiting tasks (queued or
	// waiting to retry) above which its submissions are refused with 429
	// and Retry-After. Default 0: no limit.
	MaxBacklog int64 `yaml:"max_backlog"`
}

// Function is a target events are dispatched to.
type Function struct {
	// Name identifies the function. Required, unique, matching
	// ^[a-z0-9][a-z0-9._-]{0,63}$.
	Name string `yaml:"name"`
	// Events are the event types (exact match) that run the function.
	// Required: at least one, none empty.
	Events []string `yaml:"events"`
	// Endpoint is what is called: an http:// or https:// URL with a host,
	// "builtin:echo", "builtin:noop", or "go:<name>". Required.
	Endpoint string `yaml:"endpoint"`
	// Timeout bounds one attempt. Default 30s, at most 24h.
	Timeout Duration `yaml:"timeout"`
	// Concurrency bounds the function's running tasks. Default 0: unlimited;
	// never negative.
	Concurrency int `yaml:"concurrency"`
	// Rate caps how many of the function's tasks start per second across the
	// cluster. Default 0: no limit.
	Rate float64 `yaml:"rate"`
	// Burst is how many may start at once within Rate. Default: Rate rounded
	// up, at least 1.
	Burst int `yaml:"burst"`
	// Adaptive, when set, makes the function's concurrency limit adapt to
	// what it answers (AIMD, cluster-wide): it starts at Min, grows while
	// the function has a backlog and runs at its limit unthrottled, and
	// shrinks when throttled answers (429, 503) pass both thresholds in an
	// interval. It never exceeds Concurrency when that is set too.
	Adaptive *Adaptive `yaml:"adaptive"`
	// Retry is the retry policy.
	Retry Retry `yaml:"retry"`
	// Tenants, when set, restricts the function to these tenants' events; each
	// must name a configured tenant ("default" when none are configured).
	// Default none: every tenant.
	Tenants []string `yaml:"tenants"`
	// DeadLetter keeps a task that failed for good in the dead-letter queue
	// (state dead, listed, redrivable) instead of ending it failed. Default
	// true.
	DeadLetter *bool `yaml:"dead_letter"`
}

// Subscription delivers result events to a sink.
type Subscription struct {
	// Name identifies the subscription. Required, unique.
	Name string `yaml:"name"`
	// Sink is the http:// or https:// URL result events are POSTed to. Required.
	Sink string `yaml:"sink"`
	// Filter selects the result events delivered. Default: all.
	Filter Filter `yaml:"filter"`
}

// Filter selects result events. Every non-empty list must match; an empty list
// matches all.
type Filter struct {
	// Types are result event types, e.g. "io.tasklane.task.failed". Default all.
	Types []string `yaml:"types"`
	// Tenants are configured tenant ids. Default all.
	Tenants []string `yaml:"tenants"`
	// Functions are configured function names. Default all.
	Functions []string `yaml:"functions"`
}

// Load reads the file at path and parses it with [Parse].
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes data strictly, applies defaults and validates the result. file
// names data in messages. An empty document is valid: every field takes its
// default. Defaults fill absent (or null) fields only: a zero written in the
// file, such as "max_attempts: 0", is validated as written. On error the Config is nil and the error joins one [*Error] per
// problem.
func Parse(file string, data []byte) (*Config, error) {
	root, perr := parseYAML(file, data)
	if perr != nil {
		return nil, perr
	}
	d := newDecoder(file)
	var c Config
	if root != nil {
		d.decodeRoot(root, &c)
	}
	c.File = file
	c.pos = d.pos
	out := c.WithDefaults()
	d.keepExplicitZeros("", reflect.ValueOf(&c).Elem(), reflect.ValueOf(out).Elem())

	errs := d.errs
	if d.budget >= 0 { // else decoding stopped half way: validating is moot
		for _, e := range out.validate() {
			if !d.isBad(e.Field) {
				errs = append(errs, e)
			}
		}
	}
	if err := joinErrors(errs, d.dropped); err != nil {
		return nil, err
	}
	return out, nil
}

// TenantIDs returns the configured tenant ids in config order, or
// [DefaultTenant] alone when none are configured.
func (c *Config) TenantIDs() []string {
	if len(c.Tenants) == 0 {
		return []string{DefaultTenant}
	}
	ids := make([]string, len(c.Tenants))
	for i, t := range c.Tenants {
		ids[i] = t.ID
	}
	return ids
}

// FunctionsFor returns, in config order, the functions that eventType (exact
// match) runs for tenant: those listing the type in Events whose Tenants is
// empty or contains tenant. The pointers refer into c.Functions.
func (c *Config) FunctionsFor(tenant, eventType string) []*Function {
	var out []*Function
	for i := range c.Functions {
		f := &c.Functions[i]
		if !slices.Contains(f.Events, eventType) {
			continue
		}
		if len(f.Tenants) > 0 && !slices.Contains(f.Tenants, tenant) {
			continue
		}
		out = append(out, f)
	}
	return out
}

// Function returns the function named name, or nil. The pointer refers into
// c.Functions.
func (c *Config) Function(name string) *Function {
	for i := range c.Functions {
		if c.Functions[i].Name == name {
			return &c.Functions[i]
		}
	}
	return nil
}

// BurstFor is the burst allowed with rate when none is configured.
func BurstFor(rate float64, burst int) int {
	if burst > 0 {
		return burst
	}
	return max(1, int(math.Ceil(rate)))
}

// DeadLetters reports whether f's unsuccessful tasks go to the dead-letter
// queue (the default) rather than end failed.
func (f *Function) DeadLetters() bool { return f.DeadLetter == nil || *f.DeadLetter }
