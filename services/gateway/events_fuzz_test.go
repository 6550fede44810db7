package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/taskmsg"
)

// fuzzLimits are small, so the fuzzer reaches the size checks.
var fuzzLimits = Limits{MaxEventBytes: 2048, MaxBatchBytes: 8192, MaxBatchEvents: 4}

// Binary-mode ce- headers of the seeds, one "name: value" a line.
const (
	seedCE           = "ce-specversion: 1.0\nce-id: ev-1\nce-source: /seeds\nce-type: com.example.work"
	seedCENoID       = "ce-specversion: 1.0\nce-source: /seeds\nce-type: com.example.work"
	seedCENoVersion  = "ce-id: ev-1\nce-source: /seeds\nce-type: com.example.work"
	seedCEBadVersion = "ce-specversion: 9.9\nce-id: ev-1\nce-source: /seeds\nce-type: com.example.work"
	seedCEExts       = seedCE + "\nce-priority: 7\nce-delay: 5\nce-traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	seedCEBadExts    = seedCE + "\nce-priority: 4.5\nce-deliverat: tomorrow\nce-time: yesterday"
	seedCEV03        = "ce-specversion: 0.3\nce-id: ev-1\nce-source: /seeds\nce-type: com.example.work\nce-datacontentencoding: base64"
	seedEvent        = `{"specversion":"1.0","id":"ev-1","source":"/seeds","type":"com.example.work","datacontenttype":"application/json","data":{"n":1}}`
)

// manyExtensions is n "ce-x<i>: v" header lines, each after a newline.
func manyExtensions(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "\nce-x%d: v", i)
	}
	return b.String()
}

// fuzzSeeds are valid and invalid requests in every mode: content type,
// ce- headers, body.
var fuzzSeeds = []struct {
	contentType, headers, body string
}{
	// Binary mode.
	{"application/json", seedCE, `{"n":1}`},
	{"application/octet-stream", seedCE, "\x00\x01\xff"},
	{"", seedCE, ""},
	{"application/json", seedCEExts, `{"n":1}`},
	{"application/json", seedCEBadExts, `{"n":1}`},
	{"application/json", seedCENoID, `{"n":1}`},
	{"application/json", seedCENoVersion, `{"n":1}`},
	{"application/json", seedCEBadVersion, `{"n":1}`},
	{"text/plain", seedCEV03, "aGVsbG8="},
	{"application/cloudevents+json;;", seedCE, seedEvent},
	{"application/cloudevents+xml", seedCE, "<event/>"},
	{"application/json", seedCE + "\nce-dataschema: ::not a uri", `{"n":1}`},
	// Oversized attributes: many extensions, a long id, a long
	// Content-Type.
	{"application/json", seedCE + manyExtensions(120), `{"n":1}`},
	{"application/json", seedCE + manyExtensions(90), `{"n":1}`},
	{"application/json", "ce-specversion: 1.0\nce-id: " + strings.Repeat("i", 3000) + "\nce-source: /s\nce-type: t", `{"n":1}`},
	{"text/plain; a=" + strings.Repeat("c", 2100), seedCE, `x`},
	{"application/cloudevents+json", "", `{"specversion":"1.0","id":"1","source":"/s","type":"t","note":"` + strings.Repeat("n", 2000) + `"}`},
	// Exactly at the limit (34 bytes of attributes, the extension's name
	// and 2014 bytes of value): accepted, though the ingester then adds
	// the tenantid extension.
	{"", "ce-specversion: 1.0\nce-id: 1\nce-source: /s\nce-type: t\nce-note: " + strings.Repeat("n", 2014), ``},
	// Structured mode.
	{"application/cloudevents+json", "", seedEvent},
	{"application/cloudevents+json; charset=utf-8", "", seedEvent},
	{"Application/CloudEvents+JSON", seedCE, seedEvent},
	{"application/cloudevents+json", "", `{"specversion":"0.3","id":"1","source":"/s","type":"t","datacontentencoding":"base64","data":"aGk="}`},
	{"application/cloudevents+json", "", `{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"aGk="}`},
	{"application/cloudevents+json", "", `{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"!!"}`},
	{"application/cloudevents+json", "", `{"specversion":"1.0","id":"1","source":"/s","type":"t","priority":4.5,"delay":1e400,"ttl":-0.5}`},
	{"application/cloudevents+json", "", `{"specversion":"1.0","id":"1","source":"/s","type":"t","pri\u006frity":2.5}`},
	{"application/cloudevents+json;a=1;a=2", seedCE, `{"specversion":"1.0","id":"1","source":"/s","type":"t","PRIORITY":2.5}`},
	{"application/cloudevents+json", "", `{"specversion":"1.0","id":"1","source":"/s","type":"t","priority":"9","delay":"x","deliverat":"2030-01-01T00:00:00Z"}`},
	{"application/cloudevents+json", "", `{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":{"a":[1,2]},"time":"bad"}`},
	{"application/cloudevents+json", "", `{"specversion":"1.0","id":"","source":"","type":""}`},
	{"application/cloudevents+json", "", `{"specversion":"2.0"}`},
	{"application/cloudevents+json", "", `{"id":"1","source":"/s","type":"t"}`},
	{"application/cloudevents+json", "", `{"specversion":"1.0","id":"1",`},
	// Found by fuzzing: invalid UTF-8, control characters and surrounding
	// spaces in attributes, an odd extension name in a 0.3 event.
	{"application/cloudevents+json", "", `{"specversion":"1.0","id":" 0 ","source":"0","type":" 00","subject":" s "}`},
	{"application/cloudevents+json", "", "{\"specversion\":\"0.3\",\"id\":\"0\",\"source\":\"0\",\"type\":\"0\",\"\x8a\":\"\"}"},
	{"application/cloudevents+json", "", "{\"specversion\":\"1.0\",\"id\":\"\xea\",\"source\":\"0\",\"type\":\"0\"}"},
	{"application/cloudevents+json", "", `{"specversion":"1.0","id":"a\nb","source":"/s","type":"t","subject":"\u0085"}`},
	{"application/cloudevents+json", "", `[` + seedEvent + `]`},
	{"application/cloudevents+json", "", `null`},
	{"application/cloudevents+json", "", ``},
	// Batch mode.
	{"application/cloudevents-batch+json", "", `[` + seedEvent + `,` + seedEvent + `]`},
	{"application/cloudevents-batch+json", "", `[]`},
	{"application/cloudevents-batch+json", "", `{}`},
	{"application/cloudevents-batch+json", "", `[null, 5, "x", [], {}]`},
	{"application/cloudevents-batch+json", "", `[` + seedEvent + `,{"specversion":"1.0"}]`},
	{"application/cloudevents-batch+json", "", `[` + seedEvent + `,{"specversion":"1.0","id":"2","source":"/s","type":"t","priority":1.5}]`},
	{"application/cloudevents-batch+json", "", `[[` + seedEvent + `]]`},
	{"application/cloudevents-batch+json", "", `[` + seedEvent},
	// Junk.
	{"text/plain", "", "hello"},
	{"", "", ""},
	{"application/json", "", seedEvent},
	{"multipart/form-data; boundary=x", "", "--x--"},
	{"application/json", "ce-id: 1", `{}`},
	{";;;", "ce-specversion: 1.0", "\xff\xfe"},
}

// FuzzParseEvents sends arbitrary requests through the gateway's parsing
// and the ingester's checks (everything before the ledger). It never
// panics, and a request is either refused with a 4xx ingest.Error that says
// why, or parses into events that are valid CloudEvents or that the
// ingester refuses as invalid with a 400 (parsing leaves attribute checks
// to the ingester, which the triggers share). Every event the ingester
// accepts survives the round trip through the lane message the dispatcher
// reads.
func FuzzParseEvents(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s.contentType, s.headers, []byte(s.body))
	}
	g := New(Config{Limits: fuzzLimits})
	in := ingest.New(ingest.Config{Subscribers: func(string, string) []string { return nil }}).WithMaxEventBytes(fuzzLimits.MaxEventBytes)
	f.Fuzz(func(t *testing.T, contentType, headers string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(string(body)))
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		for line := range strings.SplitSeq(headers, "\n") {
			if name, value, ok := strings.Cut(line, ":"); ok {
				r.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
			}
		}
		mode, events, perr := g.parse(httptest.NewRecorder(), r)
		if perr != nil {
			requireRefusal(t, perr)
			return
		}
		require.Contains(t, []string{modeBinary, modeStructured, modeBatch}, mode)
		require.NotEmpty(t, events)
		require.LessOrEqual(t, len(events), fuzzLimits.MaxBatchEvents)
		if mode != modeBatch {
			require.Len(t, events, 1)
		}
		for i, e := range events {
			require.NotNil(t, e, "events[%d]", i)
			valid := e.Validate() == nil
			// Measured as submitted: the ingester sets the tenantid
			// extension on the events it checks.
			size, extensions := ingest.EventSize(e), len(e.Extensions())
			// No function subscribes, so the ingester refuses every
			// submission before the ledger: an event over the size bounds
			// with 413, an invalid event with 400, one that passes every
			// check with 422.
			ie := refusal(t, in, e)
			if size > fuzzLimits.MaxEventBytes || extensions > ingest.MaxExtensions {
				// Too large is the first check, whatever else is wrong.
				require.Equal(t, http.StatusRequestEntityTooLarge, ie.Status, ie.Msg)
				continue
			}
			longName := false
			for name := range e.Extensions() {
				longName = longName || len(name) > ingest.MaxExtensionNameBytes
			}
			require.Equal(t, longName, ie.Status == http.StatusRequestEntityTooLarge, "413 only for a size bound: %s", ie.Msg)
			if !valid {
				require.Equal(t, http.StatusBadRequest, ie.Status, ie.Msg)
				require.Contains(t, ie.Msg, "invalid event")
			}
			if ie.Status == http.StatusUnprocessableEntity {
				requireLaneRoundTrip(t, e)
			}
		}
		_ = refusal(t, in, events...)
	})
}

// refusal submits events and requires the ingester to refuse them.
func refusal(t *testing.T, in *ingest.Ingester, events ...*event.Event) *ingest.Error {
	t.Helper()
	_, err := in.Submit(context.Background(), "fuzz", events)
	var ie *ingest.Error
	require.True(t, errors.As(err, &ie), "Submit: %v", err)
	requireRefusal(t, ie)
	return ie
}

func requireRefusal(t *testing.T, e *ingest.Error) {
	t.Helper()
	require.GreaterOrEqual(t, e.Status, 400, e.Msg)
	require.Less(t, e.Status, 500, e.Msg)
	require.NotEmpty(t, strings.TrimSpace(e.Msg), "status %d", e.Status)
	require.NotContains(t, e.Msg, "\n", "one line")
}

// requireLaneRoundTrip requires e to come back from its stored lane message
// with the same identity and data.
func requireLaneRoundTrip(t *testing.T, e *event.Event) {
	t.Helper()
	msg, err := taskmsg.New(taskmsg.Ref{TaskID: "task-1", Tenant: "fuzz", Function: "fn"}, e)
	require.NoError(t, err)
	stored, err := taskmsg.Encode(msg)
	require.NoError(t, err)
	back, err := taskmsg.Decode(stored)
	require.NoError(t, err)
	_, got, err := taskmsg.Parse(back)
	require.NoError(t, err)
	require.Equal(t, e.ID(), got.ID())
	require.Equal(t, e.Source(), got.Source())
	require.Equal(t, e.Type(), got.Type())
	require.Equal(t, e.Subject(), got.Subject())
	require.Equal(t, string(e.Data()), string(got.Data()))
	for name, v := range e.Extensions() {
		want, err := types.Format(v)
		require.NoError(t, err)
		require.Equal(t, want, got.Extensions()[name], "extension %s", name)
	}
}
