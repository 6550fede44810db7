package ingest_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/testkit"
)

func sizeEvent(id string) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/s")
	e.SetType("t")
	return &e
}

// refusal submits events to in and returns its refusal.
func refusal(t *testing.T, in *ingest.Ingester, events ...*event.Event) *ingest.Error {
	t.Helper()
	_, err := in.Submit(context.Background(), "acme", events)
	var ie *ingest.Error
	require.True(t, errors.As(err, &ie), "Submit: %v", err)
	return ie
}

// noFunctions answers 422 to every event that passes every check, before
// the ledger: an ingester without a ledger proves nothing was recorded.
func noFunctions(string, string) []string { return nil }

func TestEventSize(t *testing.T) {
	t.Parallel()
	e := sizeEvent("ab")
	require.NoError(t, e.SetData("text/plain", []byte("xyz")))
	e.SetExtension("note", "hello")
	want := len("specversion1.0") + len("idab") + len("source/s") + len("typet") + len("datacontenttypetext/plain") + len("notehello") + 3
	require.Equal(t, int64(want), ingest.EventSize(e))
}

// TestSubmitBoundsTheWholeEvent refuses, with 413 naming the limit and
// before anything is recorded, events whose attributes or extensions (not
// their data) make them too large, alone or in a batch.
func TestSubmitBoundsTheWholeEvent(t *testing.T) {
	t.Parallel()
	limit := strconv.Itoa(ingest.MaxEventBytesDefault)

	bigID := sizeEvent(strings.Repeat("i", 140<<10))
	withBigExt := func(id string) *event.Event {
		e := sizeEvent(id)
		e.SetExtension("note", strings.Repeat("n", ingest.MaxEventBytesDefault))
		return e
	}
	manyExt := sizeEvent("e2")
	for i := range 20000 {
		manyExt.SetExtension("x"+strconv.Itoa(i), "v")
	}
	longName := sizeEvent("e3")
	longName.SetExtension(strings.Repeat("n", ingest.MaxExtensionNameBytes+1), "v")
	bigType := sizeEvent("e4")
	bigType.SetType(strings.Repeat("t", 140<<10))
	cases := []struct {
		name   string
		events []*event.Event
		want   string
	}{
		{"id", []*event.Event{bigID}, "exceeds the limit of " + limit + " bytes (server.max_event_bytes)"},
		{"type", []*event.Event{bigType}, "exceeds the limit of " + limit + " bytes (server.max_event_bytes)"},
		{"extension value", []*event.Event{withBigExt("e1")}, "exceeds the limit of " + limit + " bytes (server.max_event_bytes)"},
		{"extensions", []*event.Event{manyExt}, "event has 20000 extension attributes; the limit is 100"},
		{"extension name", []*event.Event{longName}, "exceeds the limit of 64 bytes"},
		{"batch", []*event.Event{sizeEvent("ok"), sizeEvent("ok2"), withBigExt("e5")}, "events[2]: event of "},
	}
	// Every event that passes the checks makes a task (before the ledger,
	// nil here: the refusal comes before anything is recorded).
	in := ingest.New(ingest.Config{Subscribers: func(string, string) []string { return []string{"fn"} }})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ie := refusal(t, in, tc.events...)
			require.Equal(t, http.StatusRequestEntityTooLarge, ie.Status, ie.Msg)
			require.Contains(t, ie.Msg, tc.want)
		})
	}
}

// TestWithMaxEventBytes: the bound is the view's, counted exactly.
func TestWithMaxEventBytes(t *testing.T) {
	t.Parallel()
	in := ingest.New(ingest.Config{Subscribers: noFunctions})
	size := ingest.EventSize(sizeEvent("e1"))
	require.Equal(t, http.StatusUnprocessableEntity, refusal(t, in.WithMaxEventBytes(size), sizeEvent("e1")).Status, "at the limit")
	ie := refusal(t, in.WithMaxEventBytes(size-1), sizeEvent("e1"))
	require.Equal(t, http.StatusRequestEntityTooLarge, ie.Status)
	require.Contains(t, ie.Msg, "event of "+strconv.FormatInt(size, 10)+" bytes (attributes, extensions and data) exceeds the limit of "+strconv.FormatInt(size-1, 10)+" bytes")
}

// sizeRefusingPublisher refuses, without sending, any message with a
// metadata value over 100 bytes, as a broker driver refuses a header table
// over its frame_max.
type sizeRefusingPublisher struct{ published int }

func (p *sizeRefusingPublisher) Publish(string, ...*message.Message) error {
	p.published++
	return nil
}

func (p *sizeRefusingPublisher) Close() error { return nil }

func (p *sizeRefusingPublisher) CheckSize(msg *message.Message) error {
	for _, v := range msg.Metadata {
		if len(v) > 100 {
			return &broker.TooLargeError{What: "header frame", Size: len(v), Limit: 100}
		}
	}
	return nil
}

// TestSubmitRefusesWhatTheBrokerWouldRefuse: an event within
// MaxEventBytes whose lane message the broker would still refuse (its
// frame_max is below the configured bound) is refused with 413 before the
// ledger (nil here: touching it would panic).
func TestSubmitRefusesWhatTheBrokerWouldRefuse(t *testing.T) {
	t.Parallel()
	pub := &sizeRefusingPublisher{}
	in := ingest.New(ingest.Config{Publisher: pub, Subscribers: func(string, string) []string { return []string{"fn"} }})
	e := sizeEvent(strings.Repeat("i", 200))
	ie := refusal(t, in, e)
	require.Equal(t, http.StatusRequestEntityTooLarge, ie.Status)
	require.Contains(t, ie.Msg, "do not fit in a broker message")
	require.Contains(t, ie.Msg, "exceeds the broker's limit of 100 bytes")
	require.Zero(t, pub.published)
}

// TestTTLAndExpiresAtEdges: ttl must be a whole number of seconds from 1;
// any expiresat is taken, the epoch and earlier included (the task then
// ends expired, see the ledger).
func TestTTLAndExpiresAtEdges(t *testing.T) {
	t.Parallel()
	in := ingest.New(ingest.Config{Subscribers: noFunctions})
	for _, ttl := range []any{"0", int32(0), "-1", int32(-5), "1.5", "soon"} {
		e := sizeEvent("e1")
		e.SetExtension("ttl", ttl)
		ie := refusal(t, in, e)
		require.Equal(t, http.StatusBadRequest, ie.Status, "ttl %v", ttl)
		require.Contains(t, ie.Msg, "ttl: must be an integer from 1 to", "ttl %v", ttl)
	}
	for _, at := range []string{"1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)} {
		e := sizeEvent("e1")
		e.SetExtension("expiresat", at)
		require.Equal(t, http.StatusUnprocessableEntity, refusal(t, in, e).Status, "expiresat %s is accepted", at)
	}
}

// lateRefusingPublisher passes CheckSize but refuses every publish for its
// size, as after a reconnection that negotiated a smaller frame_max.
type lateRefusingPublisher struct{}

func (lateRefusingPublisher) Publish(string, ...*message.Message) error {
	return &broker.TooLargeError{What: "header frame", Size: 200, Limit: 100}
}

func (lateRefusingPublisher) Close() error { return nil }

type anyLane struct{}

func (anyLane) LaneFor(string, string) string { return "lane" }

// TestPublishRefusedForSizeAnswers413: a publish the broker refuses for its
// size after the task was recorded answers 413 (not 202, not 503), and the
// task is due at once in the delay set, where the scheduler ends it.
func TestPublishRefusedForSizeAnswers413(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
	in := ingest.New(ingest.Config{
		Ledger: l, Publisher: lateRefusingPublisher{}, Router: anyLane{}, Metrics: metrics.New(),
		Subscribers: func(string, string) []string { return []string{"fn"} },
	})
	t.Cleanup(in.Close)
	ie := refusal(t, in, sizeEvent("e1"))
	require.Equal(t, http.StatusRequestEntityTooLarge, ie.Status)
	require.Contains(t, ie.Msg, "for its size")
	require.Contains(t, ie.Msg, "exceeds the broker's limit of 100 bytes")
	due, err := l.TakeDue(context.Background(), 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, due, 1, "due now, for the scheduler to end it")
	require.Equal(t, contracts.StateQueued, due[0].State)
}
