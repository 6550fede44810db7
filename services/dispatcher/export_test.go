package dispatcher

import "github.com/ThreeDotsLabs/watermill/message"

// ChainNames lists d's router middlewares, outermost first.
func ChainNames(d *Dispatcher) []string {
	names := make([]string, len(d.chain))
	for i, m := range d.chain {
		names[i] = m.Name
	}
	return names
}

// Settings is the Config d runs with, defaults applied.
func Settings(d *Dispatcher) Config { return d.cfg }

// Handle runs d's handler (the end of the chain) on msg.
func Handle(d *Dispatcher, msg *message.Message) error { return d.handle(msg) }
