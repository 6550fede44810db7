package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/executor"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/telemetry"
)

// Sink delivery defaults that have no configuration key (the others are
// pkg/config's).
const (
	// SinkBackoffDefault is the default Config.SinkBackoff.
	SinkBackoffDefault = time.Second
	// SinkBreakerFailuresDefault is the default Config.SinkBreakerFailures.
	SinkBreakerFailuresDefault = 5
	// SinkBreakerCooldownDefault is the default Config.SinkBreakerCooldown.
	SinkBreakerCooldownDefault = 5 * time.Second
)

const (
	// maxSinkWait caps one wait between sink attempts (Retry-After
	// included) and the breaker's cooldown.
	maxSinkWait = 5 * time.Minute
	// leaseMargin is added to SinkTimeout for the time a taken delivery
	// stays hidden from other notifiers: a notifier that dies mid-attempt
	// leaves it due again after this.
	leaseMargin = 5 * time.Second
	// sinkPollMax bounds the wait between looks at a sink's queue
	// (another notifier may have scheduled deliveries due earlier).
	sinkPollMax = time.Second
	// sinkDrainGrace is how long Close lets deliveries in flight finish
	// before cancelling them (they are then due again at once).
	sinkDrainGrace = 5 * time.Second
	// redisTimeout bounds one sink-queue command.
	redisTimeout = 5 * time.Second
)

// A sink's durable queue lives in three keys of one hash slot under the
// outbox's name (ledger.OutboxBase, so under the ledger's key prefix);
// an entry id has its partition in front ("p<k>:") when the outbox has
// several streams:
//
//	<outbox>:sink:{<subscription>}:due    sorted set: outbox entry id -> due ms
//	<outbox>:sink:{<subscription>}:body   hash: entry id -> the outbox entry's fields (JSON)
//	<outbox>:sink:{<subscription>}:tries  hash: entry id -> attempts made
//
// A delivery being attempted is in the set too, due at the end of its
// lease, so a notifier that dies mid-attempt loses nothing.

// enqueueScript schedules one delivery unless it is scheduled already (an
// outbox entry handled again). It refuses (-1) when the sink's queue holds
// ARGV[4] deliveries. ARGV: entry id, due ms, body, max, "1" when the
// caller attempts it now (the attempt is counted).
var enqueueScript = redis.NewScript(`
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return -1 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[5] == '1' then redis.call('HSET', KEYS[3], ARGV[1], 1) end
return 1
`)

// takeScript leases up to ARGV[3] due deliveries until ARGV[2] and counts
// an attempt of each. Reply: id, attempts, body per delivery, then the
// earliest due ms left (an empty string when the queue is empty).
var takeScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  out[#out+1] = id
  out[#out+1] = tostring(redis.call('HINCRBY', KEYS[3], id, 1))
  out[#out+1] = redis.call('HGET', KEYS[2], id) or ''
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
out[#out+1] = nxt[2] or ''
return out
`)

// sinkQueue delivers one subscription's results: at most SinkConcurrency
// attempts at once in this process, each within SinkTimeout, behind a
// circuit breaker; failed attempts wait in the durable queue, holding
// nothing.
type sinkQueue struct {
	n                *Notifier
	sub              Subscription
	due, body, tries string
	tokens           chan struct{}
	br               breaker
	wake             chan struct{}
}

func newSinkQueue(n *Notifier, s Subscription) *sinkQueue {
	base := n.base + ":sink:{" + s.Name + "}:"
	return &sinkQueue{
		n: n, sub: s, due: base + "due", body: base + "body", tries: base + "tries",
		tokens: make(chan struct{}, n.cfg.SinkConcurrency),
		br:     breaker{threshold: n.cfg.SinkBreakerFailures, base: n.cfg.SinkBreakerCooldown},
		wake:   make(chan struct{}, 1),
	}
}

func (q *sinkQueue) keys() []string { return []string{q.due, q.body, q.tries} }

func (q *sinkQueue) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *sinkQueue) tryToken() bool {
	select {
	case q.tokens <- struct{}{}:
		return true
	default:
		return false
	}
}

func (q *sinkQueue) releaseToken() {
	<-q.tokens
	q.kick()
}

// job is one delivery attempt; it holds a token.
type job struct {
	id       string
	attempts int
	ev       *event.Event
	probe    bool
}

// run takes due deliveries until ctx ends.
func (q *sinkQueue) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		case <-t.C:
		}
		wait := q.poll(ctx)
		t.Reset(wait)
	}
}

// poll starts the deliveries that are due and may start, and returns when
// to look again.
func (q *sinkQueue) poll(ctx context.Context) time.Duration {
	now := time.Now()
	allowed, probe, wait := q.br.admit(now)
	if allowed == 0 {
		return min(wait, sinkPollMax)
	}
	k := 0
	for k < allowed && q.tryToken() {
		k++
	}
	if k == 0 {
		if probe {
			q.br.unprobe()
		}
		return sinkPollMax // a freed token wakes the loop
	}
	jobs, next, err := q.take(ctx, now, k)
	for range k - len(jobs) {
		<-q.tokens
	}
	if probe && len(jobs) == 0 {
		q.br.unprobe()
	}
	if err != nil {
		if ctx.Err() == nil {
			q.n.cfg.Logger.Warn("reading sink queue", "subscription", q.sub.Name, "error", err)
		}
		return sinkPollMax
	}
	for _, j := range jobs {
		j.probe = probe
		q.n.deliveries.Go(func() { q.attempt(j) })
	}
	if len(jobs) == k {
		return 0 // maybe more are due
	}
	if next.IsZero() {
		return sinkPollMax
	}
	return min(max(time.Until(next), 0), sinkPollMax)
}

// take leases up to k due deliveries.
func (q *sinkQueue) take(ctx context.Context, now time.Time, k int) ([]job, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	lease := now.Add(q.n.cfg.SinkTimeout + leaseMargin)
	res, err := takeScript.Run(ctx, q.n.qdb, q.keys(), now.UnixMilli(), lease.UnixMilli(), k).StringSlice()
	if err != nil || len(res) == 0 {
		return nil, time.Time{}, err
	}
	var next time.Time
	if ms, err := strconv.ParseFloat(res[len(res)-1], 64); err == nil {
		next = time.UnixMilli(int64(ms))
	}
	var jobs []job
	for i := 0; i+2 < len(res); i += 3 {
		id, body := res[i], res[i+2]
		attempts, _ := strconv.Atoi(res[i+1])
		ev, err := eventFromBody(body)
		if err != nil {
			q.n.cfg.Logger.Error("unreadable sink delivery dropped", "subscription", q.sub.Name, "entry", id, "error", err)
			q.forget(id)
			continue
		}
		jobs = append(jobs, job{id: id, attempts: attempts, ev: ev})
	}
	return jobs, next, nil
}

func eventFromBody(body string) (*event.Event, error) {
	var fields map[string]string
	if err := json.Unmarshal([]byte(body), &fields); err != nil {
		return nil, fmt.Errorf("decoding stored result: %w", err)
	}
	t := ledger.RecordFromFields(fields)
	if t.ID == "" || !t.State.Terminal() {
		return nil, fmt.Errorf("stored result has no terminal task")
	}
	ev, err := ResultEvent(&t)
	if err != nil {
		return nil, err
	}
	setTraceParent(ev, fields[ledger.FieldTraceParent])
	return ev, nil
}

// attempt makes one delivery attempt of j and settles it in the queue:
// removed when delivered, rejected or given up, due again after a backoff
// otherwise.
func (q *sinkQueue) attempt(j job) {
	defer q.releaseToken()
	log := q.n.cfg.Logger
	ctx, cancel := context.WithTimeout(q.n.dctx, q.n.cfg.SinkTimeout)
	status, retryAfter, err := q.n.post(ctx, q.sub.Name, q.sub.Sink, j.ev)
	cancel()
	switch {
	case err != nil && q.n.dctx.Err() != nil:
		// Shutting down: not the sink's fault; due again at once, for
		// whichever notifier runs next.
		q.br.abandon(j.probe)
		q.reschedule(j.id, time.Now(), true)
		return
	case err == nil && status/100 == 2:
		q.n.cfg.Metrics.SinkDeliveries.WithLabelValues(q.sub.Name, "ok").Inc()
		q.n.logDelivery(j.ev, fmt.Sprintf("result event %s delivered to sink %s (HTTP %d, attempt %d)", j.ev.ID(), q.sub.Name, status, j.attempts))
		if q.br.success() {
			log.Info("sink answers again, circuit closed", "subscription", q.sub.Name)
		}
		q.forget(j.id)
		return
	case err == nil && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests && status < 500:
		q.n.cfg.Metrics.SinkDeliveries.WithLabelValues(q.sub.Name, "rejected").Inc()
		log.Warn("sink rejected result event", "subscription", q.sub.Name, "event", j.ev.ID(), "status", status)
		q.n.logDelivery(j.ev, fmt.Sprintf("result event %s rejected by sink %s (HTTP %d); not sent again", j.ev.ID(), q.sub.Name, status))
		q.br.success()
		q.forget(j.id)
		return
	}
	if opened, cooldown := q.br.failure(time.Now(), j.probe); opened {
		log.Warn("sink failing, circuit open", "subscription", q.sub.Name, "probe_in", cooldown, "status", status, "error", err)
	}
	if j.attempts >= q.n.cfg.SinkAttempts {
		q.n.cfg.Metrics.SinkDeliveries.WithLabelValues(q.sub.Name, "dropped").Inc()
		log.Error("giving up on sink delivery", "subscription", q.sub.Name, "event", j.ev.ID(), "attempts", j.attempts, "status", status, "error", err)
		q.n.logDelivery(j.ev, fmt.Sprintf("gave up delivering result event %s to sink %s after %d attempts", j.ev.ID(), q.sub.Name, j.attempts))
		q.forget(j.id)
		return
	}
	q.n.cfg.Metrics.SinkDeliveries.WithLabelValues(q.sub.Name, "retry").Inc()
	d := min(q.n.cfg.SinkBackoff, maxSinkWait)
	for range j.attempts - 1 {
		if d = min(2*d, maxSinkWait); d == maxSinkWait {
			break // doubling no further (nor overflowing, for a large SinkBackoff)
		}
	}
	if retryAfter > 0 {
		d = min(retryAfter, maxSinkWait)
	}
	log.Debug("sink delivery failed, will try again", "subscription", q.sub.Name, "event", j.ev.ID(), "attempts", j.attempts, "retry_in", d, "status", status, "error", err)
	q.reschedule(j.id, time.Now().Add(d), false)
}

// forget removes a settled delivery. If that fails the lease runs out and
// it is attempted again (at least once).
func (q *sinkQueue) forget(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	_, err := q.n.qdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, q.due, id)
		p.HDel(ctx, q.body, id)
		p.HDel(ctx, q.tries, id)
		return nil
	})
	if err != nil {
		q.n.cfg.Logger.Warn("removing settled sink delivery; it may be sent again", "subscription", q.sub.Name, "entry", id, "error", err)
	}
}

// reschedule makes a leased delivery due at at (refund: the attempt did
// not count). If that fails it is due when its lease ends.
func (q *sinkQueue) reschedule(id string, at time.Time, refund bool) {
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	_, err := q.n.qdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAddXX(ctx, q.due, redis.Z{Score: float64(at.UnixMilli()), Member: id})
		if refund {
			p.HIncrBy(ctx, q.tries, id, -1)
		}
		return nil
	})
	if err != nil {
		q.n.cfg.Logger.Warn("rescheduling sink delivery; due when its lease ends", "subscription", q.sub.Name, "entry", id, "error", err)
	}
}

// breaker is a sink's circuit breaker in this process: closed, it lets
// every delivery through; after threshold consecutive failures it opens
// for a cooldown (doubling while probes fail, up to maxSinkWait), then lets
// one probe through (half-open), which closes it or opens it again.
type breaker struct {
	threshold int
	base      time.Duration

	mu       sync.Mutex
	failures int
	open     bool
	until    time.Time
	cooldown time.Duration
	probing  bool
}

// closed reports whether deliveries may start without asking admit.
func (b *breaker) closed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.open
}

// admit says how many deliveries may start now (0: wait that long), and
// whether the one allowed is a probe (report it by success, failure,
// abandon or unprobe).
func (b *breaker) admit(now time.Time) (n int, probe bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.open:
		return 1 << 30, false, 0
	case b.probing:
		return 0, false, sinkPollMax
	case now.Before(b.until):
		return 0, false, b.until.Sub(now)
	}
	b.probing = true
	return 1, true, 0
}

// unprobe gives back a probe admit granted that was not used.
func (b *breaker) unprobe() {
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

func (b *breaker) abandon(probe bool) {
	if probe {
		b.unprobe()
	}
}

// success records an answer; it reports whether it closed the circuit.
func (b *breaker) success() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasOpen := b.open
	b.failures, b.open, b.probing, b.cooldown = 0, false, false, 0
	return wasOpen
}

// failure records a failed attempt (probe: the half-open probe); it
// reports whether it opened the circuit, and for how long.
func (b *breaker) failure(now time.Time, probe bool) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	switch {
	case b.open && probe:
		b.cooldown = min(b.cooldown*2, maxSinkWait)
	case !b.open && b.failures >= b.threshold:
		b.cooldown = b.base
	default:
		return false, 0
	}
	b.open, b.probing, b.until = true, false, now.Add(b.cooldown)
	return true, b.cooldown
}

func (n *Notifier) post(ctx context.Context, subscription, sink string, e *event.Event) (code int, retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sink, nil)
	if err != nil {
		return 0, 0, redactSink(err, sink)
	}
	if telemetry.Enabled() && e.Extensions()[contracts.ExtTraceParent] != nil {
		var span trace.Span
		ctx, span = startSinkSpan(ctx, req, e, subscription)
		req = req.WithContext(ctx)
		e = withSpanContext(ctx, e)
		defer func() { telemetry.EndClient(span, code, err) }()
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(e), req); err != nil {
		return 0, 0, fmt.Errorf("encoding event: %w", err)
	}
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		return 0, 0, redactSink(err, sink)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, executor.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), nil
}

// redactSink keeps a sink URL's credentials out of err (logged): the
// *url.Error the client returns names the URL with its query (where
// webhook tokens go; the client masks only the password).
func redactSink(err error, sink string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = safeSink(sink)
	}
	return err
}

// validSink reports whether sink is an absolute http(s) URL.
func validSink(sink string) bool {
	u, err := url.Parse(sink)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// safeSink is sink without user info, query or fragment.
func safeSink(sink string) string {
	u, err := url.Parse(sink)
	if err != nil {
		return "(unparsable sink URL)"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
