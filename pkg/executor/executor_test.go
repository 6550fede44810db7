package executor

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/sdk"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status int
		header string
		body   string
		class  Class
		err    string
		after  time.Duration
	}{
		{200, "", `{"a":1}`, Succeeded, "", 0},
		{204, "", "", Succeeded, "", 0},
		{429, "7", "slow down", Throttled, "HTTP 429: slow down", 7 * time.Second},
		{503, "", "", Throttled, "HTTP 503", 0},
		{408, "", "", Retryable, "HTTP 408", 0},
		{500, "", "boom", Retryable, "HTTP 500: boom", 0},
		{502, "", "", Retryable, "HTTP 502", 0},
		{400, "", "bad field x", NonRetryable, "HTTP 400: bad field x", 0},
		{404, "", "", NonRetryable, "HTTP 404", 0},
		{302, "", "", NonRetryable, "HTTP 302: redirects are not followed", 0},
	} {
		h := http.Header{}
		if tc.header != "" {
			h.Set("Retry-After", tc.header)
		}
		o := Classify(tc.status, h, []byte(tc.body), 1024)
		require.Equal(t, tc.class, o.Class, "status %d", tc.status)
		require.Equal(t, tc.err, o.Err, "status %d", tc.status)
		require.Equal(t, tc.after, o.RetryAfter, "status %d", tc.status)
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	require.Equal(t, 30*time.Second, ParseRetryAfter("30", now))
	require.Equal(t, time.Duration(0), ParseRetryAfter("-3", now))
	require.Equal(t, time.Duration(0), ParseRetryAfter("soon", now))
	require.Equal(t, 24*time.Hour, ParseRetryAfter("999999999", now))
	require.Equal(t, 10*time.Second, ParseRetryAfter(now.Add(10*time.Second).Format(http.TimeFormat), now))
}

func TestEncodeResult(t *testing.T) {
	t.Parallel()
	require.Nil(t, EncodeResult(nil))
	require.Equal(t, `{"x":1}`, string(EncodeResult([]byte(`{"x":1}`))))
	require.Equal(t, `"plain text"`, string(EncodeResult([]byte("plain text"))))
	require.Equal(t, `{"base64":"/wA="}`, string(EncodeResult([]byte{0xff, 0})))
	require.JSONEq(t, `{"truncated":true,"bytes":10,"prefix":"0123"}`, string(bounded([]byte("0123456789"), 4)))
}

func testEvent(t *testing.T) *event.Event {
	e := event.New()
	e.SetID("evt-1")
	e.SetSource("/src")
	e.SetType("com.example.t")
	e.SetExtension("priority", "3")
	require.NoError(t, e.SetData("application/json", map[string]int{"n": 1}))
	return &e
}

func TestHTTPSendsBinaryEventWithTaskHeaders(t *testing.T) {
	t.Parallel()
	got := make(chan *http.Request, 1)
	bodies := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- string(b)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"done":true}`))
	}))
	defer srv.Close()
	ex, err := Resolve(srv.URL, Options{})
	require.NoError(t, err)
	deadline := time.Now().Add(time.Minute)
	o := ex.Execute(context.Background(), Request{TaskID: "task-1", Attempt: 2, Deadline: deadline, Event: testEvent(t), Token: "tok-1"})
	require.Equal(t, Succeeded, o.Class)
	require.JSONEq(t, `{"done":true}`, string(o.Result))
	r := <-got
	require.Equal(t, "tok-1", r.Header.Get("Tasklane-Task-Token"))
	require.Equal(t, "evt-1", r.Header.Get("Ce-Id"))
	require.Equal(t, "/src", r.Header.Get("Ce-Source"))
	require.Equal(t, "com.example.t", r.Header.Get("Ce-Type"))
	require.Equal(t, "3", r.Header.Get("Ce-Priority"))
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	require.Equal(t, "task-1", r.Header.Get("Tasklane-Task-Id"))
	require.Equal(t, "2", r.Header.Get("Tasklane-Attempt"))
	require.Equal(t, deadline.UTC().Format(time.RFC3339Nano), r.Header.Get("Tasklane-Deadline"))
	require.Empty(t, r.Header.Get("Authorization"))
	require.JSONEq(t, `{"n":1}`, <-bodies)
}

func TestHTTPTimeoutAndConnectionErrorsAreRetryable(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	ex, err := Resolve(srv.URL, Options{})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	o := ex.Execute(ctx, Request{TaskID: "t", Attempt: 1, Event: testEvent(t)})
	require.Equal(t, Retryable, o.Class)
	require.Contains(t, o.Err, "timeout")

	dead, err := Resolve("http://127.0.0.1:1/", Options{})
	require.NoError(t, err)
	o = dead.Execute(context.Background(), Request{TaskID: "t", Attempt: 1, Event: testEvent(t)})
	require.Equal(t, Retryable, o.Class)
	require.Contains(t, o.Err, "connection error")
}

func TestGoHandlerClasses(t *testing.T) {
	t.Parallel()
	reg := sdk.NewRegistry()
	reg.Handle("ok", func(context.Context, sdk.Task) ([]byte, error) { return []byte("fine"), nil })
	reg.Handle("perm", func(context.Context, sdk.Task) ([]byte, error) { return nil, sdk.Permanent(errors.New("bad input")) })
	reg.Handle("thr", func(context.Context, sdk.Task) ([]byte, error) {
		return nil, sdk.Throttled(errors.New("quota"), 3*time.Second)
	})
	reg.Handle("err", func(context.Context, sdk.Task) ([]byte, error) { return nil, errors.New("flaky") })
	reg.Handle("panic", func(context.Context, sdk.Task) ([]byte, error) { panic("oops") })
	for name, want := range map[string]Class{"ok": Succeeded, "perm": NonRetryable, "thr": Throttled, "err": Retryable, "panic": Retryable} {
		ex, err := Resolve("go:"+name, Options{Registry: reg})
		require.NoError(t, err)
		o := ex.Execute(context.Background(), Request{Event: testEvent(t)})
		require.Equal(t, want, o.Class, name)
	}
	_, err := Resolve("go:missing", Options{Registry: reg})
	require.ErrorContains(t, err, `no Go handler registered as "missing"`)
	_, err = Resolve("ftp://x", Options{})
	require.ErrorContains(t, err, "unsupported endpoint")
}

func TestBuiltins(t *testing.T) {
	t.Parallel()
	echo, err := Resolve(BuiltinEcho, Options{})
	require.NoError(t, err)
	o := echo.Execute(context.Background(), Request{Event: testEvent(t)})
	require.Equal(t, Succeeded, o.Class)
	require.JSONEq(t, `{"n":1}`, string(o.Result))
	noop, err := Resolve(BuiltinNoop, Options{})
	require.NoError(t, err)
	require.Equal(t, Outcome{Class: Succeeded}, noop.Execute(context.Background(), Request{Event: testEvent(t)}))
}

func TestGoHandlerLinesReachTheOutcome(t *testing.T) {
	t.Parallel()
	reg := sdk.NewRegistry()
	reg.Handle("logs", func(ctx context.Context, tk sdk.Task) ([]byte, error) {
		sdk.Logf(ctx, "attempt %d", tk.Attempt)
		sdk.Logger(ctx).Warn("careful")
		return nil, errors.New("not yet")
	})
	reg.Handle("panics", func(ctx context.Context, _ sdk.Task) ([]byte, error) {
		sdk.Logf(ctx, "before the panic")
		panic("boom")
	})
	ex, err := Resolve("go:logs", Options{Registry: reg})
	require.NoError(t, err)
	o := ex.Execute(context.Background(), Request{TaskID: "t", Attempt: 3, Event: testEvent(t)})
	require.Equal(t, Retryable, o.Class)
	require.Len(t, o.Lines, 2)
	require.Equal(t, "attempt 3", o.Lines[0].Text)
	require.Equal(t, "level=WARN msg=careful", o.Lines[1].Text)

	ex, err = Resolve("go:panics", Options{Registry: reg})
	require.NoError(t, err)
	o = ex.Execute(context.Background(), Request{TaskID: "t", Attempt: 1, Event: testEvent(t)})
	require.Equal(t, Retryable, o.Class)
	require.Len(t, o.Lines, 1, "a panicking handler's lines are kept")
}
