// Package notifier turns terminal task transitions into result CloudEvents.
//
// The ledger appends every terminal transition to its results outbox (a
// Redis stream) in the same script that records it, so a result is never
// lost between "task finished" and "result sent". The notifier consumes the
// outbox with a consumer group, publishes each result to the results
// exchange (routing key <tenant>.<function>.<outcome>) and delivers it over
// HTTP, binary mode, to every subscription whose filter matches, with
// bounded retries. Delivery is at least once: a notifier that dies after
// sending and before acknowledging sends again; receivers dedup on the
// result event's id (<task id>.<outcome>).
package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/cloudevent"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
)

// ownEntriesAfter is how long an outbox entry may stay pending on its own
// live notifier before that notifier takes it again.
const ownEntriesAfter = 30 * time.Second

// ConsumerGroup is the outbox consumer group of notifiers.
const ConsumerGroup = "tasklane-notifiers"

// Subscription is one configured result sink.
type Subscription struct {
	Name string
	Sink string
	// Types, Tenants and Functions filter results; empty matches all.
	Types, Tenants, Functions []string
}

// Matches reports whether the subscription wants this result.
func (s Subscription) Matches(t *contracts.Task) bool {
	return matchAny(s.Types, t.State.ResultType()) && matchAny(s.Tenants, t.Tenant) && matchAny(s.Functions, t.Function)
}

func matchAny(list []string, v string) bool { return len(list) == 0 || slices.Contains(list, v) }

// Config configures a Notifier.
type Config struct {
	Ledger *ledger.Ledger
	// Redis says where the ledger is. The notifier opens its own client for
	// consuming the outbox (watermill-redisstream closes it on Close).
	Redis           *redis.Options
	ResultPublisher message.Publisher
	Subscriptions   []Subscription
	Metrics         *metrics.Metrics
	Logger          *slog.Logger
	// Client delivers to sinks. Default: a client that does not follow
	// redirects, 10s timeout.
	Client *http.Client
	// Consumers is the number of outbox consumers. Default 8.
	Consumers int
	// SinkAttempts bounds deliveries of one result to one sink. Default 6.
	SinkAttempts int
	// SinkBackoff is the first wait between sink attempts, doubled each
	// time. Default 200ms.
	SinkBackoff time.Duration
}

// Notifier consumes the results outbox.
type Notifier struct {
	cfg    Config
	router *message.Router
	sub    *redisstream.Subscriber
	live   *broker.Liveness
}

// New builds the notifier's router.
func New(cfg Config) (*Notifier, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "notifier")
	if cfg.Consumers <= 0 {
		cfg.Consumers = 8
	}
	if cfg.SinkAttempts <= 0 {
		cfg.SinkAttempts = 6
	}
	if cfg.SinkBackoff <= 0 {
		cfg.SinkBackoff = 200 * time.Millisecond
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{
			Timeout:       10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	wlog := broker.WatermillLogger(cfg.Logger)
	opt := *cfg.Redis
	opt.PoolSize = max(opt.PoolSize, 4*cfg.Consumers+16)
	rdb := redis.NewClient(&opt)
	// A dead notifier's unacknowledged results are taken over within
	// seconds (heartbeats), a live one's never.
	// An own entry pending for 30s was most likely lost in a reply (Redis
	// crashed or the connection was cut as it answered) and is taken again.
	// Handling one normally takes milliseconds; only sinks that hang for
	// their whole retry budget take longer, and then the result is sent
	// twice: results are at least once, deduplicated by event id.
	live := broker.NewLiveness(rdb, cfg.Ledger.OutboxStream()+":"+ConsumerGroup, broker.ConsumerName(), ownEntriesAfter)
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:                        rdb,
		Unmarshaller:                  outboxUnmarshaller{},
		Consumer:                      live.Consumer(),
		ConsumerGroup:                 ConsumerGroup,
		NackResendSleep:               time.Second,
		MaxIdleTime:                   time.Second,
		ClaimInterval:                 broker.ClaimEvery,
		ShouldClaimPendingMessage:     live.ShouldClaim,
		DisableIndefiniteInitialBlock: true,
		ShouldStopOnReadErrors:        func(err error) bool { return errors.Is(err, context.Canceled) },
	}, wlog)
	if err != nil {
		live.Close()
		return nil, fmt.Errorf("creating outbox subscriber: %w", err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, wlog)
	if err != nil {
		return nil, fmt.Errorf("creating router: %w", err)
	}
	n := &Notifier{cfg: cfg, router: router, sub: sub, live: live}
	for i := range cfg.Consumers {
		router.AddConsumerHandler(fmt.Sprintf("outbox#%d", i), cfg.Ledger.OutboxStream(), sub, n.handle)
	}
	return n, nil
}

// Run consumes until ctx ends.
func (n *Notifier) Run(ctx context.Context) error { return n.router.Run(ctx) }

// Running is closed once the consumers are subscribed.
func (n *Notifier) Running() chan struct{} { return n.router.Running() }

// Close stops consuming.
func (n *Notifier) Close() error {
	err := n.router.Close()
	n.live.Close() // before the subscriber closes the client it uses
	return errors.Join(err, n.sub.Close())
}

// ResultEvent builds the result CloudEvent of a terminal task record.
func ResultEvent(t *contracts.Task) (*event.Event, error) {
	e := event.New()
	e.SetID(ResultID(t))
	e.SetType(t.State.ResultType())
	e.SetSource(contracts.ResultSourcePrefix + t.Function)
	e.SetSubject(t.ID)
	if t.FinishedAt != nil {
		e.SetTime(*t.FinishedAt)
	}
	e.SetExtension(contracts.ExtTenantID, t.Tenant)
	if err := e.SetData(event.ApplicationJSON, t); err != nil {
		return nil, fmt.Errorf("encoding result of task %s: %w", t.ID, err)
	}
	return &e, nil
}

// ResultID is the id of a task's result event: "<task id>.<outcome>", and
// ".r<n>" after the n-th redrive, so that receivers deduplicating on it
// never drop the outcome of a redriven task.
func ResultID(t *contracts.Task) string {
	id := t.ID + "." + string(t.State)
	if t.Redrives > 0 {
		id += fmt.Sprintf(".r%d", t.Redrives)
	}
	return id
}

// RoutingKey is the results-exchange routing key of a task's result.
func RoutingKey(t *contracts.Task) string {
	return t.Tenant + "." + t.Function + "." + string(t.State)
}

func (n *Notifier) handle(msg *message.Message) error {
	if why := msg.Metadata.Get("bad"); why != "" {
		n.cfg.Logger.Error("unreadable outbox entry dropped", "reason", why)
		return nil
	}
	var t contracts.Task
	if err := json.Unmarshal(msg.Payload, &t); err != nil {
		n.cfg.Logger.Error("unreadable outbox entry dropped", "error", err)
		return nil
	}
	e, err := ResultEvent(&t)
	if err != nil {
		n.cfg.Logger.Error("building result event", "task", t.ID, "error", err)
		return nil
	}
	out, err := cloudevent.ToMessage(e.ID(), e)
	if err != nil {
		n.cfg.Logger.Error("building result message", "task", t.ID, "error", err)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(msg.Context()), 10*time.Second)
	defer cancel()
	out.SetContext(ctx)
	if err := n.cfg.ResultPublisher.Publish(RoutingKey(&t), out); err != nil {
		n.cfg.Metrics.ResultsPublished.WithLabelValues("error").Inc()
		return fmt.Errorf("publishing result of task %s: %w", t.ID, err)
	}
	n.cfg.Metrics.ResultsPublished.WithLabelValues("ok").Inc()
	var wg sync.WaitGroup
	for _, s := range n.cfg.Subscriptions {
		if !s.Matches(&t) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.deliver(context.WithoutCancel(msg.Context()), s, e)
		}()
	}
	wg.Wait()
	return nil
}

// outboxUnmarshaller reads outbox entries (task record fields) into
// messages whose payload is the task record JSON. It never fails: a broken
// entry becomes a message flagged "bad", acknowledged and logged.
type outboxUnmarshaller struct{}

func (outboxUnmarshaller) Unmarshal(values map[string]any) (*message.Message, error) {
	t := ledger.RecordFromValues(values)
	if t.ID == "" || !t.State.Terminal() {
		m := message.NewMessage(watermill.NewUUID(), nil)
		m.Metadata.Set("bad", fmt.Sprintf("outbox entry without a terminal task: %v", values))
		return m, nil
	}
	b, err := json.Marshal(t)
	if err != nil {
		m := message.NewMessage(watermill.NewUUID(), nil)
		m.Metadata.Set("bad", err.Error())
		return m, nil
	}
	return message.NewMessage(ResultID(&t), b), nil
}
