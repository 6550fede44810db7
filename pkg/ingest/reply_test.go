package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/pkg/testkit"
)

func replyEvent(id, typ string) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/fn/first")
	e.SetType(typ)
	return &e
}

// storedEvent reads the event of a task's stored lane message.
func storedEvent(t *testing.T, l *ledger.Ledger, tenant, id string) *event.Event {
	t.Helper()
	b, err := l.Message(context.Background(), tenant, id)
	require.NoError(t, err)
	msg, err := taskmsg.Decode(b)
	require.NoError(t, err)
	_, e, err := taskmsg.Parse(msg)
	require.NoError(t, err)
	return e
}

// TestSubmitReplyTwiceMakesOneChild is the crash between a reply and its
// parent's success: the parent's attempt ran and its reply was ingested,
// then the dispatcher died before recording the success; another
// dispatcher (another process: another Ingester) re-runs the parent, whose
// function replies with the same event. The reply's source and id dedup
// it: the child is the same task, recorded and published once, and it
// names its parent in its record and its event.
func TestSubmitReplyTwiceMakesOneChild(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
	pub := &recordingPublisher{}
	subs := func(_, typ string) []string {
		if typ == "second" {
			return []string{"second"}
		}
		return []string{"first"}
	}
	newIngester := func() *ingest.Ingester {
		in := ingest.New(ingest.Config{Ledger: l, Publisher: pub, Router: oneLane{}, Metrics: metrics.New(), Subscribers: subs})
		t.Cleanup(in.Close)
		return in
	}
	ctx := context.Background()
	submitted := replyEvent("job-1", "first")
	submitted.SetExtension(contracts.ExtParentTask, "forged") // a client's is dropped
	submitted.SetExtension(contracts.ExtChainDepth, 9)
	parents, err := newIngester().Submit(ctx, "acme", []*event.Event{submitted})
	require.NoError(t, err)
	require.Len(t, parents, 1)
	parentID := parents[0].ID
	parentEvent := storedEvent(t, l, "acme", parentID)
	require.NotContains(t, parentEvent.Extensions(), contracts.ExtParentTask)
	require.NotContains(t, parentEvent.Extensions(), contracts.ExtChainDepth)
	rec, err := l.Get(ctx, "acme", parentID)
	require.NoError(t, err)
	require.Empty(t, rec.Parent)

	parent := ingest.Parent{TaskID: parentID, Event: parentEvent}
	first, err := newIngester().SubmitReply(ctx, "acme", parent, replyEvent("job-1.done", "second"))
	require.NoError(t, err)
	require.Len(t, first, 1)
	require.False(t, first[0].Duplicate)
	require.Equal(t, "second", first[0].Function)

	// The crash, and the re-run's reply: another process, the same event.
	again, err := newIngester().SubmitReply(ctx, "acme", parent, replyEvent("job-1.done", "second"))
	require.NoError(t, err)
	require.Len(t, again, 1)
	require.True(t, again[0].Duplicate, "the re-run's reply is deduplicated")
	require.Equal(t, first[0].ID, again[0].ID, "the re-run's child is the same task")

	list, err := l.List(ctx, "acme", ledger.ListFilter{Function: "second"})
	require.NoError(t, err)
	require.Len(t, list.Tasks, 1, "one child")
	require.Equal(t, parentID, list.Tasks[0].Parent)
	require.Len(t, pub.topics, 2, "the parent and the child, each published once")

	child := storedEvent(t, l, "acme", first[0].ID)
	require.Equal(t, parentID, child.Extensions()[contracts.ExtParentTask])
	require.Equal(t, "1", fmt.Sprint(child.Extensions()[contracts.ExtChainDepth]))
	require.Equal(t, "acme", child.Extensions()[contracts.ExtTenantID])

	// The child's own reply is one step deeper.
	grand, err := newIngester().SubmitReply(ctx, "acme", ingest.Parent{TaskID: first[0].ID, Event: child}, replyEvent("job-1.done.done", "first"))
	require.NoError(t, err)
	require.Equal(t, "2", fmt.Sprint(storedEvent(t, l, "acme", grand[0].ID).Extensions()[contracts.ExtChainDepth]))
}

// TestSubmitReplyRefusals: a chain past contracts.MaxChainDepth, an invalid
// reply and a reply no function takes are refused before anything is
// recorded, each with an error that says why.
func TestSubmitReplyRefusals(t *testing.T) {
	t.Parallel()
	in := ingest.New(ingest.Config{Subscribers: func(_, typ string) []string {
		if typ == "orphan" {
			return nil
		}
		return []string{"fn"}
	}})
	deep := replyEvent("p", "t")
	deep.SetExtension(contracts.ExtChainDepth, contracts.MaxChainDepth)
	invalid := replyEvent("r", "t")
	invalid.SetSource("")
	cases := []struct {
		name         string
		parent       *event.Event
		reply        *event.Event
		want         string
		noSubscriber bool
	}{
		{"too deep", deep, replyEvent("r", "t"), "chain too deep", false},
		{"invalid", replyEvent("p", "t"), invalid, "invalid event: source:", false},
		{"no subscriber", replyEvent("p", "t"), replyEvent("r", "orphan"), `no function subscribes to type "orphan"`, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := in.SubmitReply(context.Background(), "acme", ingest.Parent{TaskID: "parent", Event: c.parent}, c.reply)
			var ie *ingest.Error
			require.True(t, errors.As(err, &ie), "SubmitReply: %v", err)
			require.Contains(t, ie.Msg, c.want)
			require.Less(t, ie.Status, http.StatusInternalServerError)
			require.Equal(t, c.noSubscriber, ie.NoSubscriber)
		})
	}
}
