// Package executor runs one attempt of a task and classifies the outcome.
//
// An endpoint is an HTTP URL (push: the CloudEvent is POSTed in binary
// mode), "builtin:echo", "builtin:noop", or "go:<name>" for a handler
// registered through package sdk.
package executor

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tasklane/tasklane/pkg/sdk"
)

// Class is how an attempt ended.
type Class string

// Outcome classes (README.md, "Functions").
const (
	// Succeeded: 2xx, or a Go handler returned nil.
	Succeeded Class = "succeeded"
	// Retryable: 5xx, 408, timeout, connection error, or a plain Go error.
	Retryable Class = "retryable"
	// Throttled: 429 or 503, or sdk.Throttled; retried after RetryAfter.
	Throttled Class = "throttled"
	// NonRetryable: any other 4xx, or sdk.Permanent; dead-lettered at once.
	NonRetryable Class = "non_retryable"
)

// Request is one attempt.
type Request struct {
	TaskID   string
	Tenant   string
	Function string
	Attempt  int
	Deadline time.Time
	Event    *event.Event
	// Token, when set, is sent to HTTP functions (header
	// Tasklane-Task-Token): it lets them write to this task's log.
	Token string
}

// Outcome is how the attempt ended.
type Outcome struct {
	Class Class
	// Result is the (bounded) answer body, as JSON: see EncodeResult.
	Result []byte
	// Err describes a failure.
	Err string
	// RetryAfter is the wait the function asked for (Throttled only).
	RetryAfter time.Duration
	// Status is the HTTP status, when there was one.
	Status int
	// Reply is the CloudEvent a succeeded attempt replied with (a 2xx
	// answer in binary or structured mode, or sdk.Reply): the dispatcher
	// submits it as a new event chained from the task. An answer that
	// looked like a CloudEvent but is not a valid one fails the attempt
	// (non-retryable) instead.
	Reply *event.Event
	// Lines are the lines a Go handler wrote to the task's log.
	Lines []sdk.LogLine
}

// Executor runs attempts. Execute must honour ctx's deadline.
type Executor interface {
	Execute(ctx context.Context, r Request) Outcome
}

// Endpoint prefixes.
const (
	BuiltinEcho = "builtin:echo"
	BuiltinNoop = "builtin:noop"
	GoPrefix    = "go:"
)

// Options configures Resolve.
type Options struct {
	// Client calls HTTP functions. It must not follow redirects.
	Client *http.Client
	// Registry holds "go:" handlers.
	Registry *sdk.Registry
	// MaxResultBytes bounds a stored result. Default 64 KiB.
	MaxResultBytes int64
}

// Resolve returns the executor for endpoint.
func Resolve(endpoint string, o Options) (Executor, error) {
	if o.MaxResultBytes <= 0 {
		o.MaxResultBytes = 64 << 10
	}
	switch {
	case endpoint == BuiltinEcho:
		return echo{max: o.MaxResultBytes}, nil
	case endpoint == BuiltinNoop:
		return noop{}, nil
	case strings.HasPrefix(endpoint, GoPrefix):
		name := strings.TrimPrefix(endpoint, GoPrefix)
		h, ok := o.Registry.Lookup(name)
		if !ok {
			return nil, fmt.Errorf("no Go handler registered as %q (registered: %v)", name, o.Registry.Names())
		}
		return goHandler{h: h, max: o.MaxResultBytes}, nil
	case strings.HasPrefix(endpoint, "http://"), strings.HasPrefix(endpoint, "https://"):
		c := o.Client
		if c == nil {
			c = NewHTTPClient()
		}
		return &HTTP{URL: endpoint, Client: c, MaxResultBytes: o.MaxResultBytes}, nil
	}
	return nil, fmt.Errorf("unsupported endpoint %q", endpoint)
}

// EncodeResult turns an answer body into the JSON stored as a task's
// result: the body itself when it is JSON, a JSON string when it is UTF-8
// text, and {"base64": "..."} otherwise. An empty body has no result.
func EncodeResult(body []byte) []byte {
	if len(body) == 0 {
		return nil
	}
	if json.Valid(body) {
		return body
	}
	var v any = string(body)
	if !utf8.Valid(body) {
		v = map[string]string{"base64": base64.StdEncoding.EncodeToString(body)}
	}
	b, _ := json.Marshal(v)
	return b
}

// bounded cuts b to max bytes; a cut body is kept as text, not as JSON.
func bounded(b []byte, max int64) []byte {
	if int64(len(b)) <= max {
		return EncodeResult(b)
	}
	s, _ := json.Marshal(map[string]any{"truncated": true, "bytes": len(b), "prefix": strings.ToValidUTF8(string(b[:max]), "")})
	return s
}

type echo struct{ max int64 }

func (e echo) Execute(_ context.Context, r Request) Outcome {
	return Outcome{Class: Succeeded, Result: bounded(r.Event.Data(), e.max)}
}

type noop struct{}

func (noop) Execute(context.Context, Request) Outcome { return Outcome{Class: Succeeded} }
