//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/keyslot"
	"github.com/tasklane/tasklane/pkg/redisconn"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/tasklane"
)

// TestIntegrationRedisCluster starts a Redis Cluster of 3 masters and 3
// replicas on local ports (testkit.StartCluster) and checks what the
// ledger's move to it stands on: the start-up's mode detection (a cluster
// node configured as one Redis, the machine's single Redis configured as a
// cluster, a cluster whose slots are unassigned: each a clear reason, not
// a crash), keyslot's slots against CLUSTER KEYSLOT, and the stock
// watermill-redisstream publisher and subscriber on the cluster.
func TestIntegrationRedisCluster(t *testing.T) {
	started := time.Now()
	cl := testkit.StartCluster(t, 3, 1)
	t.Logf("cluster of %d nodes ready in %s: %s", len(cl.Addrs()), time.Since(started).Round(time.Millisecond), cl.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("detection", func(t *testing.T) {
		require.NoError(t, redisconn.CheckURL(ctx, cl.URL(), true), "a ready cluster configured as one")

		err := redisconn.CheckURL(ctx, "redis://"+cl.Addrs()[0], false)
		var me *redisconn.ModeError
		require.ErrorAs(t, err, &me)
		require.Contains(t, err.Error(), "is a Redis Cluster node (cluster_enabled:1) but redis.cluster is false")

		err = redisconn.CheckURL(ctx, testkit.RedisURL(), true)
		require.ErrorAs(t, err, &me)
		require.Contains(t, err.Error(), "is not a Redis Cluster node (cluster support disabled) but redis.cluster is true")

		// A cluster-enabled node no slots are assigned to.
		lone, err := cl.StartNode()
		require.NoError(t, err)
		testkit.Eventually(t, 10*time.Second, func() bool {
			err = redisconn.CheckURL(ctx, "redis://"+lone.Addr, true)
			return isModeError(err)
		}, "the lone node answers: %v", err)
		require.Contains(t, err.Error(), "the Redis Cluster is not ready")
		require.Contains(t, err.Error(), "cluster_state:fail, 0 of 16384 slots assigned")
	})

	// An app whose redis.url names a cluster node, redis.cluster false,
	// stays up and not ready, saying why (the start-up's Redis check).
	t.Run("app not ready on a cluster node", func(t *testing.T) {
		cfg := tasklane.DevConfig()
		cfg.Server.Addr = "127.0.0.1:0"
		cfg.Redis.URL = "redis://" + cl.Addrs()[0] + "/0"
		cfg.Broker.URL = testkit.RequireAMQP(t)
		roles, err := tasklane.ParseRoles(tasklane.RoleGateway)
		require.NoError(t, err)
		var logs testkit.SyncBuffer
		app, err := tasklane.Launch(ctx, cfg, tasklane.Options{Roles: roles, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, app.Shutdown(context.Background())) })
		testkit.Eventually(t, 10*time.Second, func() bool {
			return strings.Contains(logs.String(), "is a Redis Cluster node (cluster_enabled:1) but redis.cluster is false")
		}, "a retry line naming the mismatch; log:\n%s", &logs)
		resp, err := http.Get("http://" + app.Addr() + "/readyz")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		require.Contains(t, string(body), "redis.cluster is false")
	})

	rdb := cl.Client()
	t.Run("keyslot", func(t *testing.T) {
		for _, key := range []string{"", "foo", "tl:delay", "tl:{acme}:task:01J", "tl:{f:fn}:ready:0", "a{}b", "{{x}}", "tl:trigger:{nightly}:lock"} {
			want, err := rdb.ClusterKeySlot(ctx, key).Result()
			require.NoError(t, err)
			require.Equal(t, int(want), keyslot.Of(key), "slot of %q", key)
		}
	})

	t.Run("watermill redisstream", func(t *testing.T) {
		logger := watermill.NopLogger{}
		pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: rdb}, logger)
		require.NoError(t, err)
		sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
			Client: rdb, ConsumerGroup: "cluster-test", OldestId: "0", DisableIndefiniteInitialBlock: true,
		}, logger)
		require.NoError(t, err)
		t.Cleanup(func() { _ = pub.Close(); _ = sub.Close() })
		// Topics in different slots, so that more than one master serves.
		topics := []string{"tl.lane.shared.00", "tl.lane.shared.01", "tl.results"}
		slots := map[int]bool{}
		const perTopic = 20
		for _, topic := range topics {
			slots[keyslot.Of(topic)] = true
			for i := range perTopic {
				require.NoError(t, pub.Publish(topic, message.NewMessage(fmt.Sprintf("%s-%d", topic, i), []byte("x"))))
			}
		}
		require.Len(t, slots, len(topics))
		for _, topic := range topics {
			msgs, err := sub.Subscribe(ctx, topic)
			require.NoError(t, err)
			seen := map[string]bool{}
			for len(seen) < perTopic {
				select {
				case m := <-msgs:
					seen[m.UUID] = true
					m.Ack()
				case <-ctx.Done():
					t.Fatalf("%s: %d of %d messages received", topic, len(seen), perTopic)
				}
			}
		}
	})
}

func isModeError(err error) bool {
	var me *redisconn.ModeError
	return errors.As(err, &me)
}
