//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/routing"
	"github.com/tasklane/tasklane/services/tasklane"
)

// TestIntegrationDedicatedLaneLifecycle moves a tenant to a dedicated lane
// and back while no dispatcher runs: a dispatcher started after the split
// consumes the dedicated lane; one restarted after the merge still
// consumes the retired lane (the tasks queued there before the merge) and
// the shared lanes; once the retired lane is empty and its grace period
// over, the controller deletes it. Every task succeeds once. On the
// redisstream driver the dedicated lane is a stream with the dispatchers'
// consumer group, and deleting it deletes the stream.
func TestIntegrationDedicatedLaneLifecycle(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runDedicatedLaneLifecycle(t, driver) })
	}
}

func runDedicatedLaneLifecycle(t *testing.T, driver string) {
	const n, adminKey = 300, "admin-integration-key"
	fn := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(fn.Close)
	e := newStack(t, driver, fmt.Sprintf(`server: {admin_keys: [%q]}
routing: {lane_grace: 2s}
tenants:
  - {id: mover, api_keys: ["key-mover-integration"]}
functions:
  - {name: work, events: [com.example.work], endpoint: %q}
`, adminKey, fn.URL))
	lane := e.names().Dedicated("mover") // deleted with the stack's lanes
	e.start(tasklane.RoleGateway, tasklane.RoleScheduler, tasklane.RoleNotifier, tasklane.RoleController)

	pin := func(dedicated bool) {
		body, _ := json.Marshal(contracts.PinRequest{Tenant: "mover", Dedicated: dedicated})
		status, resp := e.post("/v1/admin/routing/pin", adminKey, "application/json", nil, body)
		require.Equal(t, http.StatusOK, status, "%s", resp)
	}
	submit := func(prefix string) {
		var b bytes.Buffer
		b.WriteByte('[')
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"specversion":"1.0","id":"%s-%d","source":"/routing","type":"com.example.work"}`, prefix, i)
		}
		b.WriteByte(']')
		status, resp := e.post("/v1/events", "key-mover-integration", "application/cloudevents-batch+json", nil, b.Bytes())
		require.Equal(t, http.StatusAccepted, status, "%s", resp)
	}
	succeeded := func() int64 {
		c, _ := e.rdb.ZCard(context.Background(), e.ledger().TenantKeyPrefix("mover")+"st:succeeded").Result()
		return c
	}
	depth := func() int {
		d, _ := e.laneDepth(lane)
		return d
	}

	// Split with no dispatcher: the tasks wait in the dedicated lane.
	pin(true)
	submit("split")
	testkit.Eventually(t, 10*time.Second, func() bool { return depth() == n }, "%d tasks in %s (%d)", n, lane, depth())

	// A dispatcher that starts after the split finds the lane in the
	// table and consumes it.
	disp := e.spawn(tasklane.RoleDispatcher)
	testkit.Eventually(t, 30*time.Second, func() bool { return succeeded() == n }, "the split's tasks ran (%d)", succeeded())
	disp.stop()

	// More tasks for the dedicated lane, then a merge while no dispatcher
	// runs: those tasks stay in the now retired lane, new ones go to the
	// shared shard.
	submit("before-merge")
	testkit.Eventually(t, 10*time.Second, func() bool { return depth() == n }, "%d tasks in %s (%d)", n, lane, depth())
	pin(false)
	snap, err := routing.NewStoreAt(e.rdb, e.ledger().RoutingKey()).Load(context.Background())
	require.NoError(t, err)
	require.NotContains(t, snap.Dedicated, "mover")
	require.Contains(t, snap.Retiring, lane)
	submit("after-merge")
	require.Equal(t, n, depth(), "nothing new is routed to a retired lane")

	// The restarted dispatcher consumes the retired lane too.
	disp.start()
	testkit.Eventually(t, 30*time.Second, func() bool { return succeeded() == 3*n }, "every task ran (%d of %d)", succeeded(), 3*n)

	// Empty and past its grace: deleted, and gone from the table.
	testkit.Eventually(t, 30*time.Second, func() bool {
		snap, err := routing.NewStoreAt(e.rdb, e.ledger().RoutingKey()).Load(context.Background())
		_, exists := e.laneDepth(lane)
		return err == nil && len(snap.Retiring) == 0 && !exists
	}, "the retired lane deleted")
	status, body := e.get("/v1/admin/routing", adminKey)
	require.Equal(t, http.StatusOK, status)
	var view contracts.RoutingView
	require.NoError(t, json.Unmarshal(body, &view))
	var actions []string
	for _, c := range view.Changes {
		actions = append(actions, c.Action)
	}
	require.Equal(t, []string{"delete", "merge", "split"}, actions)

	// Nothing lost, nothing run twice.
	tasks := allTasks(t, e.app.Ledger(), "mover")
	require.Len(t, tasks, 3*n)
	for _, task := range tasks {
		require.Equal(t, contracts.StateSucceeded, task.State, task.ID)
		require.Equal(t, 1, task.Attempts, "task %s ran more than once", task.ID)
	}
}
