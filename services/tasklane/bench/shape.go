package bench

import (
	"fmt"
	"strings"

	"github.com/tasklane/tasklane/pkg/config"
)

// Raw broker shapes (--raw-shape).
const (
	// shapeTuned is the broker used the way a competent user would use it
	// directly: a few queues, a confirm window of hundreds per publishing
	// channel, a few consumers per queue with a prefetch of 200.
	shapeTuned = "tuned"
	// shapeLanes is the broker shaped like Tasklane's own lanes: 16
	// priority queues, 16 consumers per queue with prefetch 1.
	shapeLanes = "lanes"
)

// rawShapeDefaults are the raw-broker settings a shape gives the --raw-*
// flags that were not set on the command line.
type rawShapeDefaults struct {
	queues, consumers, prefetch, channels, window int
	queueType                                     string
}

// rawShapes maps each --raw-shape to its defaults.
var rawShapes = map[string]rawShapeDefaults{
	shapeTuned: {queues: 4, consumers: 2, prefetch: 200, channels: 4, window: 256, queueType: "plain"},
	shapeLanes: {
		queues: config.LanesSharedDefault, consumers: config.ConsumersPerLaneDefault, prefetch: 1,
		channels: config.PublishChannelsDefault, window: 0, queueType: "classic",
	},
}

// applyShape fills the --raw-* flags left unset with f.raw.shape's
// defaults; changed says whether a flag was set (cmd.Flags().Changed). An
// unknown shape is left for validate to report.
func (f *benchFlags) applyShape(changed func(name string) bool) {
	d, ok := rawShapes[f.raw.shape]
	if !ok {
		return
	}
	setInt := func(name string, v *int, def int) {
		if !changed(name) {
			*v = def
		}
	}
	setInt("raw-queues", &f.raw.queues, d.queues)
	setInt("raw-consumers", &f.raw.consumers, d.consumers)
	setInt("raw-prefetch", &f.raw.prefetch, d.prefetch)
	setInt("raw-channels", &f.raw.channels, d.channels)
	setInt("raw-confirm-window", &f.raw.window, d.window)
	if !changed("raw-queue-type") {
		f.raw.queueType = d.queueType
	}
}

// rawPublishers is how many submitters the raw run uses: with a confirm
// window, enough to keep every channel's window full (each submitter has
// one --batch in flight), and never fewer than --concurrency.
func (f *benchFlags) rawPublishers() int {
	if f.raw.window <= 0 {
		return f.concurrency
	}
	return max(f.concurrency, (f.raw.channels*f.raw.window+f.batch-1)/f.batch)
}

// rawShapeSummary describes the raw run's shape in one line, for the
// report.
func (f *benchFlags) rawShapeSummary(redisStreams bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: ", f.raw.shape)
	if redisStreams {
		fmt.Fprintf(&b, "%d streams, %d consumers each (XREADGROUP COUNT %d, one XACK per read), ",
			f.raw.queues, f.raw.consumers, max(f.raw.prefetch, 1))
		if f.raw.window > 0 {
			fmt.Fprintf(&b, "%d publishers pipelining up to %d XADDs", f.raw.channels, f.raw.window)
		} else {
			fmt.Fprintf(&b, "one pipeline of XADDs per submit request of %d", f.batch)
		}
		fmt.Fprintf(&b, ", %d submitters", f.concurrency)
		return b.String()
	}
	fmt.Fprintf(&b, "%d %s queues, %d consumers each (prefetch %d, ack per message), %d confirm channels",
		f.raw.queues, f.raw.queueType, f.raw.consumers, f.raw.prefetch, f.raw.channels)
	if f.raw.window > 0 {
		fmt.Fprintf(&b, " (window %d)", f.raw.window)
	}
	fmt.Fprintf(&b, ", %d submitters, batch %d", f.concurrency, f.batch)
	return b.String()
}
