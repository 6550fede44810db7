//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/routing"
)

// TestIntegrationPoison: a function that always answers 500 ends dead after
// exactly max_attempts calls, one that answers 400 after exactly one; a
// redriven dead task runs again and can succeed; undecodable messages put
// straight onto every lane are quarantined and the consumers go on.
func TestIntegrationPoison(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) { runPoison(t, driver) })
	}
}

func runPoison(t *testing.T, driver string) {
	var healed atomic.Bool
	var mu sync.Mutex
	calls := map[string]int{} // by function/event id
	fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls[r.URL.Path+"/"+r.Header.Get("Ce-Id")]++
		mu.Unlock()
		switch {
		case r.URL.Path == "/ok":
			w.WriteHeader(http.StatusOK)
		case r.URL.Path == "/broken" && healed.Load():
			w.WriteHeader(http.StatusOK)
		case r.URL.Path == "/broken":
			http.Error(w, "always broken", http.StatusInternalServerError)
		default:
			http.Error(w, "never valid", http.StatusBadRequest)
		}
	}))
	t.Cleanup(fn.Close)
	sk := newSink(t)
	// The quarantine is the stack's own, deleted with its lanes.
	e := startTasklane(t, driver, fmt.Sprintf(`
functions:
  - {name: broken, events: [com.example.broken], endpoint: %q, retry: {max_attempts: 4, initial_backoff: 20ms, max_backoff: 100ms}}
  - {name: invalid, events: [com.example.invalid], endpoint: %q, retry: {max_attempts: 4, initial_backoff: 20ms}}
  - {name: ok, events: [com.example.ok], endpoint: %q}
subscriptions:
  - {name: all, sink: %q}
`, fn.URL+"/broken", fn.URL+"/invalid", fn.URL+"/ok", sk.srv.URL))

	// Poison every lane first: consumers must survive it.
	poisonLanes(t, e)

	submit := func(typ, id string) string {
		status, body := e.post("/v1/events", "", "", map[string]string{
			"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/poison", "Ce-Type": typ,
		}, nil)
		require.Equal(t, http.StatusAccepted, status, "%s", body)
		var sr contracts.SubmitResponse
		require.NoError(t, json.Unmarshal(body, &sr))
		return sr.Tasks[0].ID
	}
	const n = 10
	var broken, invalid, ok []string
	for i := range n {
		broken = append(broken, submit("com.example.broken", fmt.Sprintf("b-%d", i)))
		invalid = append(invalid, submit("com.example.invalid", fmt.Sprintf("i-%d", i)))
		ok = append(ok, submit("com.example.ok", fmt.Sprintf("o-%d", i)))
	}
	testkit.Eventually(t, 60*time.Second, func() bool { return sk.count() >= 3*n }, "results for all tasks (have %d)", sk.count())

	ctx := context.Background()
	check := func(ids []string, state contracts.State, reason contracts.Reason, wantCalls int, prefix string) {
		for i, id := range ids {
			task, err := e.app.Ledger().Get(ctx, "default", id)
			require.NoError(t, err)
			require.Equal(t, state, task.State, id)
			require.Equal(t, reason, task.Reason, id)
			mu.Lock()
			got := calls[fmt.Sprintf("%s%d", prefix, i)]
			mu.Unlock()
			require.Equal(t, wantCalls, got, "calls for %s%d", prefix, i)
		}
	}
	check(broken, contracts.StateDead, contracts.ReasonAttemptsExhausted, 4, "/broken/b-")
	check(invalid, contracts.StateDead, contracts.ReasonNonRetryable, 1, "/invalid/i-")
	check(ok, contracts.StateSucceeded, "", 1, "/ok/o-")

	// The dead-letter queue lists them; redrive the broken ones once healed.
	status, body := e.get("/v1/dlq?reason=attempts_exhausted&limit=100", "")
	require.Equal(t, http.StatusOK, status, "%s", body)
	var dl contracts.TaskList
	require.NoError(t, json.Unmarshal(body, &dl))
	require.Len(t, dl.Tasks, n)
	healed.Store(true)
	status, body = e.post("/v1/dlq/redrive", "", "application/json", nil, []byte(`{"function":"broken","dry_run":true}`))
	require.Equal(t, http.StatusOK, status, "%s", body)
	require.JSONEq(t, fmt.Sprintf(`{"matched":%d,"done":0,"dry_run":true}`, n), string(body))
	status, body = e.post("/v1/dlq/redrive", "", "application/json", nil, []byte(`{"function":"broken"}`))
	require.Equal(t, http.StatusOK, status, "%s", body)
	require.JSONEq(t, fmt.Sprintf(`{"matched":%d,"done":%d,"dry_run":false}`, n, n), string(body))
	testkit.Eventually(t, 30*time.Second, func() bool {
		for _, id := range broken {
			task, err := e.app.Ledger().Get(ctx, "default", id)
			if err != nil || task.State != contracts.StateSucceeded {
				return false
			}
		}
		return true
	}, "redriven tasks succeed")
	testkit.Eventually(t, 30*time.Second, func() bool { return sk.count() >= 4*n }, "results of the redriven tasks")
	sk.mu.Lock()
	for _, id := range broken {
		require.Len(t, sk.byTask[id], 2, "one result per life of %s", id)
		require.Equal(t, contracts.StateSucceeded, sk.byTask[id][1].State)
		require.Equal(t, 1, sk.byTask[id][1].Redrives)
	}
	sk.mu.Unlock()

	// Purge the never-valid ones.
	status, body = e.post("/v1/dlq/purge", "", "application/json", nil, []byte(`{"reason":"non_retryable"}`))
	require.Equal(t, http.StatusOK, status, "%s", body)
	require.JSONEq(t, fmt.Sprintf(`{"matched":%d,"done":%d,"dry_run":false}`, n, n), string(body))
	status, _ = e.get("/v1/tasks/"+invalid[0], "")
	require.Equal(t, http.StatusNotFound, status)

	// Every poison message sits in the quarantine with its reason.
	require.GreaterOrEqual(t, quarantined(t, e), poisonPerLane*e.cfg.Lanes.Shared)
}

const poisonPerLane = 2

// poisonLanes puts messages that are not task messages on every lane:
// one from a non-Watermill producer and one with broker-style non-string
// headers and no task metadata.
func poisonLanes(t *testing.T, e *env) {
	t.Helper()
	tab, err := routing.NewStaticNamed(e.names(), e.cfg.Lanes.Shared, e.cfg.Lanes.ShardSize)
	require.NoError(t, err)
	switch e.driver {
	case config.BrokerDriverAMQP:
		conn, err := amqp.Dial(testkit.AMQPURL())
		require.NoError(t, err)
		defer conn.Close()
		ch, err := conn.Channel()
		require.NoError(t, err)
		for _, lane := range tab.Lanes() {
			require.NoError(t, ch.Publish("", lane, false, false, amqp.Publishing{Body: []byte("not a task")}))
			require.NoError(t, ch.Publish("", lane, false, false, amqp.Publishing{
				Headers: amqp.Table{"x-death": []any{amqp.Table{"count": int64(3)}}, "x-delivery-count": int64(2), "ce_id": "x"},
				Body:    []byte("{broken"),
			}))
		}
	case config.BrokerDriverRedisStream:
		for _, lane := range tab.Lanes() {
			require.NoError(t, e.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: lane, Values: map[string]any{"hello": "world"}}).Err())
			require.NoError(t, e.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: lane, Values: map[string]any{"uuid": "u", "metadata": "{not json", "payload": "x"}}).Err())
		}
	}
}

// quarantined counts the messages in the quarantine.
func quarantined(t *testing.T, e *env) int {
	t.Helper()
	switch e.driver {
	case config.BrokerDriverAMQP:
		conn, err := amqp.Dial(testkit.AMQPURL())
		require.NoError(t, err)
		defer conn.Close()
		ch, err := conn.Channel()
		require.NoError(t, err)
		n := 0
		for {
			d, ok, err := ch.Get(e.quarantine(), false)
			require.NoError(t, err)
			if !ok {
				return n
			}
			reason, _ := d.Headers["tl_quarantine_reason"].(string)
			require.True(t, strings.Contains(reason, "undecodable"), "quarantine reason %q", reason)
			n++
		}
	default:
		n, err := e.rdb.XLen(context.Background(), e.quarantine()).Result()
		require.NoError(t, err)
		return int(n)
	}
}
