package tasklane

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
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
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cmd, f := benchCommand(&bytes.Buffer{}, &bytes.Buffer{})
			require.NoError(t, cmd.ParseFlags(c.args))
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
// RabbitMQ: every message is counted once, and the queues are gone after.
func TestBenchRawBroker(t *testing.T) {
	url := testkit.RequireAMQP(t)
	var out, progress bytes.Buffer
	cmd := newBenchCommand(&out, &progress)
	cmd.SetArgs([]string{"--raw-broker", url, "-n", "500", "--concurrency", "8", "--raw-queues", "2", "--raw-consumers", "2", "--json"})
	require.NoError(t, cmd.ExecuteContext(context.Background()))
	var r BenchReport
	require.NoError(t, json.Unmarshal(out.Bytes(), &r))
	require.Equal(t, benchTargetRaw, r.Target)
	require.Equal(t, 500, r.Accepted)
	require.Equal(t, 500, r.Completed)
	require.Empty(t, r.Errors)
	require.Positive(t, r.CompletionRate)
	require.LessOrEqual(t, r.SubmitToStart.P50, r.SubmitToFinish.P50)
	require.Len(t, r.RawQueues, 2)

	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	defer conn.Close()
	for _, q := range r.RawQueues {
		ch, err := conn.Channel()
		require.NoError(t, err)
		_, err = ch.QueueDeclarePassive(q, true, false, false, false, nil)
		var ae *amqp.Error
		require.ErrorAs(t, err, &ae, "queue %s still exists", q)
		require.Equal(t, amqp.NotFound, ae.Code)
	}
}
