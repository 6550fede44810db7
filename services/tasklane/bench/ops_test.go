package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
)

func TestParseCommandStats(t *testing.T) {
	t.Parallel()
	info := "# Commandstats\r\n" +
		"cmdstat_xadd:calls=120,usec=300,usec_per_call=2.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_client|setinfo:calls=4,usec=2,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha:calls=bad,usec=1\r\n" +
		"not a stat line\r\n"
	require.Equal(t, map[string]int64{"xadd": 120, "client|setinfo": 4}, parseCommandStats(info))
}

// TestRedisOpsDelta: the commands called between two readings, most
// called first, at most 10, the first reading's INFO left out.
func TestRedisOpsDelta(t *testing.T) {
	t.Parallel()
	before := map[string]int64{"info": 5, "xadd": 100, "get": 7}
	after := map[string]int64{"info": 6, "xadd": 300, "get": 7, "xack": 50, "evalsha": 50}
	for i := range 12 {
		after[fmt.Sprintf("cmd%02d", i)] = 1
	}
	per := func(n int64) float64 { return float64(n) / 100 }
	ops := redisOpsDelta(before, after, per)
	require.Equal(t, int64(200+50+50+12), ops.Commands)
	require.InDelta(t, 3.12, ops.PerTask, 1e-9)
	require.Len(t, ops.Top, 10)
	require.Equal(t, CommandCount{Command: "xadd", Calls: 200, PerTask: 2}, ops.Top[0])
	require.Equal(t, "evalsha", ops.Top[1].Command, "ties by name")
	require.Equal(t, "xack", ops.Top[2].Command)
	for _, c := range ops.Top {
		require.NotEqual(t, "info", c.Command)
		require.NotEqual(t, "get", c.Command)
	}
}

func TestOpsTargets(t *testing.T) {
	t.Parallel()
	const a, r = "amqp://guest:guest@127.0.0.1:5672/bench", "redis://127.0.0.1:6379/2"
	cases := []struct {
		name              string
		args              []string
		rawURL            string
		wantRedis, wantMQ string
	}{
		{name: "RawAMQP", rawURL: a, wantMQ: a},
		{name: "RawAMQPWithOpsRedis", args: []string{"--ops-redis", r}, rawURL: a, wantRedis: r, wantMQ: a},
		{name: "RawStreams", args: []string{"--results", a}, rawURL: r, wantRedis: r},
		{name: "TasklaneAMQP", args: []string{"--results", a}, wantRedis: "redis://127.0.0.1:6379/", wantMQ: a},
		{name: "TasklaneAMQPWithOpsRedis", args: []string{"--results", a, "--ops-redis", r}, wantRedis: r, wantMQ: a},
		{name: "TasklaneStreams", args: []string{"--results", r}, wantRedis: r},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := parseBench(t, c.args...)
			gotRedis, gotMQ := f.opsTargets(c.rawURL)
			require.Equal(t, c.wantRedis, gotRedis)
			require.Equal(t, c.wantMQ, gotMQ)
		})
	}
}

// TestRabbitStats reads a vhost's message stats from a management API
// stand-in, with the credentials of the management URL.
func TestRabbitStats(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pw, ok := r.BasicAuth()
		if !ok || user != "admin" || pw != "secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.URL.EscapedPath() != "/api/vhosts/bench%2Fa" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"name": "bench/a", "message_stats": map[string]any{
			"publish": 40, "deliver_get": 30, "ack": 20, "publish_details": map[string]any{"rate": 1.5},
		}})
	}))
	defer srv.Close()
	mgmt := strings.Replace(srv.URL, "http://", "http://admin:secret@", 1)
	got, err := rabbitStats(context.Background(), mgmt, "amqp://guest:guest@127.0.0.1:5672/bench%2Fa")
	require.NoError(t, err)
	require.Equal(t, &RabbitOps{Vhost: "bench/a", Publishes: 40, Deliveries: 30, Acks: 20}, got)

	_, err = rabbitStats(context.Background(), srv.URL, "amqp://guest:guest@127.0.0.1:5672/bench%2Fa")
	require.ErrorContains(t, err, "HTTP 401")
}

// TestCountOpsOnRawStreams counts a raw Redis streams run's commands: at
// least one per message, and at least one XADD per message when XADD is
// among the ten commands called most (INFO commandstats is server-wide:
// other test packages sharing the Redis can push it out of the ten).
func TestCountOpsOnRawStreams(t *testing.T) {
	testkit.RequireRealRedis(t, "reads INFO commandstats")
	var out, progress testkit.SyncBuffer
	cmd := NewCommand(&out, &progress)
	cmd.SetArgs([]string{"--raw-broker", testkit.RedisURL(), "-n", "300", "--count-ops", "--json"})
	require.NoError(t, cmd.ExecuteContext(context.Background()))
	var r Report
	require.NoError(t, json.Unmarshal([]byte(out.String()), &r))
	require.NotNil(t, r.Ops)
	require.NotNil(t, r.Ops.Redis)
	require.Nil(t, r.Ops.RabbitMQ)
	require.Equal(t, 300, r.Ops.Tasks)
	require.GreaterOrEqual(t, r.Ops.Redis.Commands, int64(300))
	for _, c := range r.Ops.Redis.Top {
		if c.Command == "xadd" {
			require.GreaterOrEqual(t, c.Calls, int64(300))
		}
	}
}
