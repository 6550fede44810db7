package executor

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/sdk"
)

// TestHTTPReplyEvent reads a 2xx answer that is a CloudEvent, in binary or
// structured mode, as the attempt's reply; a plain answer has none; an
// answer marked as a CloudEvent that is not a valid one fails the attempt
// as non-retryable, saying why.
func TestHTTPReplyEvent(t *testing.T) {
	t.Parallel()
	binary := func(w http.ResponseWriter) {
		w.Header().Set("Ce-Specversion", "1.0")
		w.Header().Set("Ce-Id", "r-1")
		w.Header().Set("Ce-Source", "/fn")
		w.Header().Set("Ce-Type", "next")
		w.Header().Set("Ce-Note", "hi")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"n":2}`))
	}
	structured := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/cloudevents+json; charset=utf-8")
		_, _ = w.Write([]byte(`{"specversion":"1.0","id":"r-1","source":"/fn","type":"next","note":"hi","datacontenttype":"application/json","data":{"n":2}}`))
	}
	cases := []struct {
		name    string
		answer  func(http.ResponseWriter)
		class   Class
		reply   bool
		errPart string
	}{
		{"binary", binary, Succeeded, true, ""},
		{"structured", structured, Succeeded, true, ""},
		{"plain", func(w http.ResponseWriter) { _, _ = w.Write([]byte(`{"n":2}`)) }, Succeeded, false, ""},
		{"binary without an id", func(w http.ResponseWriter) {
			w.Header().Set("Ce-Specversion", "1.0")
			w.Header().Set("Ce-Source", "/fn")
			w.Header().Set("Ce-Type", "next")
		}, NonRetryable, false, "HTTP 200 with an invalid reply event"},
		{"structured, not JSON", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/cloudevents+json")
			_, _ = w.Write([]byte(`{"specversion":`))
		}, NonRetryable, false, "reading the CloudEvent"},
		{"batch", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/cloudevents-batch+json")
			_, _ = w.Write([]byte(`[]`))
		}, NonRetryable, false, "a batch"},
		{"too large", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/cloudevents+json")
			_, _ = w.Write([]byte(`{"specversion":"1.0","id":"r","source":"/s","type":"t","data":"` + strings.Repeat("x", 2048) + `"}`))
		}, NonRetryable, false, "larger than 1024 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { c.answer(w) }))
			defer srv.Close()
			ex, err := Resolve(srv.URL, Options{MaxResultBytes: 1024})
			require.NoError(t, err)
			o := ex.Execute(context.Background(), Request{TaskID: "t", Attempt: 1, Event: testEvent(t)})
			require.Equal(t, c.class, o.Class, o.Err)
			if c.errPart != "" {
				require.Contains(t, o.Err, c.errPart)
			}
			if !c.reply {
				require.Nil(t, o.Reply)
				return
			}
			require.NotNil(t, o.Reply)
			require.Equal(t, "r-1", o.Reply.ID())
			require.Equal(t, "/fn", o.Reply.Source())
			require.Equal(t, "next", o.Reply.Type())
			require.Equal(t, "hi", o.Reply.Extensions()["note"])
			require.JSONEq(t, `{"n":2}`, string(o.Reply.Data()))
		})
	}
}

// TestGoHandlerReply: sdk.Reply in a handler that returns nil is the
// attempt's reply; one that then fails has none; Reply outside a handler's
// context is an error.
func TestGoHandlerReply(t *testing.T) {
	t.Parallel()
	next := event.New()
	next.SetID("r-1")
	next.SetSource("/fn")
	next.SetType("next")
	reg := sdk.NewRegistry()
	reg.Handle("chain", func(ctx context.Context, _ sdk.Task) ([]byte, error) { return nil, sdk.Reply(ctx, &next) })
	reg.Handle("fail", func(ctx context.Context, _ sdk.Task) ([]byte, error) {
		if err := sdk.Reply(ctx, &next); err != nil {
			return nil, err
		}
		return nil, errors.New("flaky")
	})
	ex, err := Resolve("go:chain", Options{Registry: reg})
	require.NoError(t, err)
	o := ex.Execute(context.Background(), Request{Event: testEvent(t)})
	require.Equal(t, Succeeded, o.Class, o.Err)
	require.Same(t, &next, o.Reply)

	ex, err = Resolve("go:fail", Options{Registry: reg})
	require.NoError(t, err)
	o = ex.Execute(context.Background(), Request{Event: testEvent(t)})
	require.Equal(t, Retryable, o.Class)
	require.Nil(t, o.Reply)

	require.ErrorContains(t, sdk.Reply(context.Background(), &next), "outside a Tasklane handler")
}
