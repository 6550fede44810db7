//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// TestIntegrationExpiresAtInThePast: an expiresat at the Unix epoch, before
// it, or Go's zero time is an expiry in the past, not "no expiry": each
// task ends expired without running, with one result event, in binary and
// structured mode.
func TestIntegrationExpiresAtInThePast(t *testing.T) {
	s := newSink(t)
	e := startTasklane(t, config.BrokerDriverAMQP, fmt.Sprintf(`
functions:
  - {name: work, events: [com.example.work], endpoint: builtin:noop}
subscriptions:
  - {name: results, sink: %q}
`, s.srv.URL))
	var ids []string
	for i, at := range []string{"1970-01-01T00:00:00Z", "1969-07-20T20:17:40Z", "0001-01-01T00:00:00Z"} {
		for _, c := range []apiCall{
			{auth: noAuth, contentType: ctJSON, header: binaryHeaders(fmt.Sprintf("binary-%d", i), map[string]string{"ce-expiresat": at}), body: `{"n":1}`},
			{auth: noAuth, contentType: ctStructured, body: structuredEvent(fmt.Sprintf("structured-%d", i), map[string]any{"expiresat": at})},
		} {
			resp, body := c.do(t, e.app.URL())
			require.Equal(t, http.StatusAccepted, resp.StatusCode, "expiresat %s: %s", at, body)
			var sr contracts.SubmitResponse
			require.NoError(t, json.Unmarshal(body, &sr))
			ids = append(ids, sr.Tasks[0].ID)
		}
	}
	testkit.Eventually(t, 15*time.Second, func() bool { return s.count() >= len(ids) }, "a result for every task")
	for _, id := range ids {
		task, err := e.ledger().Get(context.Background(), config.DefaultTenant, id)
		require.NoError(t, err)
		require.Equal(t, contracts.StateExpired, task.State, id)
		require.Zero(t, task.Attempts, "%s never ran", id)
		require.Nil(t, task.StartedAt)
	}
	require.Eventually(t, e.outboxDrained, 10*time.Second, 50*time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	require.Empty(t, s.bad)
	require.Equal(t, len(ids), s.types[contracts.StateExpired.ResultType()], "one expired result per task")
	for _, id := range ids {
		require.Len(t, s.byTask[id], 1, "one result for %s", id)
	}
}

// connCounter is a TCP proxy to RabbitMQ that counts the connections it
// accepted and those that ended, so a test can tell whether the app's
// connections were reset.
type connCounter struct {
	ln               net.Listener
	accepted, closed atomic.Int64
	wg               sync.WaitGroup
}

func startConnCounter(t *testing.T, upstream string) *connCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	c := &connCounter{ln: ln}
	c.wg.Go(func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			c.accepted.Add(1)
			c.wg.Go(func() {
				defer c.closed.Add(1)
				defer down.Close()
				up, err := net.Dial("tcp", upstream)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, down); done <- struct{}{} }()
				go func() { _, _ = io.Copy(down, up); done <- struct{}{} }()
				<-done // either side ending ends the connection
			})
		}
	})
	t.Cleanup(func() { _ = ln.Close() }) // the app's connections end with it
	return c
}

// TestIntegrationOversizedLaneMessage: a task whose lane message RabbitMQ
// would refuse (a 200 KB extension in its header table, over frame_max),
// recorded through the ledger as a gateway configured with a larger
// max_event_bytes or an older release would have, and due in the delay set
// (its publish guard fired): the scheduler puts it straight into its
// function's ready queue, so it runs once, with one result event, and is
// never published; the app's RabbitMQ connections are never reset (before
// the ready queues, each republish closed the publishing connection with
// frame_too_large, stalling every tenant's publishes; then the scheduler
// ended such a task dead). Another tenant's tasks run meanwhile.
func TestIntegrationOversizedLaneMessage(t *testing.T) {
	s := newSink(t)
	u, err := url.Parse(testkit.RequireAMQP(t))
	require.NoError(t, err)
	proxy := startConnCounter(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	e := newStackAt(t, config.BrokerDriverAMQP, stackAt{AppAMQP: u.String()}, fmt.Sprintf(`
tenants:
  - {id: acme, api_keys: [%q]}
  - {id: other, api_keys: [%q]}
functions:
  - {name: work, events: [com.example.work], endpoint: builtin:noop}
subscriptions:
  - {name: results, sink: %q}
`, acmeKey, otherKey, s.srv.URL))
	e.start()
	ctx := context.Background()
	// The connections the app holds once started; none may be added.
	testkit.Eventually(t, 10*time.Second, func() bool { return proxy.accepted.Load() >= 2 }, "the app connected")
	conns := proxy.accepted.Load()

	ev := event.New()
	ev.SetID("oversized")
	ev.SetSource(badSource)
	ev.SetType("com.example.work")
	ev.SetExtension("note", strings.Repeat("n", 200<<10))
	id := testkit.UniqueName("oversized")
	msg, err := taskmsg.New(taskmsg.Ref{TaskID: id, Tenant: "acme", Function: "work"}, &ev)
	require.NoError(t, err)
	stored, err := taskmsg.Encode(msg)
	require.NoError(t, err)
	led := e.ledger()
	_, err = led.Create(ctx, []ledger.EventTasks{{
		Tenant: "acme", Event: contracts.EventRef{ID: ev.ID(), Source: ev.Source(), Type: ev.Type()},
		Tasks: []ledger.NewTask{{ID: id, Function: "work", Message: stored}},
	}})
	require.NoError(t, err)
	// Due now (its publish guard would make it due in 30s).
	require.NoError(t, led.Defer(ctx, "acme", id, time.Now()))

	// Meanwhile another tenant's tasks are published and run.
	var others []string
	for i := range 20 {
		resp, body := apiCall{auth: bearer(otherKey), contentType: ctStructured, body: structuredEvent(fmt.Sprintf("other-%d", i), nil)}.do(t, e.app.URL())
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s", body)
		var sr contracts.SubmitResponse
		require.NoError(t, json.Unmarshal(body, &sr))
		others = append(others, sr.Tasks[0].ID)
	}

	testkit.Eventually(t, 15*time.Second, func() bool { return s.count() >= 1+len(others) }, "every task has its result")
	task, err := led.Get(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateSucceeded, task.State)
	require.Equal(t, 1, task.Attempts)
	for _, o := range others {
		ot, err := led.Get(ctx, "other", o)
		require.NoError(t, err)
		require.Equal(t, contracts.StateSucceeded, ot.State, o)
	}
	require.Error(t, e.rdb.ZScore(ctx, led.DelayKey("acme"), ledger.Member("acme", id)).Err(), "nothing left in the delay set")
	s.mu.Lock()
	require.Len(t, s.byTask[id], 1, "one result event")
	require.Equal(t, contracts.StateSucceeded, s.byTask[id][0].State)
	s.mu.Unlock()
	require.Equal(t, conns, proxy.accepted.Load(), "no RabbitMQ connection was reopened")
	require.Zero(t, proxy.closed.Load(), "no RabbitMQ connection was closed")
}
