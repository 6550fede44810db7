package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// testLimits are small, so the size rows stay small.
var testLimits = Limits{MaxEventBytes: 256, MaxBatchBytes: 1024, MaxBatchEvents: 3}

var testCE = map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "ev-1", "Ce-Source": "/tests", "Ce-Type": "com.example.work"}

func withCE(edits map[string]string) map[string]string {
	h := map[string]string{}
	for k, v := range testCE {
		h[k] = v
	}
	for k, v := range edits {
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	return h
}

// testEvent is a valid structured event with extra attributes spliced in,
// e.g. `,"priority":1`.
func testEvent(id, extra string) string {
	return `{"specversion":"1.0","id":"` + id + `","source":"/tests","type":"com.example.work"` + extra + `}`
}

func TestParse(t *testing.T) {
	t.Parallel()
	g := New(Config{Limits: testLimits})
	cases := []struct {
		name        string
		contentType string
		header      map[string]string
		body        string
		// chunked hides the body's length, as a chunked request does.
		chunked bool

		wantMode   string
		wantIDs    []string // on success
		wantStatus int      // on failure
		wantMsg    string   // on failure, the whole message or a part of it
	}{
		// Binary mode.
		{name: "binary", contentType: "application/json", header: testCE, body: `{"n":1}`,
			wantMode: modeBinary, wantIDs: []string{"ev-1"}},
		{name: "binary without content type", header: testCE,
			wantMode: modeBinary, wantIDs: []string{"ev-1"}},
		{name: "binary at the size limit", contentType: "text/plain", header: testCE, body: strings.Repeat("x", 256),
			wantMode: modeBinary, wantIDs: []string{"ev-1"}},
		{name: "binary over the size limit", contentType: "text/plain", header: testCE, body: strings.Repeat("x", 257),
			wantMode: modeBinary, wantStatus: 413, wantMsg: "body of 257 bytes exceeds the limit of 256 bytes"},
		{name: "binary over the size limit, chunked", contentType: "text/plain", header: testCE, body: strings.Repeat("x", 257), chunked: true,
			wantMode: modeBinary, wantStatus: 413, wantMsg: "body exceeds the limit of 256 bytes"},
		{name: "binary without specversion", header: withCE(map[string]string{"Ce-Specversion": ""}),
			wantMode: modeBinary, wantStatus: 400, wantMsg: "specversion: missing ce-specversion header (binary mode needs it, e.g. ce-specversion: 1.0)"},
		{name: "binary with unknown specversion", header: withCE(map[string]string{"Ce-Specversion": "9.9"}),
			wantMode: modeBinary, wantStatus: 400, wantMsg: `specversion: unknown value "9.9" in ce-specversion (supported: 1.0, 0.3)`},
		{name: "binary with bad time", header: withCE(map[string]string{"Ce-Time": "yesterday"}),
			wantMode: modeBinary, wantStatus: 400, wantMsg: `invalid event: invalid value for time: "yesterday"`},

		// Structured mode.
		{name: "structured", contentType: ctStructured, body: testEvent("ev-1", ""),
			wantMode: modeStructured, wantIDs: []string{"ev-1"}},
		{name: "structured with parameters and capitals", contentType: "Application/CloudEvents+JSON; charset=utf-8", body: testEvent("ev-1", ""),
			wantMode: modeStructured, wantIDs: []string{"ev-1"}},
		{name: "structured with a bad parameter list", contentType: "application/cloudevents+json;a=1;a=2", header: testCE, body: testEvent("ev-1", `,"priority":4.5`),
			wantMode: modeStructured, wantStatus: 400, wantMsg: "priority: must be an integer, got 4.5"},
		{name: "structured beats ce- headers", contentType: ctStructured, header: withCE(map[string]string{"Ce-Id": "from-header"}), body: testEvent("ev-1", ""),
			wantMode: modeStructured, wantIDs: []string{"ev-1"}},
		{name: "structured whole-number attributes", contentType: ctStructured, body: testEvent("ev-1", `,"priority":3.0,"delay":1e2,"ttl":"7"`),
			wantMode: modeStructured, wantIDs: []string{"ev-1"}},
		{name: "structured over the size limit", contentType: ctStructured, body: testEvent("ev-1", `,"data":"`+strings.Repeat("x", 256)+`"`),
			wantMode: modeStructured, wantStatus: 413, wantMsg: "exceeds the limit of 256 bytes"},
		{name: "structured malformed", contentType: ctStructured, body: `{"specversion":"1.0",`,
			wantMode: modeStructured, wantStatus: 400, wantMsg: "malformed JSON: unexpected end of JSON input (at byte 21)"},
		{name: "structured array", contentType: ctStructured, body: "[" + testEvent("ev-1", "") + "]",
			wantMode: modeStructured, wantStatus: 400, wantMsg: "invalid event: an event is a JSON object, got an array"},
		{name: "structured null", contentType: ctStructured, body: " null ",
			wantMode: modeStructured, wantStatus: 400, wantMsg: "invalid event: an event is a JSON object, got null"},
		{name: "structured empty", contentType: ctStructured,
			wantMode: modeStructured, wantStatus: 400, wantMsg: "malformed JSON"},
		{name: "structured without specversion, on one line", contentType: ctStructured, body: `{"id":"1","source":"/s","type":"t"}`,
			wantMode: modeStructured, wantStatus: 400, wantMsg: "invalid event: specversion: no specversion"},
		{name: "structured fractional priority", contentType: ctStructured, body: testEvent("ev-1", `,"priority":4.5`),
			wantMode: modeStructured, wantStatus: 400, wantMsg: "priority: must be an integer, got 4.5"},
		{name: "structured negative fractional delay", contentType: ctStructured, body: testEvent("ev-1", `,"delay":-0.5`),
			wantMode: modeStructured, wantStatus: 400, wantMsg: "delay: must be an integer, got -0.5"},
		{name: "structured huge ttl", contentType: ctStructured, body: testEvent("ev-1", `,"ttl":1e400`),
			wantMode: modeStructured, wantStatus: 400, wantMsg: "ttl: must be an integer, got 1e400"},
		{name: "structured upper-case attribute name", contentType: ctStructured, body: testEvent("ev-1", `,"Priority":2.5`),
			wantMode: modeStructured, wantStatus: 400, wantMsg: "priority: must be an integer, got 2.5"},
		{name: "structured escaped attribute name", contentType: ctStructured, body: testEvent("ev-1", `,"pri\u006frity":2.5`),
			wantMode: modeStructured, wantStatus: 400, wantMsg: "priority: must be an integer, got 2.5"},

		// Batch mode.
		{name: "batch", contentType: ctBatch, body: "[" + testEvent("ev-1", "") + "," + testEvent("ev-2", "") + "]",
			wantMode: modeBatch, wantIDs: []string{"ev-1", "ev-2"}},
		{name: "batch at the count limit", contentType: ctBatch, body: "[" + testEvent("a", "") + "," + testEvent("b", "") + "," + testEvent("c", "") + "]",
			wantMode: modeBatch, wantIDs: []string{"a", "b", "c"}},
		{name: "batch over the count limit", contentType: ctBatch, body: "[{},{},{},{}]",
			wantMode: modeBatch, wantStatus: 413, wantMsg: "batch has 4 events; the limit is 3"},
		{name: "batch over the size limit", contentType: ctBatch, body: "[" + strings.Repeat(" ", 1024) + "]",
			wantMode: modeBatch, wantStatus: 413, wantMsg: "body of 1026 bytes exceeds the limit of 1024 bytes"},
		{name: "batch event over the size limit", contentType: ctBatch, body: "[" + testEvent("ev-1", "") + "," + testEvent("ev-2", `,"data":"`+strings.Repeat("x", 256)+`"`) + "]",
			wantMode: modeBatch, wantStatus: 413, wantMsg: "events[1]: event of 343 bytes exceeds the limit of 256 bytes"},
		{name: "batch empty", contentType: ctBatch, body: " [ ] ",
			wantMode: modeBatch, wantStatus: 400, wantMsg: "batch is empty"},
		{name: "batch not an array", contentType: ctBatch, body: testEvent("ev-1", ""),
			wantMode: modeBatch, wantStatus: 400, wantMsg: "batch must be a JSON array of CloudEvents"},
		{name: "batch malformed", contentType: ctBatch, body: "[" + testEvent("ev-1", ""),
			wantMode: modeBatch, wantStatus: 400, wantMsg: "malformed JSON"},
		{name: "batch with a number", contentType: ctBatch, body: "[" + testEvent("ev-1", "") + ",42]",
			wantMode: modeBatch, wantStatus: 400, wantMsg: "events[1]: invalid event: an event is a JSON object, got a number"},
		{name: "batch with a fractional priority", contentType: ctBatch, body: "[" + testEvent("ev-1", "") + "," + testEvent("ev-2", `,"priority":1.5`) + "]",
			wantMode: modeBatch, wantStatus: 400, wantMsg: "events[1]: priority: must be an integer, got 1.5"},
		{name: "batch with an event without specversion", contentType: ctBatch, body: `[{"id":"1"}]`,
			wantMode: modeBatch, wantStatus: 400, wantMsg: "events[0]: invalid event: specversion: no specversion"},

		// Neither.
		{name: "plain text", contentType: "text/plain", body: "hello",
			wantStatus: 415, wantMsg: `got Content-Type "text/plain"`},
		{name: "no content type", body: testEvent("ev-1", ""),
			wantStatus: 415, wantMsg: `got Content-Type ""`},
		{name: "JSON without ce- headers", contentType: "application/json", body: testEvent("ev-1", ""),
			wantStatus: 415, wantMsg: "not a CloudEvent: send binary mode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body)
			}
			r := httptest.NewRequest(http.MethodPost, "/v1/events", body)
			if tc.chunked {
				r.ContentLength = -1
			}
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			mode, events, perr := g.parse(httptest.NewRecorder(), r)
			require.Equal(t, tc.wantMode, mode)
			if tc.wantStatus != 0 {
				require.NotNil(t, perr, "want %d", tc.wantStatus)
				require.Equal(t, tc.wantStatus, perr.Status, perr.Msg)
				require.Contains(t, perr.Msg, tc.wantMsg)
				require.NotContains(t, perr.Msg, "\n")
				return
			}
			require.Nil(t, perr)
			ids := make([]string, len(events))
			for i, e := range events {
				ids[i] = e.ID()
			}
			require.Equal(t, tc.wantIDs, ids)
		})
	}
}

// TestParseBoundsBinaryHeaders refuses binary-mode requests whose ce-
// headers (with Content-Type) are too many or too large for an event, with
// 413 naming the limit, before the SDK builds an event of them.
func TestParseBoundsBinaryHeaders(t *testing.T) {
	t.Parallel()
	g := New(Config{Limits: testLimits})
	many := http.Header{}
	for k, v := range testCE {
		many.Set(k, v)
	}
	for i := range 20000 {
		many.Set("Ce-X"+strconv.Itoa(i), "v")
	}
	cases := []struct {
		name   string
		header http.Header
		want   string
	}{
		{"many ce- headers", many, "binary mode: 20004 ce- headers; an event has at most 109 attributes and extensions"},
		{"a large ce-id", http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {strings.Repeat("i", 140<<10)}, "Ce-Source": {"/s"}, "Ce-Type": {"t"}},
			"exceed the limit of 256 bytes (server.max_event_bytes)"},
		{"a large Content-Type", http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"1"}, "Ce-Source": {"/s"}, "Ce-Type": {"t"}, "Content-Type": {"text/plain; x=" + strings.Repeat("c", 300)}},
			"exceed the limit of 256 bytes (server.max_event_bytes)"},
		{"a repeated header", http.Header{"Ce-Specversion": {"1.0"}, "Ce-Id": {"1"}, "Ce-Source": {"/s"}, "Ce-Type": {"t"}, "Ce-Note": slices.Repeat([]string{strings.Repeat("n", 100)}, 3)},
			"exceed the limit of 256 bytes (server.max_event_bytes)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader("{}"))
			r.Header = tc.header
			mode, events, perr := g.parse(httptest.NewRecorder(), r)
			require.Equal(t, modeBinary, mode)
			require.Nil(t, events)
			require.NotNil(t, perr)
			require.Equal(t, http.StatusRequestEntityTooLarge, perr.Status, perr.Msg)
			require.Contains(t, perr.Msg, tc.want)
		})
	}
}
