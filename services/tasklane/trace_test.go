package tasklane

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tasklane/tasklane/pkg/telemetry"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// otlpReceiver is an OTLP/HTTP (protobuf) trace receiver: it keeps every
// span it is sent.
type otlpReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" {
			http.NotFound(w, req)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var ex coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &ex); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range ex.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				r.spans = append(r.spans, ss.GetSpans()...)
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// trace returns the spans received of trace id (hex), by name.
func (r *otlpReceiver) trace(id string) map[string][]*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]*tracepb.Span{}
	for _, s := range r.spans {
		if hex.EncodeToString(s.GetTraceId()) == id {
			out[s.GetName()] = append(out[s.GetName()], s)
		}
	}
	return out
}

func (r *otlpReceiver) all() []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*tracepb.Span(nil), r.spans...)
}

func (r *otlpReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.spans)
}

func spanAttr(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			v := kv.GetValue()
			switch {
			case v.GetStringValue() != "":
				return v.GetStringValue()
			case v.GetIntValue() != 0:
				return fmt.Sprint(v.GetIntValue())
			default:
				return fmt.Sprint(v.GetDoubleValue())
			}
		}
	}
	return ""
}

// tracedFunction is a function that records the trace headers it gets.
type tracedFunction struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []http.Header
}

func newTracedFunction(t *testing.T) *tracedFunction {
	f := &tracedFunction{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.got = append(f.got, r.Header.Clone())
		f.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *tracedFunction) calls() []http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]http.Header(nil), f.got...)
}

func submitTraced(t *testing.T, app *App, id string, header http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, app.URL()+"/v1/events", strings.NewReader(`{"n":1}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-id", id)
	req.Header.Set("ce-source", "/test/trace")
	req.Header.Set("ce-type", "com.example.traced")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(b))
}

// TestTraceEndToEnd: one event submitted with a client traceparent header
// gives spans of the client's trace from ingest, the queue wait, the
// attempt, the function call and the result publish, exported over
// OTLP/HTTP; the function gets a traceparent of that trace in its headers
// and in the event's traceparent extension. Without a header, the event's
// traceparent extension is continued. Shutdown turns tracing off.
func TestTraceEndToEnd(t *testing.T) {
	rcv := newOTLPReceiver(t)
	fn := newTracedFunction(t)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	doc := fmt.Sprintf(`server: {addr: "127.0.0.1:0"}
functions:
  - {name: traced, events: [com.example.traced], endpoint: %q}
  - {name: ticked, events: [com.example.tick], endpoint: "builtin:noop"}
triggers:
  - name: tick
    cron: {schedule: "@every 1s"}
    event: {type: com.example.tick, source: /triggers/tick}
telemetry:
  endpoint: %q
  service_name: tasklane-test
`, fn.srv.URL, rcv.srv.URL)
	app := devApp(t, doc)
	require.True(t, telemetry.Enabled())

	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	const clientSpan = "00f067aa0ba902b7"
	submitTraced(t, app, "traced-1", http.Header{"Traceparent": {"00-" + clientTrace + "-" + clientSpan + "-01"}})

	want := []string{"POST /v1/events", "ingest com.example.traced", "ledger create", "queue traced", "process traced", "POST", "ledger finish", "publish " + "tasklane.results"}
	testkit.Eventually(t, 15*time.Second, func() bool {
		got := rcv.trace(clientTrace)
		for _, name := range want {
			if len(got[name]) == 0 {
				return false
			}
		}
		return true
	}, "every span of the task's path is exported in the client's trace")
	spans := rcv.trace(clientTrace)
	server := spans["POST /v1/events"][0]
	require.Equal(t, clientSpan, hex.EncodeToString(server.GetParentSpanId()), "the server span continues the client's span")
	require.Equal(t, tracepb.Span_SPAN_KIND_SERVER, server.GetKind())
	ingest := spans["ingest com.example.traced"][0]
	require.Equal(t, server.GetSpanId(), ingest.GetParentSpanId())
	require.Equal(t, tracepb.Span_SPAN_KIND_PRODUCER, ingest.GetKind())
	var lane string
	for name, ss := range spans {
		if strings.HasPrefix(name, "publish tasklane.lane.") {
			lane = spanAttr(ss[0], "tasklane.lane")
		}
	}
	require.NotEmpty(t, lane, "the lane publish is a span with its lane")
	process := spans["process traced"][0]
	require.Equal(t, tracepb.Span_SPAN_KIND_CONSUMER, process.GetKind())
	require.Equal(t, ingest.GetSpanId(), process.GetParentSpanId(), "the attempt continues the ingest span from the stored message")
	require.Len(t, process.GetLinks(), 1, "the attempt links to its producer")
	require.Equal(t, ingest.GetSpanId(), process.GetLinks()[0].GetSpanId())
	require.Equal(t, "default", spanAttr(process, "tasklane.tenant"))
	require.Equal(t, "traced", spanAttr(process, "tasklane.function"))
	require.NotEmpty(t, spanAttr(process, "tasklane.task_id"))
	require.Equal(t, "1", spanAttr(process, "tasklane.attempt"))
	require.Equal(t, "succeeded", spanAttr(process, "tasklane.outcome"))
	require.NotEmpty(t, spanAttr(process, "tasklane.queue_wait"))
	call := spans["POST"][0]
	require.Equal(t, tracepb.Span_SPAN_KIND_CLIENT, call.GetKind())
	require.Equal(t, process.GetSpanId(), call.GetParentSpanId())
	require.Equal(t, "200", spanAttr(call, "http.response.status_code"))
	require.Equal(t, "succeeded", spanAttr(spans["ledger finish"][0], "tasklane.state"))

	calls := fn.calls()
	require.Len(t, calls, 1)
	wantTP := "00-" + clientTrace + "-" + hex.EncodeToString(call.GetSpanId()) + "-01"
	require.Equal(t, wantTP, calls[0].Get("traceparent"), "the function gets the call span's context")
	require.Equal(t, wantTP, calls[0].Get("ce-traceparent"), "and in the event's traceparent extension")

	// No traceparent header: the event's traceparent extension is
	// continued.
	const extTrace = "0af7651916cd43dd8448eb211c80319c"
	submitTraced(t, app, "traced-2", http.Header{"Ce-Traceparent": {"00-" + extTrace + "-b7ad6b7169203331-01"}})
	testkit.Eventually(t, 15*time.Second, func() bool {
		got := rcv.trace(extTrace)
		return len(got["ingest com.example.traced"]) == 1 && len(got["process traced"]) == 1 && len(got["POST"]) == 1
	}, "the event's traceparent extension is continued")
	testkit.Eventually(t, 5*time.Second, func() bool { return len(fn.calls()) == 2 }, "the second task ran")
	require.Contains(t, fn.calls()[1].Get("traceparent"), extTrace)

	// A trigger's event starts a trace of its own, which its attempt
	// continues.
	testkit.Eventually(t, 15*time.Second, func() bool {
		for _, s := range rcv.all() {
			if s.GetName() == "ingest com.example.tick" && len(s.GetParentSpanId()) == 0 {
				return len(rcv.trace(hex.EncodeToString(s.GetTraceId()))["process ticked"]) > 0
			}
		}
		return false
	}, "a cron fire is the root of its task's trace")

	require.NoError(t, app.Shutdown(t.Context()))
	require.False(t, telemetry.Enabled(), "shutdown flushes and turns tracing off")
}

// TestNoTracingByDefault: with nothing configured no exporter runs: no
// span reaches a receiver and every instrumentation point is off.
func TestNoTracingByDefault(t *testing.T) {
	for _, v := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(v, "")
	}
	rcv := newOTLPReceiver(t)
	fn := newTracedFunction(t)
	app := devApp(t, fmt.Sprintf(`server: {addr: "127.0.0.1:0"}
functions:
  - {name: traced, events: [com.example.traced], endpoint: %q}
`, fn.srv.URL))
	require.False(t, telemetry.Enabled())
	require.False(t, app.tracing.On())
	submitTraced(t, app, "untraced-1", http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}})
	testkit.Eventually(t, 10*time.Second, func() bool { return len(fn.calls()) == 1 }, "the task ran")
	require.Empty(t, fn.calls()[0].Get("traceparent"), "nothing traces, nothing propagates")
	require.Zero(t, rcv.count())
}
