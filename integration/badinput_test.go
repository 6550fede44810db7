//go:build integration

package integration

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
)

const otherKey = "other-integration-key"

// The limits of badInputConfig: small, so the size rows stay small.
const (
	badMaxEventBytes  = 1024
	badMaxBatchBytes  = 4096
	badMaxBatchEvents = 5
)

var badInputConfig = fmt.Sprintf(`
server: {max_event_bytes: %d, max_batch_bytes: %d, max_batch_events: %d}
tenants:
  - id: acme
    api_keys: [%q]
  - id: other
    api_keys: [%q]
functions:
  - name: work
    events: [com.example.work]
    endpoint: builtin:noop
triggers:
  - name: badhook
    tenant: acme
    http: {path: badhook, id_header: X-Delivery, signature: {secret_env: %s}}
    event: {type: com.example.work, source: /hooks/badhook}
`, badMaxEventBytes, badMaxBatchBytes, badMaxBatchEvents, acmeKey, otherKey, badHookSecretEnv)

// badHookSecretEnv holds the secret of badInputConfig's webhook.
const (
	badHookSecretEnv = "TL_IT_BADHOOK_SECRET"
	badHookSecret    = "badhook-secret"
)

// binaryAttrBytes is what the attributes of a binary-mode request weigh
// against server.max_event_bytes: each ce- header's name without "ce-" and
// its value, and the Content-Type as datacontenttype.
func binaryAttrBytes(h map[string]string, contentType string) int {
	n := len("datacontenttype") + len(contentType)
	for k, v := range h {
		n += len(k) - len("ce-") + len(v)
	}
	return n
}

const (
	ctJSON       = "application/json"
	ctStructured = "application/cloudevents+json"
	ctBatch      = "application/cloudevents-batch+json"
	badSource    = "/integration/badinput"
	// noAuth as apiCall.auth sends no Authorization header.
	noAuth = "<none>"
)

// apiCall is one request to the app's HTTP API.
type apiCall struct {
	method string // default POST
	path   string // default /v1/events
	// auth is the Authorization header: default "Bearer " + acmeKey, none
	// for noAuth.
	auth        string
	contentType string
	header      map[string]string
	body        string
	// chunked sends the body without a Content-Length.
	chunked bool
}

func bearer(key string) string { return "Bearer " + key }

func (c apiCall) do(t *testing.T, baseURL string) (*http.Response, []byte) {
	t.Helper()
	var body io.Reader = strings.NewReader(c.body)
	if c.chunked {
		body = io.MultiReader(body) // length unknown to the client
	}
	req, err := http.NewRequest(cmp.Or(c.method, http.MethodPost), baseURL+cmp.Or(c.path, "/v1/events"), body)
	require.NoError(t, err)
	switch c.auth {
	case "":
		req.Header.Set("Authorization", bearer(acmeKey))
	case noAuth:
	default:
		req.Header.Set("Authorization", c.auth)
	}
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

// structuredEvent is a valid structured-mode event of type com.example.work
// with edits applied: a nil value removes the attribute.
func structuredEvent(id string, edits map[string]any) string {
	m := map[string]any{
		"specversion": "1.0", "id": id, "source": badSource, "type": "com.example.work",
		"datacontenttype": ctJSON, "data": map[string]int{"n": 1},
	}
	for k, v := range edits {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// sizedEvent is a valid structured-mode event of exactly size bytes.
func sizedEvent(id string, size int) string {
	pad := size - len(structuredEvent(id, map[string]any{"data": ""}))
	return structuredEvent(id, map[string]any{"data": strings.Repeat("x", pad)})
}

// binaryHeaders are the ce- headers of a valid binary-mode event of type
// com.example.work with edits applied: an empty value removes the header.
func binaryHeaders(id string, edits map[string]string) map[string]string {
	h := map[string]string{"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": badSource, "Ce-Type": "com.example.work"}
	for k, v := range edits {
		k = http.CanonicalHeaderKey(k)
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	return h
}

func batchOf(events ...string) string { return "[" + strings.Join(events, ",") + "]" }

// binaryCall, structuredCall and batchCall are submissions by acme.
func binaryCall(id string, edits map[string]string) apiCall {
	return apiCall{contentType: ctJSON, header: binaryHeaders(id, edits), body: `{"n":1}`}
}

func structuredCall(event string) apiCall { return apiCall{contentType: ctStructured, body: event} }

func batchCall(events ...string) apiCall {
	return apiCall{contentType: ctBatch, body: batchOf(events...)}
}

// submitOK sends c and requires 202 with new tasks, which it returns.
func submitOK(t *testing.T, e *env, c apiCall) []contracts.SubmittedTask {
	t.Helper()
	resp, body := c.do(t, e.app.URL())
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
	var sr contracts.SubmitResponse
	require.NoError(t, json.Unmarshal(body, &sr))
	require.NotEmpty(t, sr.Tasks)
	for _, task := range sr.Tasks {
		require.False(t, task.Duplicate, "event %s was recorded before", task.EventID)
	}
	return sr.Tasks
}

// requireLedger requires each tenant's task listing (by key) to hold exactly
// the task ids in want.
func requireLedger(t *testing.T, e *env, want map[string][]string) {
	t.Helper()
	for key, ids := range want {
		resp, body := apiCall{method: http.MethodGet, path: "/v1/tasks?limit=500", auth: bearer(key)}.do(t, e.app.URL())
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
		var list contracts.TaskList
		require.NoError(t, json.Unmarshal(body, &list))
		got := make([]string, 0, len(list.Tasks))
		for _, task := range list.Tasks {
			got = append(got, task.ID)
		}
		require.ElementsMatch(t, ids, got, "tasks listed for key %s", key)
	}
}

func taskIDs(tasks []contracts.SubmittedTask) []string {
	ids := make([]string, len(tasks))
	for i, task := range tasks {
		ids[i] = task.ID
	}
	return ids
}

// TestIntegrationBadInput sends one bad request after another to a real app
// and requires, for each, the exact status, a JSON {"error": ...} naming the
// problem, and a task ledger left exactly as it was.
func TestIntegrationBadInput(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runBadInput(t, driver) })
	}
}

func runBadInput(t *testing.T, driver string) {
	t.Setenv(badHookSecretEnv, badHookSecret)
	e := startTasklane(t, driver, badInputConfig)

	// Known tasks, each right at a size limit (a binary-mode event's
	// attributes count with its data).
	acmeBinary := submitOK(t, e, apiCall{
		contentType: "application/octet-stream",
		header:      binaryHeaders("acme-binary", nil),
		body:        strings.Repeat("x", badMaxEventBytes-binaryAttrBytes(binaryHeaders("acme-binary", nil), "application/octet-stream")),
	})
	acmeStructured := submitOK(t, e, structuredCall(sizedEvent("acme-structured", badMaxEventBytes)))
	acmeBatch := submitOK(t, e, batchCall(
		sizedEvent("acme-batch-0", badMaxEventBytes),
		structuredEvent("acme-batch-1", nil),
		structuredEvent("acme-batch-2", nil),
		structuredEvent("acme-batch-3", nil),
		structuredEvent("acme-batch-4", nil),
	))
	require.Len(t, acmeBatch, badMaxBatchEvents)
	otherTasks := submitOK(t, e, apiCall{
		auth: bearer(otherKey), contentType: ctStructured, body: structuredEvent("other-own", nil),
	})
	acmeTask, otherTask := acmeBinary[0].ID, otherTasks[0].ID
	want := map[string][]string{
		acmeKey:  append(append(taskIDs(acmeBinary), taskIDs(acmeStructured)...), taskIDs(acmeBatch)...),
		otherKey: taskIDs(otherTasks),
	}
	requireLedger(t, e, want)

	// Good events that ride in refused batches: none may be recorded.
	var mixedGood []string
	good := func() string {
		ev := structuredEvent(fmt.Sprintf("mixed-good-%d", len(mixedGood)), nil)
		mixedGood = append(mixedGood, ev)
		return ev
	}
	deliverAt := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	oversized := strings.Repeat("x", badMaxEventBytes+1)
	limitMsg := fmt.Sprintf("exceeds the limit of %d bytes", badMaxEventBytes)
	// eventLimitMsg names the limit a whole event (attributes too) is over.
	eventLimitMsg := fmt.Sprintf("limit of %d bytes (server.max_event_bytes)", badMaxEventBytes)
	long := strings.Repeat("l", badMaxEventBytes+1)
	manyExtensions := map[string]string{}
	for i := range 200 {
		manyExtensions[fmt.Sprintf("ce-x%d", i)] = "v"
	}
	// One byte over: the data fits the body limit, not with the attributes.
	overByOne := strings.Repeat("x", badMaxEventBytes+1-binaryAttrBytes(binaryHeaders("bad-1", nil), ctJSON))
	hookBody := `{"email":"ada@example.com"}`
	hook := func(header map[string]string) apiCall {
		h := map[string]string{"X-Hub-Signature-256": githubSignature(badHookSecret, hookBody), "X-Delivery": "delivery-1"}
		for k, v := range header {
			h[k] = v
		}
		return apiCall{path: "/hooks/badhook", contentType: ctJSON, header: h, body: hookBody}
	}
	anEvent := structuredCall(structuredEvent("bad-0", nil))
	withAuth := func(c apiCall, auth string) apiCall { c.auth = auth; return c }
	get := func(path, key string) apiCall {
		return apiCall{method: http.MethodGet, path: path, auth: bearer(key)}
	}

	cases := []struct {
		name   string
		call   apiCall
		status int
		// want is in the error message; for a 2xx, in the body.
		want string
	}{
		// Credentials come first, whatever the body.
		{"no key", withAuth(anEvent, noAuth), 401, "missing API key"},
		{"wrong key", withAuth(anEvent, bearer("not-a-key")), 401, "invalid API key"},
		{"basic auth", withAuth(anEvent, "Basic YWNtZTpzZWNyZXQ="), 401, "malformed Authorization header"},
		{"bearer without key", withAuth(anEvent, "Bearer"), 401, "malformed Authorization header"},
		{"key without scheme", withAuth(anEvent, acmeKey), 401, "malformed Authorization header"},
		{"wrong key and bad body", withAuth(structuredCall(`{"oops"`), bearer("not-a-key")), 401, "invalid API key"},
		{"list tasks without key", apiCall{method: http.MethodGet, path: "/v1/tasks", auth: noAuth}, 401, "missing API key"},
		{"get task with wrong key", get("/v1/tasks/"+acmeTask, "not-a-key"), 401, "invalid API key"},

		// Binary mode.
		{"binary: no id", binaryCall("bad-1", map[string]string{"ce-id": ""}), 400, "id: MUST be a non-empty string"},
		{"binary: empty id", apiCall{contentType: ctJSON, header: binaryHeaders("", nil), body: `{"n":1}`}, 400, "id is required to be a non-empty string"},
		{"binary: no source", binaryCall("bad-1", map[string]string{"ce-source": ""}), 400, "source: REQUIRED"},
		{"binary: no type", binaryCall("bad-1", map[string]string{"ce-type": ""}), 400, "type: MUST be a non-empty string"},
		{"binary: no specversion", binaryCall("bad-1", map[string]string{"ce-specversion": ""}), 400, "specversion: missing ce-specversion header"},
		{"binary: unknown specversion", binaryCall("bad-1", map[string]string{"ce-specversion": "2.0"}), 400, `specversion: unknown value "2.0"`},
		{"binary: bad time", binaryCall("bad-1", map[string]string{"ce-time": "yesterday"}), 400, "time"},
		{"binary: unknown type", binaryCall("bad-1", map[string]string{"ce-type": "com.example.nobody"}), 422, `type: no function subscribes to type "com.example.nobody"`},
		{"binary: priority too high", binaryCall("bad-1", map[string]string{"ce-priority": "10"}), 400, "priority: must be an integer from 0 to 9, got 10"},
		{"binary: priority negative", binaryCall("bad-1", map[string]string{"ce-priority": "-1"}), 400, "priority: must be an integer from 0 to 9"},
		{"binary: priority not a number", binaryCall("bad-1", map[string]string{"ce-priority": "high"}), 400, "priority: must be an integer from 0 to 9, got high"},
		{"binary: delay and deliverat", binaryCall("bad-1", map[string]string{"ce-delay": "5", "ce-deliverat": deliverAt}), 400, "delay, deliverat: give one of them, not both"},
		{"binary: delay not a number", binaryCall("bad-1", map[string]string{"ce-delay": "soon"}), 400, "delay: must be an integer"},
		{"binary: deliverat not a time", binaryCall("bad-1", map[string]string{"ce-deliverat": "tomorrow"}), 400, "deliverat: must be an RFC 3339 time"},
		{"binary: ttl and expiresat", binaryCall("bad-1", map[string]string{"ce-ttl": "5", "ce-expiresat": deliverAt}), 400, "ttl, expiresat: give one of them, not both"},
		{"binary: ttl zero", binaryCall("bad-1", map[string]string{"ce-ttl": "0"}), 400, "ttl: must be an integer from 1 to"},
		{"binary: ttl negative", binaryCall("bad-1", map[string]string{"ce-ttl": "-1"}), 400, "ttl: must be an integer from 1 to"},
		{"binary: expiresat not a time", binaryCall("bad-1", map[string]string{"ce-expiresat": "1970"}), 400, "expiresat: must be an RFC 3339 time"},
		{"binary: control character in subject", binaryCall("bad-1", map[string]string{"ce-subject": "a\tb"}), 400, "subject: control character U+0009 not allowed"},
		{"binary: subject not UTF-8", binaryCall("bad-1", map[string]string{"ce-subject": "caf\xe9"}), 400, "subject: not valid UTF-8"},
		{"binary: too large", apiCall{contentType: ctJSON, header: binaryHeaders("bad-1", nil), body: oversized}, 413, limitMsg},
		{"binary: too large, chunked", apiCall{contentType: ctJSON, header: binaryHeaders("bad-1", nil), body: oversized, chunked: true}, 413, limitMsg},
		{"binary: attributes and data over the limit", apiCall{contentType: ctJSON, header: binaryHeaders("bad-1", nil), body: overByOne}, 413,
			fmt.Sprintf("event of %d bytes (attributes, extensions and data) exceeds the %s", badMaxEventBytes+1, eventLimitMsg)},
		{"binary: large id", binaryCall("bad-1", map[string]string{"ce-id": long}), 413, eventLimitMsg},
		{"binary: large extension", binaryCall("bad-1", map[string]string{"ce-note": long}), 413, eventLimitMsg},
		{"binary: large Content-Type", apiCall{contentType: "application/json; x=" + long, header: binaryHeaders("bad-1", nil), body: `{"n":1}`}, 413, eventLimitMsg},
		{"binary: 200 extensions", binaryCall("bad-1", manyExtensions), 413, "binary mode: 204 ce- headers; an event has at most 109 attributes and extensions"},

		// Structured mode.
		{"structured: no id", structuredCall(structuredEvent("", map[string]any{"id": nil})), 400, "id: MUST be a non-empty string"},
		{"structured: no source", structuredCall(structuredEvent("bad-2", map[string]any{"source": nil})), 400, "source: REQUIRED"},
		{"structured: no type", structuredCall(structuredEvent("bad-2", map[string]any{"type": nil})), 400, "type: MUST be a non-empty string"},
		{"structured: no specversion", structuredCall(structuredEvent("bad-2", map[string]any{"specversion": nil})), 400, "specversion"},
		{"structured: unknown specversion", structuredCall(structuredEvent("bad-2", map[string]any{"specversion": "2.0"})), 400, "specversion: unknown value"},
		{"structured: malformed JSON", structuredCall(`{"specversion": "1.0", "id": `), 400, "malformed JSON"},
		{"structured: an array", structuredCall(batchOf(structuredEvent("bad-2", nil))), 400, "an event is a JSON object, got an array"},
		{"structured: unknown type", structuredCall(structuredEvent("bad-2", map[string]any{"type": "com.example.nobody"})), 422, `type: no function subscribes to type "com.example.nobody"`},
		{"structured: priority too high", structuredCall(structuredEvent("bad-2", map[string]any{"priority": 10})), 400, "priority: must be an integer from 0 to 9, got 10"},
		{"structured: priority fractional", structuredCall(structuredEvent("bad-2", map[string]any{"priority": 4.5})), 400, "priority: must be an integer, got 4.5"},
		{"structured: priority beyond int32", structuredCall(structuredEvent("bad-2", map[string]any{"priority": 1 << 40})), 400, "priority: must be an integer, got 1099511627776"},
		{"structured: delay fractional", structuredCall(structuredEvent("bad-2", map[string]any{"delay": 0.5})), 400, "delay: must be an integer, got 0.5"},
		{"structured: ttl negative", structuredCall(structuredEvent("bad-2", map[string]any{"ttl": -5})), 400, "ttl: must be an integer from 1 to"},
		{"structured: ttl zero", structuredCall(structuredEvent("bad-2", map[string]any{"ttl": 0})), 400, "ttl: must be an integer from 1 to"},
		{"structured: priority not a number", structuredCall(structuredEvent("bad-2", map[string]any{"priority": "high"})), 400, "priority: must be an integer from 0 to 9, got high"},
		{"structured: delay and deliverat", structuredCall(structuredEvent("bad-2", map[string]any{"delay": 5, "deliverat": deliverAt})), 400, "delay, deliverat: give one of them, not both"},
		{"structured: control character in id", structuredCall(structuredEvent("bad\n2", nil)), 400, "id: control character U+000A not allowed"},
		{"structured: id not UTF-8", structuredCall("{\"specversion\":\"1.0\",\"id\":\"bad-\xea\",\"source\":\"/s\",\"type\":\"com.example.work\"}"), 400, "id: not valid UTF-8"},
		{"structured: C1 control in extension", structuredCall(structuredEvent("bad-2", map[string]any{"note": "\u0085"})), 400, "note: control character U+0085 not allowed"},
		{"structured: too large", structuredCall(sizedEvent("bad-2", badMaxEventBytes+1)), 413, limitMsg},
		{"structured: too large, chunked", apiCall{contentType: ctStructured, body: sizedEvent("bad-2", badMaxEventBytes+1), chunked: true}, 413, limitMsg},

		// Batch mode.
		{"batch: malformed JSON", apiCall{contentType: ctBatch, body: `[` + structuredEvent("bad-3", nil)}, 400, "malformed JSON"},
		{"batch: not an array", apiCall{contentType: ctBatch, body: structuredEvent("bad-3", nil)}, 400, "batch must be a JSON array"},
		{"batch: empty", batchCall(), 400, "batch is empty"},
		{"batch: too many events", batchCall(
			structuredEvent("bad-3", nil), structuredEvent("bad-4", nil), structuredEvent("bad-5", nil),
			structuredEvent("bad-6", nil), structuredEvent("bad-7", nil), structuredEvent("bad-8", nil),
		), 413, fmt.Sprintf("batch has %d events; the limit is %d", badMaxBatchEvents+1, badMaxBatchEvents)},
		{"batch: too large", batchCall(
			sizedEvent("bad-3", 1000), sizedEvent("bad-4", 1000), sizedEvent("bad-5", 1000),
			sizedEvent("bad-6", 1000), sizedEvent("bad-7", 1000),
		), 413, fmt.Sprintf("exceeds the limit of %d bytes", badMaxBatchBytes)},
		{"batch: one event too large", batchCall(good(), sizedEvent("bad-3", badMaxEventBytes+1)), 413,
			fmt.Sprintf("events[1]: event of %d bytes exceeds the limit of %d bytes", badMaxEventBytes+1, badMaxEventBytes)},
		{"batch: one event without id", batchCall(good(), structuredEvent("", map[string]any{"id": nil}), good()), 400, "events[1]: invalid event: id: MUST be a non-empty string"},
		{"batch: one event without specversion", batchCall(good(), good(), structuredEvent("bad-3", map[string]any{"specversion": nil})), 400, "events[2]: invalid event: specversion"},
		{"batch: one event not an object", batchCall(good(), "42"), 400, "events[1]: invalid event: an event is a JSON object, got a number"},
		{"batch: one event of an unknown type", batchCall(good(), structuredEvent("bad-3", map[string]any{"type": "com.example.nobody"})), 422, `events[1]: type: no function subscribes to type "com.example.nobody"`},
		{"batch: one event with a bad priority", batchCall(good(), structuredEvent("bad-3", map[string]any{"priority": 99})), 400, "events[1]: priority: must be an integer from 0 to 9, got 99"},

		// A signed webhook's delivery id and Content-Type become the event's
		// id and datacontenttype: bounded the same way.
		{"webhook: large delivery id", hook(map[string]string{"X-Delivery": long}), 413, eventLimitMsg},
		{"webhook: large Content-Type", hook(map[string]string{"Content-Type": "application/json; x=" + long}), 413, eventLimitMsg},

		// Neither mode.
		{"plain text", apiCall{contentType: "text/plain", body: "hello"}, 415, `not a CloudEvent: send binary mode`},
		{"no content type", apiCall{body: structuredEvent("bad-4", nil)}, 415, `got Content-Type ""`},
		{"JSON without ce- headers", apiCall{contentType: ctJSON, body: structuredEvent("bad-4", nil)}, 415, `got Content-Type "application/json"`},

		// Task API.
		{"cancel another tenant's task", apiCall{method: http.MethodDelete, path: "/v1/tasks/" + acmeTask, auth: bearer(otherKey)}, 404, "task not found"},
		{"cancel without key", apiCall{method: http.MethodDelete, path: "/v1/tasks/" + acmeTask, auth: noAuth}, 401, "missing API key"},
		{"owner reads its task", get("/v1/tasks/"+acmeTask, acmeKey), 200, acmeTask},
		{"another tenant's task", get("/v1/tasks/"+acmeTask, otherKey), 404, "task not found"},
		{"another tenant's task, reversed", get("/v1/tasks/"+otherTask, acmeKey), 404, "task not found"},
		{"other reads its task", get("/v1/tasks/"+otherTask, otherKey), 200, otherTask},
		{"unknown task", get("/v1/tasks/01JUNKNOWNTASK0000000000000", acmeKey), 404, "task not found"},
		{"unknown state filter", get("/v1/tasks?state=bogus", acmeKey), 400, `state: unknown state "bogus"`},
		{"limit zero", get("/v1/tasks?limit=0", acmeKey), 400, "limit: must be an integer from 1 to 500"},
		{"limit too high", get("/v1/tasks?limit=501", acmeKey), 400, "limit: must be an integer from 1 to 500"},
		{"limit negative", get("/v1/tasks?limit=-3", acmeKey), 400, "limit: must be an integer from 1 to 500"},
		{"limit not a number", get("/v1/tasks?limit=ten", acmeKey), 400, "limit: must be an integer from 1 to 500"},
		{"cursor garbage", get("/v1/tasks?cursor=garbage", acmeKey), 400, "cursor: not a cursor this API returned"},
		{"cursor negative skip", get("/v1/tasks?cursor=1700000000000000:-1", acmeKey), 400, "cursor: not a cursor this API returned"},
		{"cursor bad score", get("/v1/tasks?cursor=abc:1", acmeKey), 400, "cursor: not a cursor this API returned"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := tc.call.do(t, e.app.URL())
			require.Equal(t, tc.status, resp.StatusCode, "body: %s", body)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			if tc.status < 400 {
				require.Contains(t, string(body), tc.want)
				return
			}
			var fields map[string]any
			require.NoError(t, json.Unmarshal(body, &fields), "body: %s", body)
			require.Len(t, fields, 1, "body: %s", body)
			msg, ok := fields["error"].(string)
			require.True(t, ok, "body: %s", body)
			require.Contains(t, msg, tc.want)
			if tc.status == http.StatusUnauthorized {
				require.NotEmpty(t, resp.Header.Get("WWW-Authenticate"))
			}
			requireLedger(t, e, want)
		})
	}

	t.Run("good events of refused batches are new", func(t *testing.T) {
		require.NotEmpty(t, mixedGood)
		for _, ev := range mixedGood {
			want[acmeKey] = append(want[acmeKey], taskIDs(submitOK(t, e, structuredCall(ev)))...)
		}
		requireLedger(t, e, want)
	})
}
