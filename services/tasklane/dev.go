package tasklane

import (
	"fmt"

	"github.com/alicebob/miniredis/v2"

	"github.com/tasklane/tasklane/pkg/config"
)

// DevEventType is the event type the default dev config's echo function
// takes.
const DevEventType = "com.example.hello"

// DevConfig is the config `tasklane dev` runs without --config: no tenants
// (no auth), a builtin:echo function for com.example.hello and a
// builtin:noop function for com.example.noop.
func DevConfig() *config.Config {
	c := &config.Config{
		Server: config.Server{Addr: "127.0.0.1:8080"},
		Functions: []config.Function{
			{Name: "echo", Events: []string{DevEventType}, Endpoint: config.EndpointEcho},
			{Name: "noop", Events: []string{"com.example.noop"}, Endpoint: config.EndpointNoop},
		},
	}
	return c.WithDefaults()
}

// UseEmbeddedStore starts an in-process Redis-compatible server and points
// cfg at it: it holds the ledger and, as the redisstream broker, the lanes,
// so dev mode runs the same code as production. stop shuts the server down
// (everything in it is lost).
func UseEmbeddedStore(cfg *config.Config) (stop func(), err error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("starting embedded store: %w", err)
	}
	cfg.Redis.URL = "redis://" + mr.Addr() + "/0"
	cfg.Broker.Driver = config.BrokerDriverRedisStream
	return mr.Close, nil
}
