package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/tasklane"
)

func TestBenchFlagsValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		want string // "" = valid
	}{
		{name: "Defaults"},
		{name: "TenantsNeedAKeyTemplate", args: []string{"--tenants", "4"}, want: "--key-template"},
		{name: "TenantsWithAKeyTemplate", args: []string{"--tenants", "4", "--key-template", "bench-key-%d"}},
		{name: "NegativeDelay", args: []string{"--delay", "-1"}, want: "--delay"},
		{name: "BadMode", args: []string{"--mode", "batch"}, want: "--mode"},
		{name: "RawAndCompare", args: []string{"--raw-broker", "amqp://x/", "--compare-raw", "amqp://x/"}, want: "use one"},
		{name: "BadRawQueueType", args: []string{"--raw-broker", "amqp://x/", "--raw-queue-type", "stream"}, want: "--raw-queue-type"},
		{name: "BadRawShape", args: []string{"--raw-broker", "amqp://x/", "--raw-shape", "fast"}, want: "--raw-shape"},
		{name: "LanesShape", args: []string{"--compare-raw", "amqp://x/", "--raw-shape", "lanes"}},
		{name: "RedisRawBroker", args: []string{"--raw-broker", "redis://127.0.0.1:6379/2"}},
		{name: "BadRawScheme", args: []string{"--raw-broker", "http://x/"}, want: "amqp:// or redis://"},
		{name: "BadCompareScheme", args: []string{"--compare-raw", "nats://x/"}, want: "amqp:// or redis://"},
		{name: "NegativeWindow", args: []string{"--raw-broker", "amqp://x/", "--raw-confirm-window", "-1"}, want: "--raw-confirm-window"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cmd, f := benchCommand(&bytes.Buffer{}, &bytes.Buffer{})
			require.NoError(t, cmd.ParseFlags(c.args))
			f.applyShape(cmd.Flags().Changed)
			err := f.validate()
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.want)
		})
	}
}

func TestBenchKeys(t *testing.T) {
	t.Parallel()
	cmd, f := benchCommand(&bytes.Buffer{}, &bytes.Buffer{})
	require.NoError(t, cmd.ParseFlags([]string{"--key", "k", "--tenants", "3", "--key-template", "bench-key-%d"}))
	require.Equal(t, "bench-key-2", f.key(2))
	f.keyTemplate = ""
	require.Equal(t, "k", f.key(2))
}

func TestPercentiles(t *testing.T) {
	t.Parallel()
	v := make([]float64, 100)
	for i := range v {
		v[i] = float64(100 - i)
	}
	require.Equal(t, Percentiles{P50: 51, P90: 91, P99: 100, Max: 100}, percentiles(v))
	require.Equal(t, Percentiles{}, percentiles(nil))
}

// TestBenchRawBroker runs a small raw-broker measurement against the real
// RabbitMQ in each shape (the tuned one with a confirm window smaller than
// a batch, so submitters wait for window slots): every message is counted
// once, and the queues are gone after.
func TestBenchRawBroker(t *testing.T) {
	url := testkit.RequireAMQP(t)
	for _, c := range []struct {
		shape string
		args  []string
	}{
		{shape: shapeTuned, args: []string{"--raw-confirm-window", "16", "--batch", "20"}},
		{shape: shapeLanes, args: []string{"--raw-consumers", "2"}},
	} {
		t.Run(c.shape, func(t *testing.T) {
			var out, progress bytes.Buffer
			cmd := NewCommand(&out, &progress)
			args := []string{"--raw-broker", url, "--raw-shape", c.shape, "-n", "500", "--concurrency", "8", "--raw-queues", "2", "--json"}
			cmd.SetArgs(append(args, c.args...))
			require.NoError(t, cmd.ExecuteContext(context.Background()))
			var r Report
			require.NoError(t, json.Unmarshal(out.Bytes(), &r))
			require.Equal(t, benchTargetRaw, r.Target)
			require.Equal(t, c.shape, r.RawShape)
			require.Contains(t, r.RawShapeDetail, c.shape+": 2 ")
			require.Equal(t, 500, r.Accepted)
			require.Equal(t, 500, r.Completed)
			require.Zero(t, r.Duplicates)
			require.Empty(t, r.Errors)
			require.Positive(t, r.CompletionRate)
			require.LessOrEqual(t, r.SubmitToStart.P50, r.SubmitToFinish.P50)
			require.Len(t, r.RawQueues, 2)
			requireQueuesGone(t, url, r.RawQueues)
		})
	}
}

// TestBenchRawStreams runs a small raw-broker measurement on Redis streams
// in each shape, and with --submit-only: every entry is counted once (none
// consumed without consumers), and the streams are gone after.
func TestBenchRawStreams(t *testing.T) {
	rdb, _ := testkit.Redis(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{name: "Tuned", args: []string{"--raw-confirm-window", "50", "--raw-prefetch", "30"}},
		{name: "Lanes", args: []string{"--raw-shape", "lanes", "--raw-consumers", "3", "--batch", "5"}},
		{name: "SubmitOnly", args: []string{"--submit-only", "--batch", "25"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, progress bytes.Buffer
			cmd := NewCommand(&out, &progress)
			args := []string{"--raw-broker", testkit.RedisURL(), "-n", "400", "--concurrency", "8", "--raw-queues", "3", "--json", "--timeout", "30s"}
			cmd.SetArgs(append(args, c.args...))
			require.NoError(t, cmd.ExecuteContext(context.Background()))
			var r Report
			require.NoError(t, json.Unmarshal(out.Bytes(), &r), out.String())
			require.Equal(t, 400, r.Accepted)
			require.Empty(t, r.Errors)
			require.Zero(t, r.Duplicates)
			if c.name == "SubmitOnly" {
				require.Zero(t, r.Completed)
			} else {
				require.Equal(t, 400, r.Completed)
				require.LessOrEqual(t, r.SubmitToStart.P50, r.SubmitToFinish.P50)
			}
			require.Len(t, r.RawQueues, 3)
			n, err := rdb.Exists(context.Background(), r.RawQueues...).Result()
			require.NoError(t, err)
			require.Zero(t, n, "streams %v still exist", r.RawQueues)
		})
	}
}

// TestBenchRawBrokerSubmitOnly publishes without consumers: every message
// is confirmed, none consumed, and the queues (with the messages) are gone
// after.
func TestBenchRawBrokerSubmitOnly(t *testing.T) {
	url := testkit.RequireAMQP(t)
	var out, progress bytes.Buffer
	cmd := NewCommand(&out, &progress)
	cmd.SetArgs([]string{"--raw-broker", url, "--submit-only", "-n", "300", "--batch", "50", "--concurrency", "2", "--raw-queues", "2", "--json"})
	require.NoError(t, cmd.ExecuteContext(context.Background()))
	var r Report
	require.NoError(t, json.Unmarshal(out.Bytes(), &r))
	require.True(t, r.SubmitOnly)
	require.Equal(t, 300, r.Accepted)
	require.Zero(t, r.Completed)
	require.Empty(t, r.Errors)
	require.Positive(t, r.SubmitRate)
	requireQueuesGone(t, url, r.RawQueues)
}

func requireQueuesGone(t *testing.T, url string, queues []string) {
	t.Helper()
	require.NotEmpty(t, queues)
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	defer conn.Close()
	for _, q := range queues {
		ch, err := conn.Channel()
		require.NoError(t, err)
		_, err = ch.QueueDeclarePassive(q, true, false, false, false, nil)
		var ae *amqp.Error
		require.ErrorAs(t, err, &ae, "queue %s still exists", q)
		require.Equal(t, amqp.NotFound, ae.Code)
	}
}

// TestBenchAgainstDevServer runs `tasklane bench` against the dev-mode app
// (embedded store, redisstream lanes and results) as three tenants, in each
// content mode and with a delay: every event is accepted, every result read
// back; a wrong key is counted as an error kind, not a failure of the run.
func TestBenchAgainstDevServer(t *testing.T) {
	cfg := tasklane.DevConfig()
	cfg.Server.Addr = "127.0.0.1:0"
	for i := range 3 {
		cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: fmt.Sprintf("bench-%d", i), APIKeys: []string{fmt.Sprintf("bench-key-%d", i)}})
	}
	stop, err := tasklane.UseEmbeddedStore(cfg)
	require.NoError(t, err)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	app, err := tasklane.Start(ctx, cfg, tasklane.Options{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer func() { require.NoError(t, app.Shutdown(context.Background())) }()

	bench := func(t *testing.T, args ...string) Report {
		t.Helper()
		var out, progress bytes.Buffer
		cmd := NewCommand(&out, &progress)
		cmd.SetArgs(append([]string{"--server", app.URL(), "--results", cfg.Redis.URL, "--json", "--timeout", "30s"}, args...))
		require.NoError(t, cmd.ExecuteContext(ctx))
		var r Report
		require.NoError(t, json.Unmarshal(out.Bytes(), &r), out.String())
		return r
	}
	tenants := []string{"--tenants", "3", "--key-template", "bench-key-%d"}
	for _, c := range []struct {
		name string
		args []string
	}{
		{name: "Binary", args: []string{"-n", "60", "--concurrency", "4"}},
		{name: "Structured", args: []string{"-n", "60", "--concurrency", "4", "--mode", "structured"}},
		{name: "Batch", args: []string{"-n", "60", "--batch", "7"}},
		{name: "Delay", args: []string{"-n", "6", "--delay", "1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := bench(t, append(c.args, tenants...)...)
			require.Equal(t, benchTargetTasklane, r.Target)
			require.Equal(t, r.Events, r.Accepted)
			require.Equal(t, r.Events, r.Completed)
			require.Empty(t, r.Errors)
			require.Equal(t, map[string]int{"succeeded": r.Events}, r.States)
			if c.name == "Delay" {
				require.GreaterOrEqual(t, r.SubmitToStart.P50, 1000.0, "submit->start includes the delay")
			}
		})
	}
	t.Run("WrongKey", func(t *testing.T) {
		r := bench(t, "-n", "5", "--tenants", "2", "--key-template", "wrong-key-%d")
		require.Zero(t, r.Accepted)
		require.Equal(t, map[string]int{"http_401": 5}, r.Errors)
	})
}
