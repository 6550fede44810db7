package bench

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// parseBench parses args as `tasklane bench` does before a run.
func parseBench(t *testing.T, args ...string) *benchFlags {
	t.Helper()
	cmd, f := benchCommand(&bytes.Buffer{}, &bytes.Buffer{})
	require.NoError(t, cmd.ParseFlags(args))
	f.applyShape(cmd.Flags().Changed)
	require.NoError(t, f.validate())
	return f
}

func TestRawShapeDefaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		want rawFlags
	}{
		{
			name: "TunedByDefault",
			want: rawFlags{shape: "tuned", queues: 4, consumers: 2, prefetch: 200, channels: 4, window: 256, queueType: "plain"},
		},
		{
			name: "Lanes",
			args: []string{"--raw-shape", "lanes"},
			want: rawFlags{shape: "lanes", queues: 16, consumers: 16, prefetch: 1, channels: 16, window: 0, queueType: "classic"},
		},
		{
			name: "TunedWithOverrides",
			args: []string{"--raw-queues", "2", "--raw-consumers", "3", "--raw-queue-type", "classic", "--raw-confirm-window", "0"},
			want: rawFlags{shape: "tuned", queues: 2, consumers: 3, prefetch: 200, channels: 4, window: 0, queueType: "classic"},
		},
		{
			name: "LanesWithOverrides",
			args: []string{"--raw-shape", "lanes", "--raw-prefetch", "0", "--raw-channels", "2", "--raw-confirm-window", "64"},
			want: rawFlags{shape: "lanes", queues: 16, consumers: 16, prefetch: 0, channels: 2, window: 64, queueType: "classic"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := parseBench(t, append([]string{"--raw-broker", "amqp://x/"}, c.args...)...)
			require.Equal(t, c.want, f.raw)
		})
	}
}

// TestRawPublishers: with a confirm window the raw run has enough
// submitters to fill every channel's window; without one it has
// --concurrency of them.
func TestRawPublishers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		want int
	}{
		{args: nil, want: 4 * 256}, // batch 1, 32 clients: the windows need more
		{args: []string{"--batch", "100", "--concurrency", "4"}, want: 11}, // ceil(1024/100)
		{args: []string{"--concurrency", "2000"}, want: 2000},
		{args: []string{"--raw-shape", "lanes", "--concurrency", "128"}, want: 128},
		{args: []string{"--raw-confirm-window", "0"}, want: 32},
	}
	for _, c := range cases {
		f := parseBench(t, append([]string{"--raw-broker", "amqp://x/"}, c.args...)...)
		require.Equal(t, c.want, f.rawPublishers(), "%v", c.args)
	}
}

func TestRawShapeSummary(t *testing.T) {
	t.Parallel()
	f := parseBench(t, "--raw-broker", "amqp://x/")
	require.Equal(t, "tuned: 4 plain queues, 2 consumers each (prefetch 200, ack per message), 4 confirm channels (window 256), 32 submitters, batch 1",
		f.rawShapeSummary(false))
	f = parseBench(t, "--raw-broker", "redis://x/", "--raw-shape", "lanes", "--batch", "10")
	require.Equal(t, "lanes: 16 streams, 16 consumers each (XREADGROUP COUNT 1, one XACK per read), one pipeline of XADDs per submit request of 10, 32 submitters",
		f.rawShapeSummary(true))
}

func TestRawDriver(t *testing.T) {
	t.Parallel()
	require.Equal(t, "amqp", rawDriver("amqp://guest:guest@127.0.0.1:5672/bench"))
	require.Equal(t, "amqp", rawDriver("amqps://h/"))
	require.Equal(t, "redis", rawDriver("redis://127.0.0.1:6379/2"))
	require.Equal(t, "redis", rawDriver("rediss://h/"))
	require.Empty(t, rawDriver("http://h/"))
	require.Empty(t, rawDriver(""))
}

// TestPrintComparisonNamesTheShape: the ratio line says which raw shape it
// divides by.
func TestPrintComparisonNamesTheShape(t *testing.T) {
	t.Parallel()
	for _, shape := range []string{shapeTuned, shapeLanes} {
		c := &Comparison{
			RawBroker: &Report{Target: benchTargetRaw, RawShape: shape, CompletionRate: 1000, SubmitRate: 1000},
			Tasklane:  &Report{Target: benchTargetTasklane, CompletionRate: 250, SubmitRate: 500},
			RawShape:  shape, CompletionRatio: 0.25, SubmitRatio: 0.5,
		}
		var b bytes.Buffer
		printComparison(&b, c)
		require.Contains(t, b.String(), "tasklane / raw "+shape+" shape: completion 0.25x, submit 0.50x")
	}
}
