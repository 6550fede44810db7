package tasklane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/redisconn"
)

// Start-up backoff: the first retry after retryFirst, doubling up to
// retryMax, so a process becomes ready within retryMax of its services.
const (
	retryFirst = 100 * time.Millisecond
	retryMax   = 2 * time.Second
)

// Checks /readyz reports while the app starts.
const (
	statusRedis  = "redis"
	statusBroker = "broker"
	statusLanes  = "lanes"
	statusReady  = "roles"
)

// startStatus is what the start-up waits for, by check: "ok" or why not.
type startStatus struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *startStatus) set(check, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]string{}
	}
	s.m[check] = state
}

// snapshot returns every check, "starting" for those not reached yet.
func (s *startStatus) snapshot() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{statusRedis: "connecting", statusBroker: "connecting", statusLanes: "not declared yet", statusReady: "not started yet"}
	for k, v := range s.m {
		out[k] = v
	}
	return out
}

// summary is one line of what is not ready, e.g. "redis: connection refused".
func (s *startStatus) summary() string {
	var parts []string
	for k, v := range s.snapshot() {
		if v != "ok" {
			parts = append(parts, k+": "+v)
		}
	}
	if len(parts) == 0 {
		return "starting"
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// checkRedis reports whether the Redis behind redis.url answers and is
// what redis.cluster says. A cluster node behind redis.url (redis.cluster
// false) would answer MOVED to most of the ledger's keys, and a cluster
// that does not serve every slot would fail some tasks: not ready, saying
// why, rather than failing task by task.
func (a *App) checkRedis(ctx context.Context) error {
	if a.clusterOpts != nil {
		// Asks the seeds in turn; then the client's own view of the cluster.
		if err := redisconn.CheckURL(ctx, a.cfg.Redis.URL, true); err != nil {
			return err
		}
		return a.rdb.Ping(ctx).Err()
	}
	rdb := a.rdb.(*redis.Client)
	// A dial of our own first: the pool logs every dial it retries.
	c, err := rdb.Options().Dialer(ctx, a.redisOpts.Network, a.redisOpts.Addr)
	if err != nil {
		return err
	}
	_ = c.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return err
	}
	node, err := redisconn.Inspect(ctx, rdb)
	if err != nil {
		return err
	}
	return node.Check(false)
}

// connect waits for Redis (the ledger's scripts loaded) and the broker (a
// driver that answers), trying both at once, then loads the routing table
// and declares the lanes. It retries until it works or ctx ends, and
// returns only ctx's error.
func (a *App) connect(ctx context.Context) error {
	redisURL := redactURL(a.cfg.Redis.URL)
	brokerService, brokerURL := "redis", redisURL
	if a.cfg.Broker.Driver != broker.DriverRedisStream {
		brokerService, brokerURL = "rabbitmq", redactURLs(a.cfg.Broker.URL)
	}
	var wg sync.WaitGroup
	redisUp := make(chan struct{})
	wg.Go(func() {
		defer close(redisUp)
		_ = a.retry(ctx, statusRedis, "redis", redisURL, func() error {
			if err := a.checkRedis(ctx); err != nil {
				return err
			}
			return a.ledger.LoadScripts(ctx)
		})
	})
	var driver broker.Driver
	wg.Go(func() {
		if a.cfg.Broker.Driver == broker.DriverRedisStream {
			a.status.set(statusBroker, "waiting for Redis")
			<-redisUp // the same Redis: one retry loop (and log line) is enough
			if ctx.Err() != nil {
				return
			}
		}
		_ = a.retry(ctx, statusBroker, brokerService, brokerURL, func() error {
			d, err := broker.New(broker.Config{
				Driver:          a.cfg.Broker.Driver,
				AMQPURL:         a.cfg.Broker.URL,
				Redis:           a.redisOpts,
				RedisCluster:    a.clusterOpts,
				PublishChannels: a.cfg.Broker.PublishChannels,
				Prefetch:        a.cfg.Broker.Prefetch,
				QueueType:       a.cfg.Lanes.QueueType,
				ConsumerGroup:   a.cfg.Ledger.KeyPrefix + "-dispatchers",
				Prefix:          a.cfg.Broker.Prefix,
				Logger:          a.logger,
			})
			if err != nil {
				return err
			}
			if err := d.Ping(ctx); err != nil {
				_ = d.Close()
				return err
			}
			driver = d
			return nil
		})
	})
	wg.Wait()
	if driver != nil {
		a.driver = driver // closed by Shutdown
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Each step's retry lines name the service it needs.
	if err := a.retry(ctx, statusLanes, "redis", redisURL, func() error {
		snap, err := a.store.Load(ctx)
		if err != nil {
			return fmt.Errorf("loading the routing table: %w", err)
		}
		a.table.Update(snap)
		return nil
	}); err != nil {
		return err
	}
	a.status.set(statusLanes, "declaring")
	return a.retry(ctx, statusLanes, brokerService, brokerURL, func() error {
		// Every lane exists before anything is routed to it.
		if err := a.driver.DeclareLanes(ctx, a.table.Lanes()...); err != nil {
			return fmt.Errorf("declaring lanes: %w", err)
		}
		return nil
	})
}

// retry calls f until it returns nil (check becomes "ok") or ctx ends (ctx's
// error), waiting retryFirst doubling to retryMax between calls. Each
// failure is logged once, naming the service, its URL and the cause, and
// set as check's state.
func (a *App) retry(ctx context.Context, check, service, url string, f func() error) error {
	wait := retryFirst
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			a.status.set(check, "ok")
			if attempt > 1 {
				a.logger.Info("connected", "service", service, "url", url, "check", check, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		cause := connectCause(err)
		if service == "rabbitmq" && strings.HasPrefix(cause, "access refused to the vhost") {
			cause = strings.Replace(cause, "the vhost", fmt.Sprintf("vhost %q", amqpVhost(a.cfg.Broker.URL)), 1)
		}
		a.status.set(check, cause+" (retrying)")
		a.logger.Warn("not ready: waiting for "+service, "service", service, "url", url, "check", check,
			"cause", cause, "error", err.Error(), "attempt", attempt, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, retryMax)
	}
}

// connectCause says in a few words why a connection attempt failed.
func connectCause(err error) string {
	var ae *amqp.Error
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, amqp.ErrVhost):
		return "access refused to the vhost (it does not exist, or the user has no permissions on it)"
	case errors.Is(err, amqp.ErrCredentials):
		return "authentication failed: user or password refused"
	case errors.As(err, &ae) && ae.Code == amqp.NotAllowed && strings.Contains(ae.Reason, "vhost"):
		return "access refused to vhost: " + ae.Reason
	case errors.As(err, &ae) && ae.Code == amqp.AccessRefused:
		return "authentication failed: " + ae.Reason
	case errors.As(err, &ae):
		return ae.Reason
	case errors.As(err, &dnsErr):
		return "host not found: " + dnsErr.Name
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT), isTimeout(err):
		return "timed out"
	}
	msg := err.Error()
	for _, auth := range []string{"WRONGPASS", "NOAUTH", "NOPERM"} {
		if strings.Contains(msg, auth) {
			return "authentication failed: " + msg
		}
	}
	return msg
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// amqpVhost is the vhost an AMQP URL names ("/" when none); of a list, the
// first URL's (validation checks they all name the same).
func amqpVhost(raw string) string {
	u, err := amqp.ParseURI(config.SplitURLs(raw)[0])
	if err != nil {
		return "?"
	}
	return u.Vhost
}

// urlError is err without the URL a parse error quotes (password and all).
func urlError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redactURL is raw with its password replaced by "xxxxx", for logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}

// redactURLs is a broker.url list (comma-separated) with every password
// replaced by "xxxxx", for logs.
func redactURLs(raw string) string {
	urls := config.SplitURLs(raw)
	for i, u := range urls {
		urls[i] = redactURL(u)
	}
	return strings.Join(urls, ",")
}
