package middleware_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
)

const within = 10 * time.Second

const quarantine = "quarantine"

// taskMessage builds the lane message of a task of fn.
func taskMessage(t *testing.T, tenant, id, fn string) *message.Message {
	t.Helper()
	e := event.New()
	e.SetID("ev-" + id)
	e.SetSource("/test")
	e.SetType("test.event")
	msg, err := taskmsg.New(taskmsg.Ref{TaskID: id, Tenant: tenant, Function: fn, Priority: 7}, &e)
	require.NoError(t, err)
	return msg
}

// route runs a Watermill router whose one consumer handler reads a fresh
// topic of ps through mws (outermost first) into handler, as Watermill's
// own middleware tests do. It returns the topic and a function that closes
// the router (also called when the test ends).
func route(t *testing.T, ps *chantest.PubSub, handler message.NoPublishHandlerFunc, mws ...message.HandlerMiddleware) (string, func() error) {
	t.Helper()
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: within}, broker.WatermillLogger(testkit.Logger(t, slog.LevelInfo)))
	require.NoError(t, err)
	r.AddMiddleware(mws...)
	topic := testkit.UniqueName("topic")
	r.AddConsumerHandler("h", topic, ps, handler)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(context.Background()) }()
	t.Cleanup(func() {
		_ = r.Close()
		if err := <-ran; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	select {
	case <-r.Running():
	case err := <-ran:
		t.Fatalf("router stopped before running: %v", err)
	case <-time.After(within):
		t.Fatal("router not running")
	}
	return topic, r.Close
}

// probe records the error the middlewares inside it returned.
func probe(errs chan<- error) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			errs <- err
			return out, err
		}
	}
}

// receive returns the next value of ch, or fails the test after within.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("nothing received within %s", within)
	}
	panic("unreachable")
}

// newLedger returns a ledger on the test Redis, under a prefix of its own.
func newLedger(t *testing.T) *ledger.Ledger {
	t.Helper()
	rdb, prefix := testkit.Redis(t)
	return ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
}

// createTask records a queued task of fn for tenant "acme" in l and
// returns its lane message (the task id is the message UUID).
func createTask(t *testing.T, l *ledger.Ledger, fn string) *message.Message {
	t.Helper()
	id := testkit.UniqueName("task")
	msg := taskMessage(t, "acme", id, fn)
	stored, err := taskmsg.Encode(msg)
	require.NoError(t, err)
	_, err = l.Create(context.Background(), []ledger.EventTasks{{
		Tenant: "acme", Event: contracts.EventRef{ID: "ev-" + id, Source: "/test", Type: "test.event"},
		Tasks: []ledger.NewTask{{ID: id, Function: fn, Message: stored}},
	}})
	require.NoError(t, err)
	return msg
}

// state is the ledger state of task id of tenant "acme".
func state(t *testing.T, l *ledger.Ledger, id string) *contracts.Task {
	t.Helper()
	task, err := l.Get(context.Background(), "acme", id)
	require.NoError(t, err)
	return task
}

// counter is c's value.
func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}
