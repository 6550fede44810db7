package config_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
)

// TestParseCrossCheckErrors: what serve would only find later (a trigger
// whose events no function takes, a sink or endpoint that is not an http(s)
// URL, a subscription filter naming an unknown function or tenant) is an
// error of Parse, with file:line:col and a suggestion when one is close.
func TestParseCrossCheckErrors(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		yaml string
		want string
	}{
		{
			name: "TriggerTypeTypo",
			yaml: `functions: [{name: report, events: [com.example.report.requested], endpoint: "builtin:noop"}]
triggers:
  - name: nightly
    cron: {schedule: "0 2 * * *"}
    event: {type: com.example.report.requsted, source: /cron}
`,
			want: `tasklane.yaml:5:19: triggers[0].event.type: trigger "nightly" emits event type "com.example.report.requsted", which no function takes (did you mean "com.example.report.requested"?)`,
		},
		{
			name: "TriggerTypeNothingClose",
			yaml: `functions:
  - {name: report, events: [com.example.report], endpoint: "builtin:noop"}
  - {name: resize, events: [com.example.image.uploaded, com.example.report], endpoint: "builtin:noop"}
triggers:
  - {name: signup, http: {path: signup}, event: {type: com.example.user.signedup, source: /hooks/signup}}
`,
			want: `tasklane.yaml:5:56: triggers[0].event.type: trigger "signup" emits event type "com.example.user.signedup", which no function takes (functions take: com.example.report, com.example.image.uploaded)`,
		},
		{
			name: "TriggerTypeNoFunctions",
			yaml: `triggers:
  - {name: signup, http: {path: signup}, event: {type: com.example.signup, source: /hooks/signup}}
`,
			want: `tasklane.yaml:2:56: triggers[0].event.type: trigger "signup" emits event type "com.example.signup", which no function takes: no functions are configured`,
		},
		{
			name: "TriggerTypeOtherTenantOnly",
			yaml: `tenants:
  - {id: acme, api_keys: [acme-dev-key]}
  - {id: globex, api_keys: [globex-dev-key]}
functions: [{name: report, events: [com.example.report], endpoint: "builtin:noop", tenants: [globex]}]
triggers:
  - {name: nightly, tenant: acme, cron: {schedule: "@daily"}, event: {type: com.example.report, source: /cron}}
`,
			want: `tasklane.yaml:6:77: triggers[0].event.type: trigger "nightly" emits event type "com.example.report", which no function takes for tenant "acme": function report restricted to other tenants`,
		},
		{
			name: "ObjectStoreDeletedNotTaken",
			yaml: `functions: [{name: thumb, events: [com.example.image.created], endpoint: "builtin:noop"}]
triggers:
  - name: images
    objectstore: {mode: notify, bucket: images, path: s3, events: [created, deleted]}
    event: {type: com.example.image}
`,
			want: `tasklane.yaml:5:19: triggers[0].event.type: trigger "images" emits event type "com.example.image.deleted", which no function takes (an objectstore trigger emits com.example.image.<event>) (functions take: com.example.image.created)`,
		},
		{
			name: "SinkNotAURL",
			yaml: `subscriptions: [{name: s, sink: "http://[::1"}]`,
			want: `tasklane.yaml:1:33: subscriptions[0].sink: invalid URL (want e.g. http://127.0.0.1:9100/results)`,
		},
		{
			name: "SinkBadScheme",
			yaml: `subscriptions: [{name: s, sink: "ftp://results.example.com/in"}]`,
			want: `tasklane.yaml:1:33: subscriptions[0].sink: unsupported URL scheme "ftp" (want http or https, e.g. http://127.0.0.1:9100/results)`,
		},
		{
			name: "EndpointBadScheme",
			yaml: `functions: [{name: f, events: [t], endpoint: "grpc://127.0.0.1:9000"}]`,
			want: `tasklane.yaml:1:46: functions[0].endpoint: invalid endpoint (want an http:// or https:// URL with a host, builtin:echo, builtin:noop or go:<name>)`,
		},
		{
			name: "EndpointNotAURL",
			yaml: `functions: [{name: f, events: [t], endpoint: "http://%zz"}]`,
			want: `tasklane.yaml:1:46: functions[0].endpoint: invalid endpoint (want an http:// or https:// URL with a host, builtin:echo, builtin:noop or go:<name>)`,
		},
		{
			name: "FilterFunctionTypo",
			yaml: `functions: [{name: thumbnail, events: [t], endpoint: "builtin:noop"}]
subscriptions: [{name: s, sink: "http://127.0.0.1:9100/r", filter: {functions: [thumbnial]}}]
`,
			want: `tasklane.yaml:2:81: subscriptions[0].filter.functions[0]: unknown function "thumbnial" (did you mean "thumbnail"?)`,
		},
		{
			name: "FilterFunctionUnknown",
			yaml: `functions: [{name: thumbnail, events: [t], endpoint: "builtin:noop"}]
subscriptions: [{name: s, sink: "http://127.0.0.1:9100/r", filter: {functions: [billing]}}]
`,
			want: `tasklane.yaml:2:81: subscriptions[0].filter.functions[0]: unknown function "billing" (configured: thumbnail)`,
		},
		{
			name: "FilterFunctionNoFunctions",
			yaml: `subscriptions: [{name: s, sink: "http://127.0.0.1:9100/r", filter: {functions: [billing]}}]`,
			want: `tasklane.yaml:1:81: subscriptions[0].filter.functions[0]: unknown function "billing" (no functions are configured)`,
		},
		{
			name: "FilterTenantUnknown",
			yaml: `tenants: [{id: acme, api_keys: [acme-dev-key]}]
subscriptions: [{name: s, sink: "http://127.0.0.1:9100/r", filter: {tenants: [globex]}}]
`,
			want: `tasklane.yaml:2:79: subscriptions[0].filter.tenants[0]: unknown tenant "globex" (configured: acme)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Parse(file, []byte(tt.yaml))
			require.Nil(t, cfg)
			require.EqualError(t, err, tt.want)
			for _, p := range problems(t, err) {
				require.Equal(t, file, p.File)
				require.Positive(t, p.Line)
			}
		})
	}
}

// TestParseTriggerTypesTaken: triggers whose events a function takes, for
// their tenant, are valid.
func TestParseTriggerTypesTaken(t *testing.T) {
	t.Parallel()
	_, err := config.Parse(file, []byte(`tenants:
  - {id: acme, api_keys: [acme-dev-key]}
functions:
  - {name: report, events: [com.example.report], endpoint: "builtin:noop", tenants: [acme]}
  - {name: images, events: [com.example.image.created, com.example.image.deleted], endpoint: "builtin:noop"}
triggers:
  - {name: nightly, tenant: acme, cron: {schedule: "@daily"}, event: {type: com.example.report, source: /cron}}
  - name: images
    tenant: acme
    objectstore: {mode: notify, bucket: images, path: s3, events: [created, deleted]}
    event: {type: com.example.image}
`))
	require.NoError(t, err)
}

func TestCheckGoEndpoints(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse(file, []byte(`functions:
  - {name: a, events: [a], endpoint: "go:resize"}
  - {name: b, events: [b], endpoint: "go:thumbnial"}
  - {name: c, events: [c], endpoint: "go:billing"}
  - {name: d, events: [d], endpoint: "builtin:echo"}
`))
	require.NoError(t, err)

	tests := []struct {
		name       string
		registered []string
		want       string
	}{
		{
			name:       "AllRegistered",
			registered: []string{"billing", "resize", "thumbnail", "thumbnial"},
		},
		{
			name:       "SomeMissing",
			registered: []string{"resize", "thumbnail"},
			want: `tasklane.yaml:3:38: functions[1].endpoint: no Go handler registered as "thumbnial" (did you mean "go:thumbnail"? registered: resize, thumbnail)
tasklane.yaml:4:38: functions[2].endpoint: no Go handler registered as "billing" (registered: resize, thumbnail)`,
		},
		{
			name: "NoneRegistered",
			want: `tasklane.yaml:2:38: functions[0].endpoint: no Go handler registered as "resize" (this binary registers none; go: endpoints need a binary built with pkg/sdk handlers)
tasklane.yaml:3:38: functions[1].endpoint: no Go handler registered as "thumbnial" (this binary registers none; go: endpoints need a binary built with pkg/sdk handlers)
tasklane.yaml:4:38: functions[2].endpoint: no Go handler registered as "billing" (this binary registers none; go: endpoints need a binary built with pkg/sdk handlers)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := cfg.CheckGoEndpoints(tt.registered)
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.want)
		})
	}
}

// TestWarnings: risky but legal settings are warnings with file:line:col,
// and Parse still succeeds.
func TestWarnings(t *testing.T) {
	t.Parallel()

	const tenants = "tenants: [{id: acme, api_keys: [acme-dev-key]}]\nserver: {admin_keys: [admin-dev-key]}\n"
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "Safe",
			yaml: tenants + `functions: [{name: f, events: [t], endpoint: "http://10.0.0.5:9000/f"}]
subscriptions: [{name: s, sink: "https://results.example.com/in"}]
triggers:
  - name: signup
    tenant: acme
    http: {path: signup, signature: {secret_env: SIGNUP_SECRET}}
    event: {type: t, source: /hooks/signup}
`,
		},
		{
			name: "NoTenants",
			yaml: `functions: [{name: f, events: [t], endpoint: "builtin:noop"}]`,
			want: []string{`tasklane.yaml: tenants: no tenants configured: every API request is taken without authentication, as tenant "default", and the admin API is open (add tenants with api_keys before exposing 127.0.0.1:8080)`},
		},
		{
			name: "NoTenantsListedEmpty",
			yaml: "server: {addr: \"0.0.0.0:9090\"}\ntenants: []\n",
			want: []string{`tasklane.yaml:2:10: tenants: no tenants configured: every API request is taken without authentication, as tenant "default", and the admin API is open (add tenants with api_keys before exposing 0.0.0.0:9090)`},
		},
		{
			name: "NoAdminKeys",
			yaml: "tenants: [{id: acme, api_keys: [acme-dev-key]}]\n",
			want: []string{`tasklane.yaml: server.admin_keys: no admin keys: the admin API (dead-letter queue, routing, triggers) is off, and so is /metrics on server.addr`},
		},
		{
			name: "ListenAllDestinations",
			yaml: tenants + `functions:
  - {name: f, events: [t, u.created], endpoint: "http://0.0.0.0:9000/f"}
  - {name: g, events: [t], endpoint: "http://[::]:9000/g"}
subscriptions: [{name: s, sink: "http://0.0.0.0:9100/results"}]
triggers:
  - {name: images, tenant: acme, objectstore: {endpoint: "http://0.0.0.0:9000", bucket: images}, event: {type: u}}
`,
			want: []string{
				`tasklane.yaml:4:49: functions[0].endpoint: host 0.0.0.0 is a listen-all address, not a destination: requests reach this machine only, if at all (use 127.0.0.1 or the target's host name)`,
				`tasklane.yaml:5:38: functions[1].endpoint: host :: is a listen-all address, not a destination: requests reach this machine only, if at all (use 127.0.0.1 or the target's host name)`,
				`tasklane.yaml:6:33: subscriptions[0].sink: host 0.0.0.0 is a listen-all address, not a destination: requests reach this machine only, if at all (use 127.0.0.1 or the target's host name)`,
				`tasklane.yaml:8:58: triggers[0].objectstore.endpoint: host 0.0.0.0 is a listen-all address, not a destination: requests reach this machine only, if at all (use 127.0.0.1 or the target's host name)`,
			},
		},
		{
			name: "OpenHooks",
			yaml: tenants + `functions: [{name: f, events: [t, t.created], endpoint: "builtin:noop"}]
triggers:
  - {name: signup, tenant: acme, http: {path: signup}, event: {type: t, source: /s}}
  - {name: minio, tenant: acme, objectstore: {mode: notify, bucket: images, path: minio/images}, event: {type: t}}
`,
			want: []string{
				`tasklane.yaml:5:40: triggers[0].http: no signature: anyone who can reach /hooks/signup can submit events`,
				`tasklane.yaml:6:46: triggers[1].objectstore: no token_env: anyone who can reach /hooks/minio/images can submit notifications`,
			},
		},
		{
			name: "AdaptiveWithinConcurrency",
			yaml: tenants + `dispatcher: {reserved_high: 0.2}
functions:
  - {name: f, events: [t], endpoint: "builtin:noop", concurrency: 64, adaptive: {min: 1, max: 64}}
  - {name: g, events: [t], endpoint: "builtin:noop", adaptive: {min: 1, max: 1000}}
`,
		},
		{
			name: "AdaptiveMaxAboveConcurrency",
			yaml: tenants + `functions:
  - name: f
    events: [t]
    endpoint: "builtin:noop"
    concurrency: 16
    adaptive: {min: 2, max: 64}
`,
			want: []string{`tasklane.yaml:8:29: functions[0].adaptive.max: adaptive.max (64) is above concurrency (16): the limit never exceeds concurrency, so it adapts between 2 and 16 only`},
		},
		{
			name: "AdaptiveMinAtConcurrency",
			yaml: tenants + `functions:
  - {name: f, events: [t], endpoint: "builtin:noop", concurrency: 8, adaptive: {min: 8, max: 32}}
  - {name: g, events: [t], endpoint: "builtin:noop", concurrency: 4, adaptive: {min: 10, max: 10}}
`,
			want: []string{
				`tasklane.yaml:4:86: functions[0].adaptive.min: adaptive.min (8) is not below concurrency (8): the limit never exceeds concurrency, so it stays at 8 and does not adapt (lower adaptive.min, or leave concurrency out)`,
				`tasklane.yaml:5:86: functions[1].adaptive.min: adaptive.min (10) is not below concurrency (4): the limit never exceeds concurrency, so it stays at 4 and does not adapt (lower adaptive.min, or leave concurrency out)`,
			},
		},
		{
			name: "ReservedHighWithoutLimits",
			yaml: tenants + `dispatcher:
  reserved_high: 0.2
functions:
  - {name: f, events: [t], endpoint: "builtin:noop", rate: 10}
`,
			want: []string{`tasklane.yaml:4:18: dispatcher.reserved_high: has no effect: it reserves a share of each limited function's slots, and no function has a concurrency or adaptive limit`},
		},
		{
			name: "ReservedHighWithConcurrency",
			yaml: tenants + `dispatcher: {reserved_high: 0.2}
functions:
  - {name: f, events: [t], endpoint: "builtin:noop"}
  - {name: g, events: [t], endpoint: "builtin:noop", concurrency: 10}
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Parse(file, []byte(tt.yaml))
			require.NoError(t, err)
			var got []string
			for _, w := range cfg.Warnings() {
				got = append(got, w.Error())
			}
			require.Equal(t, tt.want, got, strings.Join(got, "\n"))
		})
	}
}
