//go:build integration

package integration

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	toxiclient "github.com/Shopify/toxiproxy/v2/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// TestIntegrationConnectionFaults puts toxiproxy (in the test process)
// between a Tasklane child process (gateway, dispatcher, scheduler,
// notifier) and both RabbitMQ and Redis, and while about 100 events/s flow
// injects, one after another on the ledger link and then on the broker
// link: connection resets (reset_peer both ways for 2s: a request is cut
// before it reaches the server), resets of replies only (reset_peer
// downstream for 2s: the server executes the request, the connection is
// reset when its reply comes back, so the client cannot know the outcome),
// latency (100ms +-50ms both ways for 5s) and a 10s blackhole (timeout 0
// both ways: data dropped, connections kept open, then closed when it ends). Refused
// batches are sent again with the same event ids. Pass: no 202 for a task
// the ledger did not have at the moment of the answer (read directly, not
// through the proxy), and every 202-accepted task ends succeeded with one
// result: nothing lost, stuck, unexpected or succeeded twice.
func TestIntegrationConnectionFaults(t *testing.T) {
	tp := startToxiproxy(t)
	amqpUp, err := url.Parse(testkit.AMQPURL())
	require.NoError(t, err)
	redisOpt, err := redis.ParseURL(testkit.RedisURL())
	require.NoError(t, err)
	brokerProxy := tp.proxy("broker", amqpUp.Host)
	ledgerProxy := tp.proxy("ledger", redisOpt.Addr)

	brokerURL := *amqpUp
	brokerURL.Host = brokerProxy.Listen
	direct := redisURL(config.BrokerDriverAMQP)
	viaProxy := strings.Replace(direct, redisOpt.Addr, ledgerProxy.Listen, 1)
	require.NotEqual(t, direct, viaProxy)

	c := newChecker(t, 20*time.Millisecond)
	e := newStackAt(t, config.BrokerDriverAMQP, stackAt{AppAMQP: brokerURL.String(), AppRedis: viaProxy, Redis: direct}, faultConfig(c))
	app := e.spawn(appRoles...)

	l := startLoad(t, c, app.url(), "toxic", 25, 250*time.Millisecond, e.ledger())
	testkit.Eventually(t, 60*time.Second, func() bool { return c.finished() >= 300 }, "300 tasks done before the first fault")

	start := time.Now()
	for _, p := range []*toxiclient.Proxy{ledgerProxy, brokerProxy} {
		for _, f := range []struct {
			name string
			hold time.Duration
			add  func() error
		}{
			{"reset_peer both ways (requests cut)", 2 * time.Second, func() error {
				return addToxics(p, "reset_peer", toxiclient.Attributes{"timeout": 0})
			}},
			{"reset_peer downstream (requests served, replies cut)", 2 * time.Second, func() error {
				_, err := p.AddToxic("reset_peer_downstream", "reset_peer", "downstream", 1, toxiclient.Attributes{"timeout": 0})
				return err
			}},
			{"latency 100ms+-50ms", 5 * time.Second, func() error {
				return addToxics(p, "latency", toxiclient.Attributes{"latency": 100, "jitter": 50})
			}},
			{"blackhole", 10 * time.Second, func() error {
				return addToxics(p, "timeout", toxiclient.Attributes{"timeout": 0})
			}},
		} {
			before := c.finished()
			at := time.Now()
			require.NoError(t, f.add(), "%s: %s", p.Name, f.name)
			time.Sleep(f.hold) // hold the fault
			removeToxics(t, p)
			t.Logf("%5.1fs %s: %s for %s (%d results during it)", at.Sub(start).Seconds(), p.Name, f.name, f.hold, c.finished()-before)
			time.Sleep(3 * time.Second) // work flows between faults
		}
	}
	faultEnd := time.Now()

	time.Sleep(2 * time.Second) // load after the faults, not synchronisation
	faultRun{t: t, e: e, c: c, app: app, load: l, faultEnd: faultEnd}.finish(120 * time.Second)
	app.stop()
}

// toxi is an in-process toxiproxy server and its client.
type toxi struct {
	t      *testing.T
	client *toxiclient.Client
}

func startToxiproxy(t *testing.T) *toxi {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	api := httptest.NewServer(srv.Routes())
	t.Cleanup(func() {
		api.Close()
		// Stops every proxy and closes its connections.
		_ = srv.Collection.Clear()
	})
	return &toxi{t: t, client: toxiclient.NewClient(api.URL)}
}

// proxy listens on a free local port and forwards to upstream.
func (tp *toxi) proxy(name, upstream string) *toxiclient.Proxy {
	tp.t.Helper()
	p, err := tp.client.CreateProxy(name, "127.0.0.1:0", upstream)
	require.NoError(tp.t, err)
	require.False(tp.t, strings.HasSuffix(p.Listen, ":0"), "proxy %s listens on %s", name, p.Listen)
	return p
}

// addToxics adds a toxic of typ to both directions of p.
func addToxics(p *toxiclient.Proxy, typ string, attrs toxiclient.Attributes) error {
	for _, stream := range []string{"upstream", "downstream"} {
		if _, err := p.AddToxic(typ+"_"+stream, typ, stream, 1, attrs); err != nil {
			return err
		}
	}
	return nil
}

// removeToxics removes every toxic of p.
func removeToxics(t *testing.T, p *toxiclient.Proxy) {
	t.Helper()
	toxics, err := p.Toxics()
	require.NoError(t, err)
	for _, x := range toxics {
		require.NoError(t, p.RemoveToxic(x.Name))
	}
}
