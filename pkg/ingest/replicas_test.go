package ingest_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// A submission whose creates WAIT does not confirm (redis.wait_replicas 1
// on a Redis without replicas) is not accepted: 503, naming the reason and
// that a retry with the same event ids is safe; nothing is published.
func TestSubmitNotReplicatedIs503(t *testing.T) {
	t.Parallel()
	rdb := testkit.StartRedis(t).Client(t)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: "tl", Partitions: testkit.LedgerPartitions(), WaitReplicas: 1, WaitTimeout: 50 * time.Millisecond})
	pub := &recordingPublisher{}
	in := ingest.New(ingest.Config{
		Ledger: l, Publisher: pub, Router: oneLane{}, Metrics: metrics.New(),
		Subscribers: func(string, string) []string { return []string{"f1"} },
	})
	t.Cleanup(in.Close)
	e := event.New()
	e.SetID("a")
	e.SetSource("/test")
	e.SetType("t")
	_, err := in.Submit(context.Background(), "acme", []*event.Event{&e})
	var ierr *ingest.Error
	require.True(t, errors.As(err, &ierr), "%v", err)
	require.Equal(t, http.StatusServiceUnavailable, ierr.Status)
	require.Contains(t, ierr.Msg, "replicas did not confirm the tasks in time (redis.wait_replicas)")
	require.Contains(t, ierr.Msg, "retry with the same event ids")
	require.Empty(t, pub.topics)
}
