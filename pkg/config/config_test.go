package config_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/tasklane/tasklane/pkg/config"
)

const file = "tasklane.yaml"

// problems unwraps the joined error of Parse or Validate into its *config.Error
// values, requiring that every joined error is one.
func problems(t testing.TB, err error) []*config.Error {
	t.Helper()
	require.Error(t, err)
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	out := make([]*config.Error, 0, len(errs))
	for _, e := range errs {
		var ce *config.Error
		require.ErrorAs(t, e, &ce)
		out = append(out, ce)
	}
	return out
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestParseErrors(t *testing.T) {
	t.Parallel()

	// Every case asserts the whole error text: one line per problem.
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{
			name: "UnknownKeyInListItem",
			yaml: `server:
  addr: ":8080"
functions:
  - name: thumbnail
    events: [com.example.image.uploaded]
    timeout: 30s
    endpiont: http://127.0.0.1:9000/thumbnail
`,
			want: `tasklane.yaml:7:5: functions[0].endpiont: unknown key (did you mean "endpoint"?)`,
		},
		{
			name: "UnknownKeyNested",
			yaml: `functions:
  - name: thumbnail
    events: [a]
    endpoint: builtin:echo
    retry: {maxAttempts: 4}
`,
			want: `tasklane.yaml:5:13: functions[0].retry.maxAttempts: unknown key (did you mean "max_attempts"?)`,
		},
		{
			name: "UnknownKeyNoSuggestion",
			yaml: `lanes:
  shared: 4
  colour: blue
`,
			want: `tasklane.yaml:3:3: lanes.colour: unknown key (known keys: shared, shard_size, queue_type)`,
		},
		{
			name: "UnknownTopLevelKey",
			yaml: `sever: {addr: ":80"}`,
			want: `tasklane.yaml:1:1: sever: unknown key (did you mean "server"?)`,
		},
		{
			name: "StringForInt",
			yaml: `lanes:
  shared: sixteen
`,
			want: `tasklane.yaml:2:11: lanes.shared: expected an integer, got "sixteen"`,
		},
		{
			name: "StringForBool",
			yaml: `functions: [{name: f, events: [t], endpoint: "builtin:noop", dead_letter: maybe}]`,
			want: `tasklane.yaml:1:75: functions[0].dead_letter: expected true or false, got "maybe"`,
		},
		{
			name: "MaxThrottledOutOfRange",
			yaml: `functions: [{name: f, events: [t], endpoint: "builtin:noop", retry: {max_throttled: 5000}}]`,
			want: `tasklane.yaml:1:85: functions[0].retry.max_throttled: must be between 0 and 1000, got 5000`,
		},
		{
			name: "QuotedNumberForInt",
			yaml: `server: {max_batch_events: "10"}`,
			want: `tasklane.yaml:1:28: server.max_batch_events: expected an integer, got "10"`,
		},
		{
			name: "BulkSyncMaxNegative",
			yaml: `server: {bulk_sync_max: -5}`,
			want: `tasklane.yaml:1:25: server.bulk_sync_max: must be at least 1, got -5`,
		},
		{
			name: "MaxHeaderBytesAboveFrameBound",
			yaml: `server: {max_header_bytes: 131072}`,
			want: `tasklane.yaml:1:28: server.max_header_bytes: must be between 4096 and 65536, got 131072`,
		},
		{
			name: "MaxHeaderBytesTooSmall",
			yaml: `server: {max_header_bytes: 100}`,
			want: `tasklane.yaml:1:28: server.max_header_bytes: must be between 4096 and 65536, got 100`,
		},
		{
			name: "WriteTimeoutNotADuration",
			yaml: `server: {write_timeout: 30}`,
			want: `tasklane.yaml:1:25: server.write_timeout: invalid duration "30" (use e.g. 30s, 5m, 1h)`,
		},
		{
			name: "MetricsAddrInvalid",
			yaml: `server: {metrics_addr: "9090"}`,
			want: `tasklane.yaml:1:24: server.metrics_addr: invalid address "9090" (want host:port, e.g. ":8080")`,
		},
		{
			name: "MetricsAddrSameAsAddr",
			yaml: `server: {addr: ":8080", metrics_addr: ":8080"}`,
			want: `tasklane.yaml:1:39: server.metrics_addr: must differ from server.addr (:8080)`,
		},
		{
			name: "MaxEventBytesTooLarge",
			yaml: `server: {max_event_bytes: 8388609}`,
			want: `tasklane.yaml:1:27: server.max_event_bytes: must be between 1 and 8388608, got 8388609`,
		},
		{
			name: "MaxEventBytesNegative",
			yaml: `server: {max_event_bytes: -1}`,
			want: `tasklane.yaml:1:27: server.max_event_bytes: must be between 1 and 8388608, got -1`,
		},
		{
			name: "NotifierConsumersOutOfRange",
			yaml: `notifier: {consumers: 300}`,
			want: `tasklane.yaml:1:23: notifier.consumers: must be between 1 and 256, got 300`,
		},
		{
			name: "NotifierSinkTimeoutTooLong",
			yaml: `notifier: {sink_timeout: 1h}`,
			want: `tasklane.yaml:1:26: notifier.sink_timeout: must be a positive duration of at most 5m, got 1h`,
		},
		{
			name: "NotifierSinkBacklogOutOfRange",
			yaml: `notifier: {sink_backlog: -1}`,
			want: `tasklane.yaml:1:26: notifier.sink_backlog: must be between 1 and 1000000, got -1`,
		},
		{
			name: "FloatForInt",
			yaml: `dispatcher: {consumers_per_lane: 1.5}`,
			want: `tasklane.yaml:1:34: dispatcher.consumers_per_lane: expected an integer, got "1.5"`,
		},
		{
			name: "IntOverflow",
			yaml: `lanes: {shared: 99999999999999999999}`,
			want: `tasklane.yaml:1:17: lanes.shared: integer 99999999999999999999 out of range`,
		},
		{
			name: "MapForList",
			yaml: `tenants:
  - id: acme
    api_keys: {key: acme-dev-key}
`,
			want: `tasklane.yaml:3:15: tenants[0].api_keys: expected a list, got a mapping`,
		},
		{
			name: "ListForMapping",
			yaml: `server: [":8080"]`,
			want: `tasklane.yaml:1:9: server: expected a mapping, got a list`,
		},
		{
			name: "MappingForString",
			yaml: `redis:
  url: {host: localhost}
`,
			want: `tasklane.yaml:2:8: redis.url: expected a string, got a mapping`,
		},
		{
			name: "ScalarListItemForMapping",
			yaml: `functions: [thumbnail]`,
			want: `tasklane.yaml:1:13: functions[0]: expected a mapping, got "thumbnail"`,
		},
		{
			name: "DurationWords",
			yaml: `functions:
  - name: thumbnail
    events: [a]
    endpoint: builtin:echo
    timeout: 30 seconds
`,
			want: `tasklane.yaml:5:14: functions[0].timeout: invalid duration "30 seconds" (use e.g. 30s, 5m, 1h)`,
		},
		{
			name: "DurationNegative",
			yaml: `functions:
  - name: thumbnail
    events: [a]
    endpoint: builtin:echo
    timeout: -1s
`,
			want: `tasklane.yaml:5:14: functions[0].timeout: invalid duration "-1s" (use e.g. 30s, 5m, 1h)`,
		},
		{
			name: "DurationBareNumber",
			yaml: `ledger: {retention: 3600}`,
			want: `tasklane.yaml:1:21: ledger.retention: invalid duration "3600" (use e.g. 30s, 5m, 1h)`,
		},
		{
			name: "DurationList",
			yaml: `dispatcher: {lease_ttl: [15s]}`,
			want: `tasklane.yaml:1:25: dispatcher.lease_ttl: expected a duration (e.g. 30s, 5m, 1h), got a list`,
		},
		{
			name: "MissingEndpoint",
			yaml: `functions:
  - name: thumbnail
    events: [com.example.image.uploaded]
`,
			want: `tasklane.yaml:2:5: functions[0].endpoint: missing (required)`,
		},
		{
			name: "MissingTenantKeys",
			yaml: `tenants:
  - id: acme
`,
			want: `tasklane.yaml:2:5: tenants[0].api_keys: missing (required)`,
		},
		{
			name: "EmptyRequiredString",
			yaml: `functions:
  - name: thumbnail
    events: [a]
    endpoint: ""
`,
			want: `tasklane.yaml:4:15: functions[0].endpoint: missing (required)`,
		},
		{
			name: "DuplicateFunctionName",
			yaml: `tenants:
  - id: acme
    api_keys: [acme-dev-key]
functions:
  - name: resize
    events: [com.example.a]
    endpoint: builtin:noop
  - events: [com.example.b]
    name: thumbnail
    endpoint: builtin:echo
  - name: thumbnail
    events: [com.example.c]
    endpoint: builtin:echo
`,
			want: `tasklane.yaml:11:11: functions[2].name: duplicate function name "thumbnail" (first at line 9)`,
		},
		{
			name: "DuplicateSubscriptionName",
			yaml: `subscriptions:
  - {name: results, sink: "http://127.0.0.1:9100/a"}
  - {name: results, sink: "http://127.0.0.1:9100/b"}
`,
			want: `tasklane.yaml:3:12: subscriptions[1].name: duplicate subscription name "results" (first at line 2)`,
		},
		{
			name: "DuplicateTenantID",
			yaml: `tenants:
  - id: acme
    api_keys: [key-one-1]
  - id: acme
    api_keys: [key-two-2]
`,
			want: `tasklane.yaml:4:9: tenants[1].id: duplicate tenant id "acme" (first at line 2)`,
		},
		{
			name: "DuplicateTriggerName",
			yaml: `triggers:
  - name: nightly
    cron: {schedule: "0 2 * * *"}
    event: {type: com.example.report, source: /cron}
  - name: nightly
    http: {path: nightly}
    event: {type: com.example.report, source: /hooks}
functions: [{name: f, events: [com.example.report], endpoint: "builtin:noop"}]
`,
			want: `tasklane.yaml:5:11: triggers[1].name: duplicate trigger name "nightly" (first at line 2)`,
		},
		{
			name: "DuplicateYAMLKey",
			yaml: `server:
  addr: ":8080"
  max_event_bytes: 1024
  addr: ":9090"
`,
			want: `tasklane.yaml:4:3: server.addr: duplicate key "addr" (first at line 2)`,
		},
		{
			name: "DuplicateYAMLKeyInListItem",
			yaml: `functions:
  - name: a
    events: [x]
    endpoint: builtin:echo
    name: b
`,
			want: `tasklane.yaml:5:5: functions[0].name: duplicate key "name" (first at line 2)`,
		},
		{
			name: "IntOutOfRange",
			yaml: `lanes:
  shared: 1000
`,
			want: `tasklane.yaml:2:11: lanes.shared: must be between 1 and 999, got 1000`,
		},
		{
			name: "ShardSizeAboveShared",
			yaml: `lanes: {shared: 4, shard_size: 8}`,
			want: `tasklane.yaml:1:32: lanes.shard_size: must be between 1 and lanes.shared (4), got 8`,
		},
		{
			name: "ExplicitZeroIsNotDefaulted",
			yaml: `functions:
  - name: a
    events: [x]
    endpoint: builtin:echo
    retry: {max_attempts: 0}
`,
			want: `tasklane.yaml:5:27: functions[0].retry.max_attempts: must be between 1 and 100, got 0`,
		},
		{
			name: "BadDriver",
			yaml: `broker: {driver: kafka}`,
			want: `tasklane.yaml:1:18: broker.driver: invalid value "kafka" (allowed: amqp, redisstream)`,
		},
		{
			name: "BadQueueType",
			yaml: `lanes:
  queue_type: stream
`,
			want: `tasklane.yaml:2:15: lanes.queue_type: invalid value "stream" (allowed: classic, quorum)`,
		},
		{
			name: "APIKeySharedByTenants",
			yaml: `tenants:
  - id: acme
    api_keys: [shared-secret-1]
  - id: globex
    api_keys: [own-secret-22, shared-secret-1]
`,
			want: `tasklane.yaml:5:31: tenants[1].api_keys[1]: API key also belongs to tenant "acme" (first at line 3); a key must identify one tenant`,
		},
		{
			name: "APIKeySharedAsHash",
			yaml: `tenants:
  - id: acme
    api_keys: [acme-dev-key]
  - id: globex
    # sha256 of "acme-dev-key"
    api_keys: ["sha256:` + sha256Hex("acme-dev-key") + `"]
`,
			want: `tasklane.yaml:6:16: tenants[1].api_keys[0]: API key also belongs to tenant "acme" (first at line 3); a key must identify one tenant`,
		},
		{
			name: "BadAPIKeys",
			yaml: `tenants:
  - id: acme
    api_keys: [short, "sha256:abc"]
`,
			want: `tasklane.yaml:3:16: tenants[0].api_keys[0]: API key too short (want a secret of at least 8 characters, or "sha256:" followed by 64 hex digits)
tasklane.yaml:3:23: tenants[0].api_keys[1]: invalid hashed key (want "sha256:" followed by 64 hex digits)`,
		},
		{
			name: "BadTenantID",
			yaml: `tenants:
  - id: Acme Corp
    api_keys: [acme-dev-key]
`,
			want: `tasklane.yaml:2:9: tenants[0].id: invalid tenant id "Acme Corp" (want 1-64 lowercase letters, digits, '_' or '-', starting with a letter or digit)`,
		},
		{
			name: "UnknownFunctionTenant",
			yaml: `functions:
  - name: a
    events: [x]
    endpoint: builtin:echo
    tenants: [acme]
`,
			want: `tasklane.yaml:5:15: functions[0].tenants[0]: unknown tenant "acme" (configured: default)`,
		},
		{
			name: "BadEndpoint",
			yaml: `functions:
  - name: a
    events: [x]
    endpoint: 127.0.0.1:9000/thumbnail
  - name: b
    events: [x]
    endpoint: builtin:sleep
`,
			want: `tasklane.yaml:4:15: functions[0].endpoint: invalid endpoint (want an http:// or https:// URL with a host, builtin:echo, builtin:noop or go:<name>)
tasklane.yaml:7:15: functions[1].endpoint: unknown builtin "builtin:sleep" (allowed: builtin:echo, builtin:noop)`,
		},
		{
			name: "BadURLsAreNotEchoed",
			yaml: `broker: {url: "http://user:secret@rabbit:5672/"}
redis: {url: "redis://:secret@redis:6379/zero"}
`,
			want: `tasklane.yaml:1:15: broker.url: unsupported URL scheme "http" (want amqp or amqps, e.g. amqp://guest:guest@127.0.0.1:5672/)
tasklane.yaml:2:14: redis.url: invalid database "zero" (want a number, e.g. redis://127.0.0.1:6379/0)`,
		},
		{
			name: "BrokerURLListNamesTheBadURLWithoutItsPassword",
			yaml: `broker: {url: "amqp://u:secret@r1:5672/,http://u:secret@r2:5672/,,amqp://u:secret@r3:5672/other,amqp://u:secret@r1:5672/"}
`,
			want: `tasklane.yaml:1:15: broker.url: URL 2 of 5 (http://u:xxxxx@r2:5672/): unsupported URL scheme "http" (want amqp or amqps, e.g. amqp://guest:guest@127.0.0.1:5672/)
tasklane.yaml:1:15: broker.url: URL 3 of 5 is empty (URLs are separated by single commas, e.g. amqp://guest:guest@127.0.0.1:5672/,amqp://guest:guest@rabbit2:5672/)
tasklane.yaml:1:15: broker.url: URL 4 of 5 (amqp://u:xxxxx@r3:5672/other) names vhost "other", the first URL "/" (every URL of the list must name the same vhost: they are nodes of one cluster)
tasklane.yaml:1:15: broker.url: URL 5 of 5 (amqp://u:xxxxx@r1:5672/) repeats URL 1`,
		},
		{
			name: "TriggerNeedsExactlyOneKind",
			yaml: `triggers:
  - name: nightly
    event: {type: com.example.report, source: /cron}
`,
			want: `tasklane.yaml:2:5: triggers[0]: set exactly one of cron, http or objectstore`,
		},
		{
			name: "TriggerEventRequired",
			yaml: `triggers:
  - name: signup
    http: {path: signup}
`,
			want: `tasklane.yaml:2:5: triggers[0].event.type: missing (required)
tasklane.yaml:2:5: triggers[0].event.source: missing (required)`,
		},
		{
			name: "SyntaxError", // the yaml package reports the line of the enclosing mapping
			yaml: `server:
  addr: ":8080"
 lanes: 4
`,
			want: `tasklane.yaml:2: invalid YAML: did not find expected key`,
		},
		{
			name: "NotAMapping",
			yaml: `- server`,
			want: `tasklane.yaml:1:1: the config must be a mapping of sections (server, broker, functions, ...), got a list`,
		},
		{
			name: "SecondDocument",
			yaml: "server: {}\n---\nlanes: {}\n",
			want: `tasklane.yaml:2:1: found a second YAML document (only one is allowed)`,
		},
		{
			name: "MergeKeysAreChecked",
			yaml: `functions:
  - name: a
    events: [x]
    endpoint: builtin:echo
    retry: &retry {max_attempts: 5, jitter: true}
  - name: b
    events: [y]
    endpoint: builtin:echo
    retry: {<<: *retry, max_attempts: 2}
`,
			want: `tasklane.yaml:5:37: functions[0].retry.jitter: unknown key (known keys: max_attempts, initial_backoff, max_backoff, max_throttled)
tasklane.yaml:5:37: functions[1].retry.jitter: unknown key (known keys: max_attempts, initial_backoff, max_backoff, max_throttled)`,
		},
		{
			name: "MergeCycle",
			yaml: `server: &s {<<: *s}`,
			want: `tasklane.yaml:1:17: server: merge (<<) includes the mapping it is in`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Parse(file, []byte(tt.yaml))
			require.Error(t, err)
			require.Nil(t, cfg)
			require.EqualError(t, err, tt.want)
			for _, p := range problems(t, err) {
				require.Equal(t, file, p.File)
				require.Positive(t, p.Line)
			}
		})
	}
}

func TestParseReportsAllProblems(t *testing.T) {
	t.Parallel()

	yml := `server:
  addr: 8080
broker: {driver: kafka, publish_channels: 0, prefix: a/b}
lanes: {shared: 16, shard_size: 32, queue_type: fast}
tenants:
  - id: acme
    api_keys: [acme-dev-key]
functions:
  - name: thumbnail
    events: [com.example.image.uploaded]
    endpiont: http://127.0.0.1:9000/thumbnail
    timeout: 30 seconds
    concurrency: lots
    retry: {max_attempts: 500, initial_backoff: 10s, max_backoff: 1s}
    tenants: [globex]
  - name: thumbnail
    events: []
    endpoint: builtin:echo
    endpoint: builtin:noop
`
	cfg, err := config.Parse(file, []byte(yml))
	require.Nil(t, cfg)
	want := []string{
		`tasklane.yaml:2:9: server.addr: invalid address "8080" (want host:port, e.g. ":8080")`,
		`tasklane.yaml:3:18: broker.driver: invalid value "kafka" (allowed: amqp, redisstream)`,
		`tasklane.yaml:3:43: broker.publish_channels: must be between 1 and 1024, got 0`,
		`tasklane.yaml:3:54: broker.prefix: must be 1 to 64 letters, digits, '-', '_' or '.', got "a/b"`,
		`tasklane.yaml:4:33: lanes.shard_size: must be between 1 and lanes.shared (16), got 32`,
		`tasklane.yaml:4:49: lanes.queue_type: invalid value "fast" (allowed: classic, quorum)`,
		`tasklane.yaml:11:5: functions[0].endpiont: unknown key (did you mean "endpoint"?)`,
		`tasklane.yaml:12:14: functions[0].timeout: invalid duration "30 seconds" (use e.g. 30s, 5m, 1h)`,
		`tasklane.yaml:13:18: functions[0].concurrency: expected an integer, got "lots"`,
		`tasklane.yaml:14:27: functions[0].retry.max_attempts: must be between 1 and 100, got 500`,
		`tasklane.yaml:14:67: functions[0].retry.max_backoff: must be at least retry.initial_backoff (10s), got 1s`,
		`tasklane.yaml:15:15: functions[0].tenants[0]: unknown tenant "globex" (configured: acme)`,
		`tasklane.yaml:16:11: functions[1].name: duplicate function name "thumbnail" (first at line 9)`,
		`tasklane.yaml:17:13: functions[1].events: missing (required)`,
		`tasklane.yaml:19:5: functions[1].endpoint: duplicate key "endpoint" (first at line 18)`,
	}
	require.EqualError(t, err, strings.Join(want, "\n"))
	require.Len(t, problems(t, err), len(want))

	// Each problem is a *config.Error with its parts.
	p := problems(t, err)[0]
	require.Equal(t, &config.Error{File: file, Line: 2, Column: 9, Field: "server.addr",
		Msg: `invalid address "8080" (want host:port, e.g. ":8080")`}, p)
}

func TestValidateGoBuilt(t *testing.T) {
	t.Parallel()

	cfg := (&config.Config{
		Tenants: []config.Tenant{
			{ID: "acme", APIKeys: []string{"acme-dev-key"}},
			{ID: "globex", APIKeys: []string{"acme-dev-key"}},
		},
		Functions: []config.Function{
			{Name: "echo", Events: []string{"com.example.echo"}, Endpoint: config.EndpointEcho},
			{Name: "echo", Events: []string{"com.example.other"}},
		},
		Triggers: []config.Trigger{{Name: "t", Tenant: "acme", HTTP: &config.HTTPTrigger{Path: "t"}}},
	}).WithDefaults()

	err := cfg.Validate()
	want := []string{
		`tenants[1].api_keys[0]: API key also belongs to tenant "acme" (first at tenants[0].api_keys[0]); a key must identify one tenant`,
		`functions[1].name: duplicate function name "echo" (first at functions[0].name)`,
		`functions[1].endpoint: missing (required)`,
		`triggers[0].event.type: missing (required)`,
		`triggers[0].event.source: missing (required)`,
	}
	require.EqualError(t, err, strings.Join(want, "\n"))

	// A valid Go-built config, as the dev mode builds one.
	dev := (&config.Config{Functions: []config.Function{
		{Name: "echo", Events: []string{"com.example.echo"}, Endpoint: config.EndpointEcho},
	}}).WithDefaults()
	require.NoError(t, dev.Validate())

	// Validate checks the config as it is: without defaults, zero values fail.
	err = (&config.Config{}).Validate()
	require.ErrorContains(t, err, "server.addr: missing (required)")
	require.ErrorContains(t, err, "lanes.shared: must be between 1 and 999, got 0")
}

func TestParseDesignExample(t *testing.T) {
	t.Parallel()

	cfg, err := config.Load(filepath.Join("testdata", "design.yaml"))
	require.NoError(t, err)
	require.Equal(t, filepath.Join("testdata", "design.yaml"), cfg.File)

	require.Equal(t, config.Server{
		Addr:           ":8080",
		MaxEventBytes:  65536,
		MaxBatchBytes:  4 << 20,
		MaxBatchEvents: 1000,
		BulkSyncMax:    10000,
		WriteTimeout:   config.Duration(30 * time.Second),
		MaxHeaderBytes: 32 << 10,
	}, cfg.Server)
	require.Equal(t, config.Broker{Driver: "amqp", URL: "amqp://guest:guest@127.0.0.1:5672/", PublishChannels: 16, Prefetch: 256, Prefix: "tasklane"}, cfg.Broker)
	require.Equal(t, config.Redis{URL: "redis://127.0.0.1:6379/0"}, cfg.Redis)
	require.Equal(t, config.Lanes{Shared: 16, ShardSize: 2, QueueType: "classic"}, cfg.Lanes)
	require.Equal(t, []string{"acme"}, cfg.TenantIDs())
	require.Len(t, cfg.Tenants[0].APIKeys, 2)

	require.Equal(t, []config.Function{{
		Name:        "thumbnail",
		Events:      []string{"com.example.image.uploaded"},
		Endpoint:    "http://127.0.0.1:9000/thumbnail",
		Timeout:     config.Duration(30 * time.Second),
		Concurrency: 64,
		Retry: config.Retry{
			MaxAttempts:    5,
			InitialBackoff: config.Duration(time.Second),
			MaxBackoff:     config.Duration(5 * time.Minute),
		},
	}, {
		Name:     "reports",
		Events:   []string{"com.example.report.requested", "com.example.user.signedup"},
		Endpoint: config.EndpointNoop,
		Timeout:  config.FunctionTimeoutDefault,
		Retry: config.Retry{
			MaxAttempts:    config.MaxAttemptsDefault,
			InitialBackoff: config.InitialBackoffDefault,
			MaxBackoff:     config.MaxBackoffDefault,
		},
	}}, cfg.Functions)
	require.Equal(t, []config.Subscription{{
		Name:   "app-results",
		Sink:   "http://127.0.0.1:9100/results",
		Filter: config.Filter{Types: []string{"io.tasklane.task.succeeded", "io.tasklane.task.failed"}},
	}}, cfg.Subscriptions)
	require.Equal(t, []config.Trigger{
		{
			Name:   "nightly-report",
			Tenant: "acme",
			Cron:   &config.CronTrigger{Schedule: "0 2 * * *", Timezone: "Asia/Shanghai", Missed: "skip", MaxCatchUp: 10},
			Event:  config.TriggerEvent{Type: "com.example.report.requested", Source: "/triggers/nightly"},
		},
		{
			Name:   "signup-hook",
			Tenant: "acme",
			HTTP:   &config.HTTPTrigger{Path: "signup"},
			Event:  config.TriggerEvent{Type: "com.example.user.signedup", Source: "/hooks/signup"},
		},
	}, cfg.Triggers)

	// Sections the example leaves out take their defaults.
	require.Equal(t, defaultDispatcher, cfg.Dispatcher)
	require.Equal(t, defaultLedger, cfg.Ledger)
	require.NoError(t, cfg.Validate())
}

func TestParseExampleFile(t *testing.T) {
	t.Parallel()

	cfg, err := config.Load(filepath.Join("..", "..", "examples", "tasklane.yaml"))
	require.NoError(t, err)
	require.Equal(t, []config.Tenant{{ID: "acme", APIKeys: []string{"acme-dev-key"}}}, cfg.Tenants)

	thumb := cfg.Function("thumbnail")
	require.NotNil(t, thumb)
	require.Equal(t, "http://127.0.0.1:9000/thumbnail", thumb.Endpoint)

	fns := cfg.FunctionsFor("acme", "com.example.echo")
	require.Len(t, fns, 1)
	require.Equal(t, "echo", fns[0].Name)
	require.Equal(t, config.EndpointEcho, fns[0].Endpoint)
	require.Equal(t, config.FunctionTimeoutDefault, fns[0].Timeout)

	require.Len(t, cfg.Subscriptions, 1)
	require.Equal(t, "http://127.0.0.1:9100/results", cfg.Subscriptions[0].Sink)
}

var (
	defaultDispatcher = config.Dispatcher{
		ConsumersPerLane: 16,
		LeaseTTL:         config.Duration(15 * time.Second),
		DrainTimeout:     config.Duration(30 * time.Second),
		MaxResultBytes:   65536,
		MaxRunning:       256,
	}
	defaultLedger = config.Ledger{
		Retention:     config.Duration(24 * time.Hour),
		DedupWindow:   config.Duration(24 * time.Hour),
		PublishGuard:  config.Duration(30 * time.Second),
		KeyPrefix:     "tl",
		DeadRetention: config.Duration(720 * time.Hour),
	}
)

// A task outlives its dedup entry: unset durations follow the set ones,
// and a dedup window longer than a retention is refused, naming its line.
func TestDedupWindowWithinRetention(t *testing.T) {
	t.Parallel()
	h := func(n int) config.Duration { return config.Duration(time.Duration(n) * time.Hour) }
	for _, c := range []struct {
		name, doc              string
		retention, dedup, dead config.Duration
	}{
		{"Defaults", "", h(24), h(24), h(720)},
		{"ShortRetention", "ledger: {retention: 2h}\n", h(2), h(2), h(720)},
		{"LongDedup", "ledger: {dedup_window: 72h}\n", h(72), h(72), h(720)},
		{"ShortDead", "ledger: {dead_retention: 1h}\n", h(24), h(1), h(1)},
		{"Both", "ledger: {retention: 168h, dedup_window: 72h}\n", h(168), h(72), h(720)},
	} {
		cfg, err := config.Parse(file, []byte(c.doc))
		require.NoError(t, err, c.name)
		require.Equal(t, c.retention, cfg.Ledger.Retention, c.name)
		require.Equal(t, c.dedup, cfg.Ledger.DedupWindow, c.name)
		require.Equal(t, c.dead, cfg.Ledger.DeadRetention, c.name)
	}

	_, err := config.Parse(file, []byte("ledger:\n  retention: 1h\n  dedup_window: 2h\n"))
	require.ErrorContains(t, err, file+":3:")
	require.ErrorContains(t, err, "ledger.dedup_window: must not be longer than ledger.retention (1h")
	_, err = config.Parse(file, []byte("ledger:\n  dead_retention: 1h\n  dedup_window: 2h\n"))
	require.ErrorContains(t, err, "must not be longer than ledger.dead_retention (1h")
}

func TestDefaults(t *testing.T) {
	t.Parallel()

	t.Run("EmptyDocument", func(t *testing.T) {
		t.Parallel()
		for _, doc := range []string{"", "# nothing\n", "---\n", "~\n", "{}\n"} {
			cfg, err := config.Parse(file, []byte(doc))
			require.NoError(t, err, "document %q", doc)
			require.Equal(t, config.Server{
				Addr: "127.0.0.1:8080", MaxEventBytes: 65536, MaxBatchBytes: 4 << 20, MaxBatchEvents: 1000, BulkSyncMax: 10000,
				WriteTimeout: config.Duration(30 * time.Second), MaxHeaderBytes: 32 << 10,
			}, cfg.Server)
			require.Equal(t, config.Broker{Driver: "amqp", URL: "amqp://guest:guest@127.0.0.1:5672/", PublishChannels: 16, Prefetch: 256, Prefix: "tasklane"}, cfg.Broker)
			require.Equal(t, config.Redis{URL: "redis://127.0.0.1:6379/0"}, cfg.Redis)
			require.Equal(t, config.Lanes{Shared: 16, ShardSize: 2, QueueType: "classic"}, cfg.Lanes)
			require.Equal(t, defaultDispatcher, cfg.Dispatcher)
			require.Equal(t, defaultLedger, cfg.Ledger)
			require.Empty(t, cfg.Tenants)
			require.Equal(t, []string{config.DefaultTenant}, cfg.TenantIDs())
			require.Empty(t, cfg.Functions)
		}
	})

	t.Run("FunctionDefaults", func(t *testing.T) {
		t.Parallel()
		cfg, err := config.Parse(file, []byte(`functions:
  - {name: a, events: [x], endpoint: "go:resize"}
  - {name: b, events: [x], endpoint: "https://example.com/b", retry: {initial_backoff: 10m}}
`))
		require.NoError(t, err)
		require.Equal(t, config.Function{
			Name: "a", Events: []string{"x"}, Endpoint: "go:resize",
			Timeout: config.Duration(30 * time.Second),
			Retry: config.Retry{
				MaxAttempts:    3,
				InitialBackoff: config.Duration(time.Second),
				MaxBackoff:     config.Duration(5 * time.Minute),
			},
		}, cfg.Functions[0])
		// max_backoff defaults to initial_backoff when that is larger than 5m.
		require.Equal(t, config.Duration(10*time.Minute), cfg.Functions[1].Retry.MaxBackoff)
	})

	t.Run("DependentDefaults", func(t *testing.T) {
		t.Parallel()
		cfg, err := config.Parse(file, []byte(`lanes: {shared: 1}
server: {max_event_bytes: 8388608}
broker: {driver: redisstream}
`))
		require.NoError(t, err)
		require.Equal(t, 1, cfg.Lanes.ShardSize)
		require.Equal(t, int64(8<<20), cfg.Server.MaxBatchBytes)
		require.Empty(t, cfg.Broker.URL) // redisstream uses redis.url
	})

	t.Run("ServerLimits", func(t *testing.T) {
		t.Parallel()
		cfg, err := config.Parse(file, []byte(`server: {write_timeout: 5s, max_header_bytes: 65536, metrics_addr: "127.0.0.1:9090"}`))
		require.NoError(t, err)
		require.Equal(t, config.Duration(5*time.Second), cfg.Server.WriteTimeout)
		require.Equal(t, config.MaxHeaderBytesMax, cfg.Server.MaxHeaderBytes)
		require.Equal(t, "127.0.0.1:9090", cfg.Server.MetricsAddr)
	})

	t.Run("NullMeansDefault", func(t *testing.T) {
		t.Parallel()
		cfg, err := config.Parse(file, []byte("server:\n  addr:\nlanes: ~\n"))
		require.NoError(t, err)
		require.Equal(t, config.AddrDefault, cfg.Server.Addr)
		require.Equal(t, 16, cfg.Lanes.Shared)
	})

	t.Run("WithDefaultsCopies", func(t *testing.T) {
		t.Parallel()
		in := &config.Config{Functions: []config.Function{{Name: "a"}}}
		out := in.WithDefaults()
		require.Empty(t, in.Server.Addr)
		require.Zero(t, in.Functions[0].Timeout)
		require.Equal(t, config.FunctionTimeoutDefault, out.Functions[0].Timeout)
	})
}

func TestFunctionsFor(t *testing.T) {
	t.Parallel()

	cfg, err := config.Parse(file, []byte(`tenants:
  - {id: acme, api_keys: [acme-dev-key]}
  - {id: globex, api_keys: [globex-dev-key]}
functions:
  - {name: all, events: [com.example.a, com.example.b], endpoint: "builtin:noop"}
  - {name: acme-only, events: [com.example.a], endpoint: "builtin:noop", tenants: [acme]}
  - {name: other, events: [com.example.c], endpoint: "builtin:noop"}
  - {name: both, events: [com.example.a], endpoint: "builtin:echo", tenants: [globex, acme]}
`))
	require.NoError(t, err)

	names := func(fns []*config.Function) []string {
		var out []string
		for _, f := range fns {
			out = append(out, f.Name)
		}
		return out
	}
	tests := []struct {
		tenant, typ string
		want        []string
	}{
		{"acme", "com.example.a", []string{"all", "acme-only", "both"}},
		{"globex", "com.example.a", []string{"all", "both"}},
		{"globex", "com.example.b", []string{"all"}},
		{"acme", "com.example", nil},    // exact match only
		{"acme", "com.example.a.", nil}, // exact match only
		{"initech", "com.example.c", []string{"other"}},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, names(cfg.FunctionsFor(tt.tenant, tt.typ)), "%s %s", tt.tenant, tt.typ)
	}

	// The pointers refer into the config.
	cfg.FunctionsFor("acme", "com.example.c")[0].Concurrency = 7
	require.Equal(t, 7, cfg.Function("other").Concurrency)
	require.Nil(t, cfg.Function("missing"))
}

func TestRetryBackoff(t *testing.T) {
	t.Parallel()

	r := config.Retry{
		MaxAttempts:    10,
		InitialBackoff: config.Duration(time.Second),
		MaxBackoff:     config.Duration(10 * time.Second),
	}
	tests := []struct {
		attempt int
		want    time.Duration
	}{
		{-1, time.Second},
		{0, time.Second},
		{1, time.Second},
		{2, 2 * time.Second},
		{3, 4 * time.Second},
		{4, 8 * time.Second},
		{5, 10 * time.Second},
		{6, 10 * time.Second},
		{1000, 10 * time.Second},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, r.Backoff(tt.attempt), "attempt %d", tt.attempt)
	}

	// No overflow with huge bounds.
	big := config.Retry{InitialBackoff: config.Duration(time.Hour), MaxBackoff: config.Duration(1<<63 - 1)}
	require.Equal(t, time.Duration(1<<63-1), big.Backoff(200))
	require.Equal(t, 2*time.Hour, big.Backoff(2))
}

func TestApplyEnv(t *testing.T) {
	t.Parallel()

	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}

	t.Run("Overrides", func(t *testing.T) {
		t.Parallel()
		cfg, err := config.Parse(file, []byte(`server: {addr: ":8080"}`))
		require.NoError(t, err)
		cfg.ApplyEnv(env(map[string]string{
			"TASKLANE_ADDR":      ":9999",
			"TASKLANE_AMQP_URL":  "amqp://u:p@rabbit:5672/",
			"TASKLANE_REDIS_URL": "rediss://redis:6380/2",
		}))
		require.Equal(t, ":9999", cfg.Server.Addr)
		require.Equal(t, "amqp://u:p@rabbit:5672/", cfg.Broker.URL)
		require.Equal(t, "rediss://redis:6380/2", cfg.Redis.URL)
		require.NoError(t, cfg.Validate())
	})

	t.Run("BrokerURLList", func(t *testing.T) {
		t.Parallel()
		cfg, err := config.Parse(file, []byte(`server: {addr: ":8080"}`))
		require.NoError(t, err)
		list := "amqp://u:p@rabbit1:5672/, amqp://u:p@rabbit2:5672/ ,amqps://u:p@rabbit3:5671/"
		cfg.ApplyEnv(env(map[string]string{"TASKLANE_AMQP_URL": list}))
		require.NoError(t, cfg.Validate())
		require.Equal(t, []string{"amqp://u:p@rabbit1:5672/", "amqp://u:p@rabbit2:5672/", "amqps://u:p@rabbit3:5671/"},
			config.SplitURLs(cfg.Broker.URL))

		cfg.ApplyEnv(env(map[string]string{"TASKLANE_AMQP_URL": "amqp://u:p@rabbit1:5672/,amqp://u:p@rabbit2:5672/v2"}))
		require.EqualError(t, cfg.Validate(), `broker.url: URL 2 of 2 (amqp://u:xxxxx@rabbit2:5672/v2) names vhost "v2", the first URL "/" `+
			`(every URL of the list must name the same vhost: they are nodes of one cluster) (set by TASKLANE_AMQP_URL)`)
	})

	t.Run("EmptyKeepsFile", func(t *testing.T) {
		t.Parallel()
		cfg, err := config.Parse(file, []byte(`redis: {url: "redis://cache:6379/1"}`))
		require.NoError(t, err)
		cfg.ApplyEnv(env(map[string]string{"TASKLANE_REDIS_URL": ""}))
		require.Equal(t, "redis://cache:6379/1", cfg.Redis.URL)
		require.Equal(t, config.AddrDefault, cfg.Server.Addr)
	})

	t.Run("BadValueNamesVariable", func(t *testing.T) {
		t.Parallel()
		cfg, err := config.Parse(file, []byte("lanes: {}\nserver: {addr: \":8080\"}\n"))
		require.NoError(t, err)
		cfg.ApplyEnv(env(map[string]string{"TASKLANE_ADDR": "localhost"}))
		require.EqualError(t, cfg.Validate(),
			`server.addr: invalid address "localhost" (want host:port, e.g. ":8080") (set by TASKLANE_ADDR)`)
	})
}

func TestLoad(t *testing.T) {
	t.Parallel()

	_, err := config.Load(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorIs(t, err, fs.ErrNotExist)

	path := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte("lanes:\n  shard: 2\n"), 0o600))
	_, err = config.Load(path)
	require.EqualError(t, err, path+`:2:3: lanes.shard: unknown key (did you mean "shared"?)`)
}

func TestError(t *testing.T) {
	t.Parallel()

	tests := []struct {
		err  config.Error
		want string
	}{
		{config.Error{File: "f.yaml", Line: 3, Column: 5, Field: "server.addr", Msg: "bad"}, "f.yaml:3:5: server.addr: bad"},
		{config.Error{File: "f.yaml", Line: 3, Field: "server.addr", Msg: "bad"}, "f.yaml:3: server.addr: bad"},
		{config.Error{File: "f.yaml", Field: "server.addr", Msg: "bad"}, "f.yaml: server.addr: bad"},
		{config.Error{Line: 3, Column: 5, Field: "server.addr", Msg: "bad"}, "3:5: server.addr: bad"},
		{config.Error{Field: "server.addr", Msg: "bad"}, "server.addr: bad"},
		{config.Error{File: "f.yaml", Line: 1, Msg: "bad"}, "f.yaml:1: bad"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, tt.err.Error())
	}
}

func TestDuration(t *testing.T) {
	t.Parallel()

	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{10 * time.Second, "10s"},
		{5 * time.Minute, "5m"},
		{90 * time.Minute, "1h30m"},
		{168 * time.Hour, "168h"},
		{1500 * time.Millisecond, "1.5s"},
	}
	for _, tt := range tests {
		d := config.Duration(tt.d)
		require.Equal(t, tt.want, d.String())
		require.Equal(t, tt.d, d.Std())

		out, err := yaml.Marshal(map[string]config.Duration{"d": d})
		require.NoError(t, err)
		require.Equal(t, "d: "+tt.want+"\n", string(out))

		var back map[string]config.Duration
		require.NoError(t, yaml.Unmarshal(out, &back))
		require.Equal(t, d, back["d"])
	}

	var d config.Duration
	require.ErrorContains(t, yaml.Unmarshal([]byte("-5s"), &d), `invalid duration "-5s"`)
}

func FuzzParse(f *testing.F) {
	for _, path := range []string{
		filepath.Join("testdata", "design.yaml"),
		filepath.Join("..", "..", "examples", "tasklane.yaml"),
	} {
		data, err := os.ReadFile(path)
		require.NoError(f, err)
		f.Add(data)
	}
	for _, seed := range []string{
		"",
		"server: [1]",
		"functions:\n  - name: a\n    endpiont: x\n    timeout: 30 seconds\n",
		"a: &a {<<: *a}\nserver: &s {<<: [*s, *s]}",
		"functions: [&f {name: a, events: [x], endpoint: \"builtin:echo\"}, *f, *f]",
		"tenants: [{id: a, api_keys: [12345678]}, {id: a, api_keys: [12345678]}]",
		"triggers: [{name: t, cron: {schedule: x}, http: {path: y}}]",
		"lanes: {shared: 0x10, shard_size: -1, queue_type: !!binary aGVsbG8=}",
		"? [a]\n: b\n",
		"server:\n  addr: 1\n  addr: 2\n---\nx: 1\n",
	} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(file, data)
		if err != nil {
			require.Nil(t, cfg)
			for _, p := range problems(t, err) {
				require.NotEmpty(t, p.Msg)
			}
			return
		}
		require.NotNil(t, cfg)
		require.NoError(t, cfg.Validate(), "Parse accepted a config Validate rejects")
	})
}
