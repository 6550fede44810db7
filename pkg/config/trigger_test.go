package config_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
)

// TestParseTriggerErrors has one case per trigger config problem; each
// asserts the whole message: file, line, column, field path and text.
// takesA is a function taking the event types the trigger tests emit.
const takesA = `functions: [{name: takes-a, events: [a, a.created, a.deleted], endpoint: "builtin:noop"}]` + "\n"

func TestParseTriggerErrors(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		yaml string
		want string
	}{
		// Common keys.
		{
			name: "NoKind",
			yaml: `triggers:
  - name: t
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:2:5: triggers[0]: set exactly one of cron, http or objectstore`,
		},
		{
			name: "TwoKinds",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@hourly"}
    objectstore: {bucket: images, endpoint: "http://127.0.0.1:9000"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:4:18: triggers[0].objectstore: set exactly one of cron, http or objectstore, not cron and objectstore`,
		},
		{
			name: "MissingName",
			yaml: `triggers:
  - cron: {schedule: "@hourly"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:2:5: triggers[0].name: missing (required)`,
		},
		{
			name: "BadName",
			yaml: `triggers:
  - name: Nightly Report
    cron: {schedule: "@hourly"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:2:11: triggers[0].name: invalid trigger name "Nightly Report" (want 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit)`,
		},
		{
			name: "DuplicateName",
			yaml: `triggers:
  - {name: t, cron: {schedule: "@hourly"}, event: {type: a, source: /s}}
  - {name: t, cron: {schedule: "@daily"}, event: {type: a, source: /s}}
`,
			want: `tasklane.yaml:3:12: triggers[1].name: duplicate trigger name "t" (first at line 2)`,
		},
		{
			name: "TenantRequiredWithTenants",
			yaml: `tenants: [{id: acme, api_keys: [acme-dev-key]}]
triggers:
  - name: t
    cron: {schedule: "@hourly"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:5: triggers[0].tenant: missing (required when tenants are configured)`,
		},
		{
			name: "UnknownTenant",
			yaml: `tenants: [{id: acme, api_keys: [acme-dev-key]}]
triggers:
  - name: t
    tenant: globex
    cron: {schedule: "@hourly"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:4:13: triggers[0].tenant: unknown tenant "globex" (configured: acme)`,
		},
		{
			name: "MissingEvent",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@hourly"}
`,
			want: `tasklane.yaml:2:5: triggers[0].event.type: missing (required)
tasklane.yaml:2:5: triggers[0].event.source: missing (required)`,
		},
		{
			name: "BadEventType",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@hourly"}
    event: {type: "com.example report", source: /s}
`,
			want: `tasklane.yaml:4:19: triggers[0].event.type: invalid event type "com.example report" (no white space or control characters)`,
		},
		{
			name: "BadEventSource",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@hourly"}
    event: {type: a, source: "/my source"}
`,
			want: `tasklane.yaml:4:30: triggers[0].event.source: invalid source "/my source" (want a URI reference, e.g. /hooks/signup or s3://bucket)`,
		},
		{
			name: "UnknownTriggerKey",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@hourly", timezone: UTC, catchup: true}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:48: triggers[0].cron.catchup: unknown key (known keys: schedule, timezone, missed, max_catch_up)`,
		},

		// Cron.
		{
			name: "CronMissingSchedule",
			yaml: `triggers:
  - name: t
    cron: {timezone: UTC}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:11: triggers[0].cron.schedule: missing (required)`,
		},
		{
			name: "CronBadExpression",
			yaml: `triggers:
  - name: t
    cron: {schedule: "0 25 * * *"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:22: triggers[0].cron.schedule: invalid schedule "0 25 * * *": end of range (25) above maximum (23): 25 (want 5 fields: minute hour day-of-month month day-of-week, or @hourly, @daily, @every 30s, ...)`,
		},
		{
			name: "CronSixFields",
			yaml: `triggers:
  - name: t
    cron: {schedule: "*/5 * * * * *"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:22: triggers[0].cron.schedule: invalid schedule "*/5 * * * * *": expected exactly 5 fields, found 6: [*/5 * * * * *] (want 5 fields: minute hour day-of-month month day-of-week, or @hourly, @daily, @every 30s, ...)`,
		},
		{
			name: "CronUnknownDescriptor",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@fortnightly"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:22: triggers[0].cron.schedule: invalid schedule "@fortnightly": unrecognized descriptor: @fortnightly (want 5 fields: minute hour day-of-month month day-of-week, or @hourly, @daily, @every 30s, ...)`,
		},
		{
			name: "CronEverySubSecond",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@every 500ms"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:22: triggers[0].cron.schedule: invalid schedule "@every 500ms": @every takes a whole number of seconds, at least 1s (e.g. @every 30s, @every 1h)`,
		},
		{
			name: "CronEveryBadDuration",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@every often"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:22: triggers[0].cron.schedule: invalid schedule "@every often": @every takes a whole number of seconds, at least 1s (e.g. @every 30s, @every 1h)`,
		},
		{
			name: "CronNeverFires",
			yaml: `triggers:
  - name: t
    cron: {schedule: "0 0 30 2 *"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:22: triggers[0].cron.schedule: invalid schedule "0 0 30 2 *": it never fires`,
		},
		{
			name: "CronTimezoneInSchedule",
			yaml: `triggers:
  - name: t
    cron: {schedule: "CRON_TZ=Asia/Tokyo 0 2 * * *"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:22: triggers[0].cron.schedule: invalid schedule "CRON_TZ=Asia/Tokyo 0 2 * * *": give the time zone in cron.timezone, not in the schedule`,
		},
		{
			name: "CronBadTimezone",
			yaml: `triggers:
  - name: t
    cron: {schedule: "0 2 * * *", timezone: Mars/Olympus}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:45: triggers[0].cron.timezone: invalid time zone "Mars/Olympus": want an IANA name such as "Asia/Shanghai" or "UTC"`,
		},
		{
			name: "CronLocalTimezone",
			yaml: `triggers:
  - name: t
    cron: {schedule: "0 2 * * *", timezone: Local}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:45: triggers[0].cron.timezone: invalid time zone "Local": name an IANA zone such as "Europe/Berlin" or "UTC"`,
		},
		{
			name: "CronBadMissed",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@hourly", missed: catchup}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:41: triggers[0].cron.missed: invalid value "catchup" (allowed: skip, catch_up)`,
		},
		{
			name: "CronMaxCatchUpZero",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@hourly", missed: catch_up, max_catch_up: 0}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:65: triggers[0].cron.max_catch_up: must be between 1 and 1000, got 0`,
		},
		{
			name: "CronMaxCatchUpNotInt",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@hourly", missed: catch_up, max_catch_up: all}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:65: triggers[0].cron.max_catch_up: expected an integer, got "all"`,
		},

		// HTTP.
		{
			name: "HTTPMissingPath",
			yaml: `triggers:
  - name: t
    http: {id_header: X-Delivery}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:11: triggers[0].http.path: missing (required)`,
		},
		{
			name: "HTTPBadPath",
			yaml: `triggers:
  - name: t
    http: {path: "github/../admin"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:18: triggers[0].http.path: invalid hook path "github/../admin" (want segments of letters, digits, '.', '_', '~' or '-' separated by '/', e.g. github/push)`,
		},
		{
			name: "HTTPPathWithQuery",
			yaml: `triggers:
  - name: t
    http: {path: "push?x=1"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:18: triggers[0].http.path: invalid hook path "push?x=1" (want segments of letters, digits, '.', '_', '~' or '-' separated by '/', e.g. github/push)`,
		},
		{
			name: "HTTPDuplicatePath",
			yaml: `triggers:
  - {name: a, http: {path: signup}, event: {type: a, source: /s}}
  - {name: b, http: {path: /signup/}, event: {type: a, source: /s}}
`,
			want: `tasklane.yaml:3:28: triggers[1].http.path: duplicate hook path "signup" (first at line 2)`,
		},
		{
			name: "HTTPPathTakenByNotify",
			yaml: `triggers:
  - {name: a, http: {path: s3}, event: {type: a, source: /s}}
  - {name: b, objectstore: {mode: notify, bucket: images, path: s3}, event: {type: a}}
`,
			want: `tasklane.yaml:3:65: triggers[1].objectstore.path: duplicate hook path "s3" (first at line 2)`,
		},
		{
			name: "HTTPBadIDHeader",
			yaml: `triggers:
  - name: t
    http: {path: p, id_header: "X Delivery"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:32: triggers[0].http.id_header: invalid header name "X Delivery"`,
		},
		{
			name: "SignatureMissingSecretEnv",
			yaml: `triggers:
  - name: t
    http:
      path: p
      signature: {scheme: sha256}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:5:18: triggers[0].http.signature.secret_env: missing (required)`,
		},
		{
			name: "SignatureBadSecretEnv",
			yaml: `triggers:
  - name: t
    http:
      path: p
      signature: {secret_env: "1SECRET"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:5:31: triggers[0].http.signature.secret_env: invalid environment variable name "1SECRET" (want letters, digits and '_', not starting with a digit)`,
		},
		{
			name: "SignatureBadScheme",
			yaml: `triggers:
  - name: t
    http:
      path: p
      signature: {scheme: sha1, secret_env: S}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:5:27: triggers[0].http.signature.scheme: invalid value "sha1" (allowed: sha256, stripe)`,
		},
		{
			name: "SignatureBadHeader",
			yaml: `triggers:
  - name: t
    http:
      path: p
      signature: {header: "X-Sig:", secret_env: S}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:5:27: triggers[0].http.signature.header: invalid header name "X-Sig:"`,
		},
		{
			name: "SignatureEmptyHeader",
			yaml: `triggers:
  - name: t
    http:
      path: p
      signature: {header: "", secret_env: S}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:5:27: triggers[0].http.signature.header: missing (required)`,
		},
		{
			name: "SignatureTimestampHeaderWithStripe",
			yaml: `triggers:
  - name: t
    http:
      path: p
      signature: {scheme: stripe, timestamp_header: X-Time, secret_env: S}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:5:53: triggers[0].http.signature.timestamp_header: not used with scheme stripe (its header carries the timestamp)`,
		},
		{
			name: "SignatureBadTimestampHeader",
			yaml: `triggers:
  - name: t
    http:
      path: p
      signature: {timestamp_header: "X Time", secret_env: S}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:5:37: triggers[0].http.signature.timestamp_header: invalid header name "X Time"`,
		},
		{
			name: "SignatureToleranceTooLong",
			yaml: `triggers:
  - name: t
    http:
      path: p
      signature: {secret_env: S, tolerance: 48h}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:5:45: triggers[0].http.signature.tolerance: must be between 1s and 24h, got 48h`,
		},
		{
			name: "SignatureToleranceBad",
			yaml: `triggers:
  - name: t
    http:
      path: p
      signature: {secret_env: S, tolerance: 5 minutes}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:5:45: triggers[0].http.signature.tolerance: invalid duration "5 minutes" (use e.g. 30s, 5m, 1h)`,
		},

		// Object store.
		{
			name: "ObjectStoreMissingBucketAndEndpoint",
			yaml: `triggers:
  - name: t
    objectstore: {prefix: uploads/}
    event: {type: a}
`,
			want: `tasklane.yaml:3:18: triggers[0].objectstore.bucket: missing (required)
tasklane.yaml:3:18: triggers[0].objectstore.endpoint: missing (required)
tasklane.yaml:4:12: triggers[0].event.source: missing (required)`,
		},
		{
			name: "ObjectStoreBadBucket",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: My_Images, endpoint: "http://127.0.0.1:9000"}
    event: {type: a}
`,
			want: `tasklane.yaml:3:27: triggers[0].objectstore.bucket: invalid bucket name "My_Images" (want 3-63 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit)`,
		},
		{
			name: "ObjectStoreBadMode",
			yaml: `triggers:
  - name: t
    objectstore: {mode: push, bucket: images}
    event: {type: a}
`,
			want: `tasklane.yaml:3:25: triggers[0].objectstore.mode: invalid value "push" (allowed: poll, notify)`,
		},
		{
			name: "ObjectStoreBadEndpointScheme",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: images, endpoint: "s3://127.0.0.1:9000"}
    event: {type: a}
`,
			want: `tasklane.yaml:3:45: triggers[0].objectstore.endpoint: unsupported URL scheme "s3" (want http or https, e.g. http://127.0.0.1:9000)`,
		},
		{
			name: "ObjectStoreEndpointWithPath",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: images, endpoint: "http://127.0.0.1:9000/images"}
    event: {type: a}
`,
			want: `tasklane.yaml:3:45: triggers[0].objectstore.endpoint: an endpoint is scheme://host[:port] only, without path, query or credentials (want e.g. http://127.0.0.1:9000)`,
		},
		{
			name: "ObjectStoreEndpointWithCredentials",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: images, endpoint: "http://key:secret@127.0.0.1:9000"}
    event: {type: a}
`,
			want: `tasklane.yaml:3:45: triggers[0].objectstore.endpoint: an endpoint is scheme://host[:port] only, without path, query or credentials (want e.g. http://127.0.0.1:9000)`,
		},
		{
			name: "ObjectStoreBadEvents",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: images, endpoint: "http://127.0.0.1:9000", events: [created, modified, created]}
    event: {type: a}
`,
			want: `tasklane.yaml:3:88: triggers[0].objectstore.events[1]: invalid value "modified" (allowed: created, deleted)
tasklane.yaml:3:98: triggers[0].objectstore.events[2]: duplicate event "created"`,
		},
		{
			name: "ObjectStorePollIntervalTooShort",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: images, endpoint: "http://127.0.0.1:9000", poll_interval: 100ms}
    event: {type: a}
`,
			want: `tasklane.yaml:3:85: triggers[0].objectstore.poll_interval: must be at least 1s, got 100ms`,
		},
		{
			name: "ObjectStoreBadExisting",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: images, endpoint: "http://127.0.0.1:9000", existing: all}
    event: {type: a}
`,
			want: `tasklane.yaml:3:80: triggers[0].objectstore.existing: invalid value "all" (allowed: skip, emit)`,
		},
		{
			name: "ObjectStoreBadCredentialEnv",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: images, endpoint: "http://127.0.0.1:9000", access_key_env: "MINIO-USER", secret_key_env: ""}
    event: {type: a}
`,
			want: `tasklane.yaml:3:86: triggers[0].objectstore.access_key_env: invalid environment variable name "MINIO-USER" (want letters, digits and '_', not starting with a digit)
tasklane.yaml:3:116: triggers[0].objectstore.secret_key_env: missing (required)`,
		},
		{
			name: "ObjectStorePathInPollMode",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: images, endpoint: "http://127.0.0.1:9000", path: s3, token_env: TOKEN}
    event: {type: a}
`,
			want: `tasklane.yaml:3:76: triggers[0].objectstore.path: only used with mode notify
tasklane.yaml:3:91: triggers[0].objectstore.token_env: only used with mode notify`,
		},
		{
			name: "ObjectStoreNotifyMissingPath",
			yaml: `triggers:
  - name: t
    objectstore: {mode: notify, bucket: images}
    event: {type: a}
`,
			want: `tasklane.yaml:3:18: triggers[0].objectstore.path: missing (required)`,
		},
		{
			name: "ObjectStoreNotifyBadTokenEnv",
			yaml: `triggers:
  - name: t
    objectstore: {mode: notify, bucket: images, path: s3, token_env: "$TOKEN"}
    event: {type: a}
`,
			want: `tasklane.yaml:3:70: triggers[0].objectstore.token_env: invalid environment variable name "$TOKEN" (want letters, digits and '_', not starting with a digit)`,
		},
		{
			name: "ObjectStoreNotifyWithPollKeys",
			yaml: `triggers:
  - name: t
    objectstore:
      mode: notify
      bucket: images
      path: s3
      endpoint: "http://127.0.0.1:9000"
      region: us-east-1
      poll_interval: 10s
      existing: emit
      access_key_env: KEY
      secret_key_env: SECRET
    event: {type: a}
`,
			want: `tasklane.yaml:7:17: triggers[0].objectstore.endpoint: only used with mode poll
tasklane.yaml:8:15: triggers[0].objectstore.region: only used with mode poll
tasklane.yaml:9:22: triggers[0].objectstore.poll_interval: only used with mode poll
tasklane.yaml:10:17: triggers[0].objectstore.existing: only used with mode poll
tasklane.yaml:11:23: triggers[0].objectstore.access_key_env: only used with mode poll
tasklane.yaml:12:23: triggers[0].objectstore.secret_key_env: only used with mode poll`,
		},

		// Shapes and bounds not covered above.
		{
			name: "TriggersNotAList",
			yaml: `triggers: {name: t}
`,
			want: `tasklane.yaml:1:11: triggers: expected a list, got a mapping`,
		},
		{
			name: "TriggerNotAMapping",
			yaml: `triggers:
  - nightly
`,
			want: `tasklane.yaml:2:5: triggers[0]: expected a mapping, got "nightly"`,
		},
		{
			name: "HTTPNotAMapping",
			yaml: `triggers:
  - name: t
    http: signup
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:11: triggers[0].http: expected a mapping, got "signup"`,
		},
		{
			name: "EventUnknownKey",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@hourly"}
    event: {type: a, source: /s, subject: x}
`,
			want: `tasklane.yaml:4:34: triggers[0].event.subject: unknown key (known keys: type, source)`,
		},
		{
			name: "EventSourceMissing",
			yaml: `triggers:
  - name: t
    http: {path: p}
    event: {type: a}
`,
			want: `tasklane.yaml:4:12: triggers[0].event.source: missing (required)`,
		},
		{
			name: "CronMaxCatchUpTooLarge",
			yaml: `triggers:
  - name: t
    cron: {schedule: "@hourly", missed: catch_up, max_catch_up: 1001}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:65: triggers[0].cron.max_catch_up: must be between 1 and 1000, got 1001`,
		},
		{
			name: "HTTPUnknownKey",
			yaml: `triggers:
  - name: t
    http: {path: p, secret: abc}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:21: triggers[0].http.secret: unknown key (known keys: path, id_header, signature)`,
		},
		{
			name: "HTTPPathDotSegment",
			yaml: `triggers:
  - name: t
    http: {path: "./p"}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:3:18: triggers[0].http.path: invalid hook path "./p" (want segments of letters, digits, '.', '_', '~' or '-' separated by '/', e.g. github/push)`,
		},
		{
			name: "SignatureUnknownKey",
			yaml: `triggers:
  - name: t
    http:
      path: p
      signature: {secret_env: S, secret: plain}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:5:34: triggers[0].http.signature.secret: unknown key (known keys: scheme, header, timestamp_header, secret_env, tolerance)`,
		},
		{
			name: "SignatureToleranceTooShort",
			yaml: `triggers:
  - name: t
    http:
      path: p
      signature: {secret_env: S, tolerance: 500ms}
    event: {type: a, source: /s}
`,
			want: `tasklane.yaml:5:45: triggers[0].http.signature.tolerance: must be between 1s and 24h, got 500ms`,
		},
		{
			name: "ObjectStoreUnknownKey",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: images, endpoint: "http://127.0.0.1:9000", interval: 5s}
    event: {type: a}
`,
			want: `tasklane.yaml:3:70: triggers[0].objectstore.interval: unknown key (known keys: mode, endpoint, region, bucket, prefix, suffix, events, poll_interval, existing, access_key_env, secret_key_env, path, token_env)`,
		},
		{
			name: "ObjectStoreEventsNotAList",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: images, endpoint: "http://127.0.0.1:9000", events: created}
    event: {type: a}
`,
			want: `tasklane.yaml:3:78: triggers[0].objectstore.events: expected a list, got "created"`,
		},
		{
			name: "ObjectStoreBucketTooShort",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: ab, endpoint: "http://127.0.0.1:9000"}
    event: {type: a}
`,
			want: `tasklane.yaml:3:27: triggers[0].objectstore.bucket: invalid bucket name "ab" (want 3-63 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit)`,
		},
		{
			name: "ObjectStoreBucketDoubleDot",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: "my..images", endpoint: "http://127.0.0.1:9000"}
    event: {type: a}
`,
			want: `tasklane.yaml:3:27: triggers[0].objectstore.bucket: invalid bucket name "my..images" (want 3-63 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit)`,
		},
		{
			name: "ObjectStoreEndpointNotAURL",
			yaml: `triggers:
  - name: t
    objectstore: {bucket: images, endpoint: "127.0.0.1:9000"}
    event: {type: a}
`,
			want: `tasklane.yaml:3:45: triggers[0].objectstore.endpoint: invalid URL (want e.g. http://127.0.0.1:9000)`,
		},
		{
			name: "ObjectStoreNotifyBadPath",
			yaml: `triggers:
  - name: t
    objectstore: {mode: notify, bucket: images, path: "s3 images"}
    event: {type: a}
`,
			want: `tasklane.yaml:3:55: triggers[0].objectstore.path: invalid hook path "s3 images" (want segments of letters, digits, '.', '_', '~' or '-' separated by '/', e.g. github/push)`,
		},
		{
			name: "ObjectStorePathTakenByHTTP",
			yaml: `triggers:
  - {name: a, objectstore: {mode: notify, bucket: images, path: s3/images}, event: {type: a}}
  - {name: b, http: {path: /s3/images}, event: {type: a, source: /s}}
`,
			want: `tasklane.yaml:3:28: triggers[1].http.path: duplicate hook path "s3/images" (first at line 2)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := tt.yaml
			if !strings.Contains(doc, "functions:") {
				// A function taking what the triggers emit, appended so
				// that the lines above keep their numbers.
				doc += "\n" + takesA
			}
			cfg, err := config.Parse(file, []byte(doc))
			require.Nil(t, cfg)
			require.EqualError(t, err, tt.want)
			for _, p := range problems(t, err) {
				require.Equal(t, file, p.File)
				require.Positive(t, p.Line)
				require.True(t, strings.HasPrefix(p.Field, "triggers"), "field %q", p.Field)
			}
		})
	}
}

func TestTriggerDefaults(t *testing.T) {
	t.Parallel()

	cfg, err := config.Parse(file, []byte(`triggers:
  - name: nightly
    cron: {schedule: "0 2 * * *"}
    event: {type: com.example.report, source: /cron/nightly}
  - name: signup
    http:
      path: /signup/
      signature: {secret_env: SIGNUP_SECRET}
    event: {type: com.example.signup, source: /hooks/signup}
  - name: stripe
    http:
      path: stripe
      signature: {scheme: stripe, secret_env: STRIPE_SECRET}
    event: {type: com.example.payment, source: /hooks/stripe}
  - name: images
    objectstore: {endpoint: "http://127.0.0.1:9000", bucket: images}
    event: {type: com.example.image}
  - name: images-notify
    objectstore: {mode: notify, bucket: images, path: minio/images, events: [created, deleted]}
    event: {type: com.example.image, source: minio:images}
functions:
  - name: f
    events: [com.example.report, com.example.signup, com.example.payment, com.example.image.created, com.example.image.deleted]
    endpoint: builtin:noop
`))
	require.NoError(t, err)
	tr := cfg.Triggers

	require.Equal(t, &config.CronTrigger{Schedule: "0 2 * * *", Timezone: "UTC", Missed: "skip", MaxCatchUp: 10}, tr[0].Cron)
	require.Equal(t, config.TriggerKindCron, tr[0].Kind())
	require.Equal(t, config.DefaultTenant, tr[0].TenantID())
	require.Empty(t, tr[0].HookPath())

	require.Equal(t, &config.Signature{Scheme: "sha256", Header: "X-Hub-Signature-256", SecretEnv: "SIGNUP_SECRET",
		Tolerance: config.Duration(5 * time.Minute)}, tr[1].HTTP.Signature)
	require.Equal(t, "signup", tr[1].HookPath())
	require.Equal(t, config.TriggerKindHTTP, tr[1].Kind())
	require.Equal(t, "Stripe-Signature", tr[2].HTTP.Signature.Header)

	require.Equal(t, &config.ObjectStoreTrigger{
		Mode: "poll", Endpoint: "http://127.0.0.1:9000", Bucket: "images", Events: []string{"created"},
		PollInterval: config.Duration(30 * time.Second), Existing: "skip",
		AccessKeyEnv: "AWS_ACCESS_KEY_ID", SecretKeyEnv: "AWS_SECRET_ACCESS_KEY",
	}, tr[3].ObjectStore)
	require.Equal(t, "s3://images", tr[3].Event.Source)
	require.Empty(t, tr[3].HookPath())
	require.Equal(t, config.TriggerKindObjectStore, tr[3].Kind())

	// Notify mode takes none of the poll defaults.
	require.Equal(t, &config.ObjectStoreTrigger{
		Mode: "notify", Bucket: "images", Path: "minio/images", Events: []string{"created", "deleted"},
	}, tr[4].ObjectStore)
	require.Equal(t, "minio/images", tr[4].HookPath())
	require.Equal(t, "minio:images", tr[4].Event.Source)

	// WithDefaults copies: changing the result leaves the input alone.
	in := &config.Config{Triggers: []config.Trigger{{Name: "c", Cron: &config.CronTrigger{Schedule: "@hourly"}}}}
	out := in.WithDefaults()
	out.Triggers[0].Cron.Timezone = "Asia/Tokyo"
	require.Empty(t, in.Triggers[0].Cron.Timezone)
}

func TestParseTriggersExampleFile(t *testing.T) {
	t.Parallel()

	cfg, err := config.Load(filepath.Join("..", "..", "examples", "triggers.yaml"))
	require.NoError(t, err)
	kinds := map[string]int{}
	for _, tr := range cfg.Triggers {
		kinds[tr.Kind()]++
	}
	require.Equal(t, map[string]int{"cron": 1, "http": 1, "objectstore": 2}, kinds)
}

func TestParseCronSchedule(t *testing.T) {
	t.Parallel()

	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return tm
	}
	shanghai, err := config.LoadTimezone("Asia/Shanghai")
	require.NoError(t, err)
	tests := []struct {
		spec     string
		from     time.Time
		wantNext time.Time
	}{
		{"0 2 * * *", at("2026-01-01T00:00:00Z"), at("2026-01-01T02:00:00Z")},
		{"0 2 * * *", at("2025-12-31T17:00:00Z").In(shanghai), at("2026-01-01T02:00:00+08:00")}, // 01:00 in Shanghai
		{"*/15 * * * *", at("2026-01-01T00:07:00Z"), at("2026-01-01T00:15:00Z")},
		{"0 9 * * mon-fri", at("2026-01-03T00:00:00Z"), at("2026-01-05T09:00:00Z")}, // Saturday -> Monday
		{"@hourly", at("2026-01-01T00:30:00Z"), at("2026-01-01T01:00:00Z")},
		{"@daily", at("2026-01-01T00:30:00Z"), at("2026-01-02T00:00:00Z")},
		{" @every 30s ", at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:30Z")},
	}
	for _, tt := range tests {
		s, err := config.ParseCronSchedule(tt.spec)
		require.NoError(t, err, tt.spec)
		require.True(t, tt.wantNext.Equal(s.Next(tt.from)), "%s from %s: got %s", tt.spec, tt.from, s.Next(tt.from))
	}

	s, err := config.ParseCronSchedule("@every 1h30m")
	require.NoError(t, err)
	require.Equal(t, cron.ConstantDelaySchedule{Delay: 90 * time.Minute}, s)

	// Malformed input the library would panic on is an error.
	for _, bad := range []string{"TZ=UTC", "CRON_TZ=", "", "   ", "@every", "@every -1s", "* * * *", "60 * * * *", "a b c d e"} {
		_, err := config.ParseCronSchedule(bad)
		require.ErrorIs(t, err, config.ErrInvalidSchedule, "%q", bad)
	}
}

// TestCheckTriggerEnv: the environment variables a trigger cannot start
// without, each reported with file, line and field.
func TestCheckTriggerEnv(t *testing.T) {
	t.Parallel()

	cfg, err := config.Parse(file, []byte(`triggers:
  - name: signed
    http:
      path: signed
      signature: {secret_env: SIGNED_SECRET}
    event: {type: a, source: /s}
  - name: open
    http: {path: open}
    event: {type: a, source: /s}
  - name: notify
    objectstore: {mode: notify, bucket: images, path: s3, token_env: MINIO_TOKEN}
    event: {type: a}
  - name: notify-open
    objectstore: {mode: notify, bucket: images, path: s3-open}
    event: {type: a}
  - name: poll
    objectstore: {endpoint: "http://127.0.0.1:9000", bucket: images, access_key_env: S3_KEY, secret_key_env: S3_SECRET}
    event: {type: a}
`+takesA))
	require.NoError(t, err)

	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{
			name: "NothingSet",
			env:  map[string]string{},
			want: `tasklane.yaml:5:31: triggers[0].http.signature.secret_env: environment variable SIGNED_SECRET is not set (it holds the webhook's signing secret)
tasklane.yaml:11:70: triggers[2].objectstore.token_env: environment variable MINIO_TOKEN is not set (it holds the notification token)`,
		},
		{
			name: "SecretSet",
			env:  map[string]string{"SIGNED_SECRET": "s"},
			want: `tasklane.yaml:11:70: triggers[2].objectstore.token_env: environment variable MINIO_TOKEN is not set (it holds the notification token)`,
		},
		{
			name: "AllSet",
			env:  map[string]string{"SIGNED_SECRET": "s", "MINIO_TOKEN": "t"},
			want: "", // poll credentials are optional: empty means anonymous
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := cfg.CheckTriggerEnv(func(k string) string { return tt.env[k] })
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.want)
		})
	}
}
