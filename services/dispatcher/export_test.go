package dispatcher

import (
	"context"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

// ChainNames lists d's router (admission) middlewares, outermost first.
func ChainNames(d *Dispatcher) []string { return names(d.chain) }

// AttemptChainNames lists d's attempt middlewares, outermost first.
func AttemptChainNames(d *Dispatcher) []string { return names(d.attemptChain) }

func names(chain []middleware.Named) []string {
	out := make([]string, len(chain))
	for i, m := range chain {
		out[i] = m.Name
	}
	return out
}

// Settings is the Config d runs with, defaults applied.
func Settings(d *Dispatcher) Config { return d.cfg }

// Handle runs d's handler (the end of the chain) on msg.
func Handle(d *Dispatcher, msg *message.Message) error { return d.handle(msg) }

// RouterLogger is the router's logger over l.
func RouterLogger(l watermill.LoggerAdapter, stopping *atomic.Bool) watermill.LoggerAdapter {
	return routerLogger{l, stopping}
}

// RouterAllStopped is the message Watermill logs when its last handler stops.
const RouterAllStopped = routerAllStopped

// StartersContext is the context of d's starters, cancelled when Stop
// begins (nil before Run).
func StartersContext(d *Dispatcher) context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.startersCtx
}

// NoFastStart makes d admit every lane delivery into its ready queue, as
// if no worker were ever free on delivery: the take path alone. Call it
// before Run.
func NoFastStart(d *Dispatcher) { d.fastClosed = true }
