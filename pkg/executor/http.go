package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/telemetry"
)

// errorBodyBytes bounds how much of a failed answer goes into the error.
const errorBodyBytes = 256

// NewHTTPClient returns the client HTTP functions are called with: pooled
// keep-alive connections, and redirects never followed (a 3xx is an answer,
// not an instruction; following it could reach internal addresses).
func NewHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 256
	tr.IdleConnTimeout = 90 * time.Second
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// HTTP calls a function over HTTP with the CloudEvent in binary mode.
type HTTP struct {
	URL            string
	Client         *http.Client
	MaxResultBytes int64
}

// Execute POSTs the event and classifies the answer. While tracing is on
// the call is an HTTP client span whose context the function receives in
// the traceparent header and in the event's traceparent extension.
func (h *HTTP) Execute(ctx context.Context, r Request) Outcome {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, nil)
	if err != nil {
		return Outcome{Class: NonRetryable, Err: "building request: " + err.Error()}
	}
	ev := r.Event
	var span trace.Span
	if telemetry.Enabled() {
		ctx, span = telemetry.StartClient(ctx, "POST", req, append(telemetry.TaskAttrs(r.Tenant, r.Function, r.TaskID), telemetry.AttrAttempt.Int(r.Attempt))...)
		req = req.WithContext(ctx)
		if tp, ts := telemetry.Inject(ctx); tp != "" {
			c := ev.Clone()
			c.SetExtension(contracts.ExtTraceParent, tp)
			c.SetExtension(contracts.ExtTraceState, nil)
			if ts != "" {
				c.SetExtension(contracts.ExtTraceState, ts)
			}
			ev = &c
		}
	}
	out := h.execute(ctx, req, ev, r)
	if span != nil {
		span.SetAttributes(telemetry.AttrOutcome.String(string(out.Class)))
		var err error
		if out.Status == 0 && out.Err != "" {
			err = errors.New(out.Err)
		}
		telemetry.EndClient(span, out.Status, err)
	}
	return out
}

func (h *HTTP) execute(ctx context.Context, req *http.Request, ev *event.Event, r Request) Outcome {
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(ev), req); err != nil {
		return Outcome{Class: NonRetryable, Err: "encoding event: " + err.Error()}
	}
	req.Header.Set(contracts.HeaderTaskID, r.TaskID)
	req.Header.Set(contracts.HeaderAttempt, strconv.Itoa(r.Attempt))
	if r.Token != "" {
		req.Header.Set(contracts.HeaderTaskToken, r.Token)
	}
	if !r.Deadline.IsZero() {
		req.Header.Set(contracts.HeaderDeadline, r.Deadline.UTC().Format(time.RFC3339Nano))
	}
	resp, err := h.Client.Do(req)
	if err != nil {
		return Outcome{Class: Retryable, Err: describeTransportError(ctx, err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, h.MaxResultBytes+1))
	if err != nil {
		return Outcome{Class: Retryable, Status: resp.StatusCode, Err: describeTransportError(ctx, err)}
	}
	return Classify(resp.StatusCode, resp.Header, body, h.MaxResultBytes)
}

// Classify maps an HTTP answer to an outcome.
func Classify(status int, header http.Header, body []byte, maxResult int64) Outcome {
	o := Outcome{Status: status}
	switch {
	case status >= 200 && status < 300:
		o.Class = Succeeded
		o.Result = bounded(body, maxResult)
		reply, isEvent, err := ReplyEvent(header, body, maxResult)
		if err != nil {
			o.Class = NonRetryable
			o.Err = fmt.Sprintf("HTTP %d with an invalid reply event: %v", status, err)
			return o
		}
		if isEvent {
			o.Reply = reply
		}
		return o
	case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
		o.Class = Throttled
		o.RetryAfter = ParseRetryAfter(header.Get("Retry-After"), time.Now())
	case status == http.StatusRequestTimeout || status >= 500:
		o.Class = Retryable
	case status >= 300 && status < 400:
		o.Class = NonRetryable
		o.Err = fmt.Sprintf("HTTP %d: redirects are not followed", status)
		return o
	default:
		o.Class = NonRetryable
	}
	o.Err = fmt.Sprintf("HTTP %d", status)
	if snippet := strings.TrimSpace(strings.ToValidUTF8(string(body[:min(len(body), errorBodyBytes)]), "")); snippet != "" {
		o.Err += ": " + snippet
	}
	return o
}

// ParseRetryAfter reads a Retry-After header: delay seconds or an HTTP date.
// It returns zero when the header is absent or unreadable.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(min(n, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func describeTransportError(ctx context.Context, err error) string {
	var ne net.Error
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return "timeout: the function did not answer before the attempt's deadline"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout: " + err.Error()
	}
	return "connection error: " + err.Error()
}

// Media types of a reply in structured mode.
const (
	mediaCloudEvent      = "application/cloudevents+json"
	mediaCloudEventBatch = "application/cloudevents-batch+json"
)

// ReplyEvent reads a 2xx answer as a CloudEvent reply: in binary mode
// (a ce-specversion header) or structured mode (Content-Type
// application/cloudevents+json). isEvent is false for any other answer. An
// answer that is a CloudEvent by those marks but cannot be read as one (or
// is a batch, or was cut at max bytes) returns an error saying why.
func ReplyEvent(header http.Header, body []byte, max int64) (e *event.Event, isEvent bool, err error) {
	mt, _, _ := mime.ParseMediaType(header.Get("Content-Type"))
	binaryMode := header.Get("Ce-Specversion") != ""
	switch {
	case mt == mediaCloudEventBatch:
		return nil, true, errors.New("a batch (application/cloudevents-batch+json) cannot be chained; reply with one event")
	case mt != mediaCloudEvent && !binaryMode:
		return nil, false, nil
	}
	if int64(len(body)) > max {
		return nil, true, fmt.Errorf("the reply is larger than %d bytes", max)
	}
	msg := cehttp.NewMessage(header, io.NopCloser(bytes.NewReader(body)))
	defer func() { _ = msg.Finish(nil) }()
	ev, err := binding.ToEvent(context.Background(), msg)
	if err != nil {
		return nil, true, fmt.Errorf("reading the CloudEvent: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return nil, true, fmt.Errorf("%w", err)
	}
	return ev, true, nil
}
