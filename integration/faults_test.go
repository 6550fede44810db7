//go:build integration

package integration

// Shared pieces of the infrastructure-fault scenarios (broker restart, Redis
// restart, connection faults): Tasklane runs as one child process with the
// gateway, dispatcher, scheduler and notifier roles (the test binary runs
// under -race; the app is a separate, ordinary process, as in production),
// a paced submitter drives events through its HTTP API, and the checker
// counts what came out. The test reads the ledger with its own Redis client,
// never through the fault.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/services/notifier"
)

// faultTenant is the tenant of the open keyring (no tenants configured).
const faultTenant = config.DefaultTenant

// appRoles are the roles the fault scenarios run in their child process.
var appRoles = []string{"gateway", "dispatcher", "scheduler", "notifier"}

// faultConfig is one function, fed by com.example.work events and served by
// the checker's function, and one subscription to the checker's sink.
func faultConfig(c *checker) string {
	return fmt.Sprintf(`
functions:
  - name: work
    events: [com.example.work]
    endpoint: %q
subscriptions:
  - name: results
    sink: %q
`, c.fn.URL, c.sink.URL)
}

// url is the base URL of a spawned process's HTTP server, read from its
// "tasklane started" log line (the config asks for port 0).
func (p *proc) url() string {
	p.t.Helper()
	f, err := os.Open(p.logPath)
	require.NoError(p.t, err)
	defer f.Close()
	addr := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "tasklane started" {
			addr = line.Addr
		}
	}
	require.NotEmpty(p.t, addr, "no \"tasklane started\" line with an addr in %s", p.logPath)
	host, port, err := net.SplitHostPort(addr)
	require.NoError(p.t, err)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// logSummary counts the process's warnings and errors by message (and the
// first words of their error), most frequent first, for the test log.
func (p *proc) logSummary(limit int) []string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return []string{err.Error()}
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		level, _ := line["level"].(string)
		if level != "WARN" && level != "ERROR" {
			continue
		}
		msg, _ := line["msg"].(string)
		key := level + " " + ulidRE.ReplaceAllString(msg, "<id>")
		if e, ok := line["error"].(string); ok {
			e = ulidRE.ReplaceAllString(e, "<id>")
			if len(e) > 110 {
				e = e[:110] + "..."
			}
			key += ": " + e
		}
		counts[key]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return counts[keys[i]] > counts[keys[j]] })
	out := make([]string, 0, limit)
	for i, k := range keys {
		if i == limit {
			out = append(out, fmt.Sprintf("... %d more kinds", len(keys)-limit))
			break
		}
		out = append(out, fmt.Sprintf("%6d  %s", counts[k], k))
	}
	return out
}

// ulidRE matches task ids (and other ULIDs) in log lines.
var ulidRE = regexp.MustCompile(`\b[0-9A-HJKMNP-TV-Z]{26}\b`)

// metricLines returns the app's counters whose names contain one of names
// (histograms left out).
func metricLines(url string, names ...string) []string {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return []string{err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "#") || strings.Contains(l, "_bucket") || strings.Contains(l, "_sum") || strings.Contains(l, "_count") {
			continue
		}
		for _, n := range names {
			if strings.Contains(l, n) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

// faultMetrics are the counters that explain a fault run.
var faultMetrics = []string{"tasks_accepted_total", "tasks_duplicate_total", "events_rejected_total", "deliveries_total",
	"requeued_total", "ledger_errors_total", "lease_lost_total", "quarantined_total", "results_published_total",
	"tasks_finished_total", "attempts_total", "sink_deliveries_total"}

// load submits batches of events through the gateway at a fixed pace until
// stopped. A batch answered with anything but 202 (503 during an outage, a
// connection error, a timeout) is sent again, same event ids, until it is
// accepted: the dedup window makes a retry of events the ledger did record
// return those events' tasks, so every task the app may run is eventually
// known to the checker, and only 202 answers count as accepted.
type load struct {
	t        *testing.T
	c        *checker
	url      string
	name     string
	batch    int
	interval time.Duration
	// verify, if set, is read right after each 202: every task the answer
	// names must already be in the ledger.
	verify *ledger.Ledger
	// retryFor bounds how long one batch is retried.
	retryFor time.Duration

	client  *http.Client
	stopCh  chan struct{}
	abortCh chan struct{}
	done    chan struct{}
	started time.Time

	mu sync.Mutex
	// events is the number of events in batches handed to the workers.
	events int
	// answers counts the answers to every try, by HTTP status; transport
	// counts tries without an answer (connection refused, timeout).
	answers   map[int]int
	transport int
	// retried counts tries after a refused one.
	retried int
	// recordedBeforeRefusal counts tasks a retry found already recorded
	// (duplicate) after an earlier try of the same batch was refused: the
	// refused try wrote them. firstTryDuplicates counts tasks a batch's
	// first try already reported as duplicates.
	recordedBeforeRefusal, firstTryDuplicates int
	// notInLedger lists tasks answered 202 that the ledger did not have
	// right after the answer; unverified those it could not be asked about.
	notInLedger, unverified []string
	lastErr                 string
}

// startLoad starts submitting batch events every interval to the app at url.
func startLoad(t *testing.T, c *checker, url, name string, batch int, interval time.Duration, verify *ledger.Ledger) *load {
	l := &load{
		t: t, c: c, url: url, name: name, batch: batch, interval: interval, verify: verify,
		retryFor: 100 * time.Second,
		// Longer than any server-side path (publish timeout 10s, Redis
		// timeouts and retries), so a timeout here is a real hang.
		client:  &http.Client{Timeout: 60 * time.Second},
		stopCh:  make(chan struct{}),
		abortCh: make(chan struct{}),
		done:    make(chan struct{}),
		answers: map[int]int{},
		started: time.Now(),
	}
	go l.run()
	t.Cleanup(func() {
		// A test that ended early does not wait for refused batches.
		close(l.abortCh)
		l.stop()
	})
	return l
}

// stop ends submitting new batches and waits until every batch handed out
// is accepted (or given up on).
func (l *load) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	<-l.done
}

func (l *load) run() {
	defer close(l.done)
	const workers = 4
	batches := make(chan int, 100000)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for start := range batches {
				l.submit(start)
			}
		}()
	}
	tick := time.NewTicker(l.interval)
	defer tick.Stop()
	for start := 0; ; start += l.batch {
		select {
		case <-l.stopCh:
			close(batches)
			wg.Wait()
			return
		case <-tick.C:
		}
		l.mu.Lock()
		l.events += l.batch
		l.mu.Unlock()
		batches <- start
	}
}

func (l *load) body(start int) []byte {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for n := start; n < start+l.batch; n++ {
		if n > start {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `{"specversion":"1.0","id":"%s-%d","source":"/%s","type":"com.example.work","data":{"n":%d}}`, l.name, n, l.name, n)
	}
	buf.WriteByte(']')
	return buf.Bytes()
}

func (l *load) submit(start int) {
	body := l.body(start)
	deadline := time.Now().Add(l.retryFor)
	refused := false
	for {
		code, sr, err := l.post(body)
		l.mu.Lock()
		if err != nil {
			l.transport++
			l.lastErr = err.Error()
		} else {
			l.answers[code]++
		}
		if refused {
			l.retried++
		}
		if err == nil && code == http.StatusAccepted {
			ids := make([]string, 0, len(sr.Tasks))
			for _, task := range sr.Tasks {
				ids = append(ids, task.ID)
				if task.Duplicate {
					if refused {
						l.recordedBeforeRefusal++
					} else {
						l.firstTryDuplicates++
					}
				}
			}
			l.mu.Unlock()
			if len(ids) != l.batch {
				l.t.Errorf("batch %s-%d: 202 named %d tasks, want %d", l.name, start, len(ids), l.batch)
			}
			l.c.accept(ids...)
			l.check(ids)
			return
		}
		if err == nil {
			l.lastErr = fmt.Sprintf("answered %d", code)
		}
		l.mu.Unlock()
		refused = true
		select {
		case <-l.abortCh:
			return
		default:
		}
		if time.Now().After(deadline) {
			l.t.Errorf("batch %s-%d not accepted within %s; last: %s", l.name, start, l.retryFor, l.lastError())
			return
		}
		time.Sleep(250 * time.Millisecond) // paces the retries of a refused batch
	}
}

func (l *load) lastError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

func (l *load) post(body []byte) (int, contracts.SubmitResponse, error) {
	var sr contracts.SubmitResponse
	resp, err := l.client.Post(l.url+"/v1/events", "application/cloudevents-batch+json", bytes.NewReader(body))
	if err != nil {
		return 0, sr, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, sr, err
	}
	if resp.StatusCode == http.StatusAccepted {
		if err := json.Unmarshal(b, &sr); err != nil {
			return 0, sr, fmt.Errorf("reading the 202 answer: %w", err)
		}
	}
	return resp.StatusCode, sr, nil
}

// check reads each task right after its 202. A task the ledger answers for
// without it is a 202 for a task that was not recorded; one the ledger could
// not be asked about is checked again at the end.
func (l *load) check(ids []string) {
	if l.verify == nil {
		return
	}
	var missing, unverified []string
	for i, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := l.verify.Get(ctx, faultTenant, id)
		cancel()
		if errors.Is(err, ledger.ErrNotFound) {
			missing = append(missing, id)
		} else if err != nil {
			// The ledger's Redis is down: do not wait on it task by task.
			unverified = append(unverified, ids[i:]...)
			break
		}
	}
	l.mu.Lock()
	l.notInLedger = append(l.notInLedger, missing...)
	l.unverified = append(l.unverified, unverified...)
	l.mu.Unlock()
}

func (l *load) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	codes := make([]int, 0, len(l.answers))
	for c := range l.answers {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d:%d", c, l.answers[c]))
	}
	return fmt.Sprintf("events=%d answers{%s} no_answer=%d retried_tries=%d recorded_by_refused_try=%d first_try_duplicates=%d not_in_ledger_at_202=%d unverified_at_202=%d",
		l.events, strings.Join(parts, " "), l.transport, l.retried, l.recordedBeforeRefusal, l.firstTryDuplicates, len(l.notInLedger), len(l.unverified))
}

// ledgerView is what the ledger says of the accepted tasks at the end.
type ledgerView struct {
	// Missing: accepted, but no record. NotTerminal: recorded, not ended.
	Missing, NotTerminal []string
	// States counts the records by state.
	States map[contracts.State]int
	// MaxAttempts is the highest attempt count of any task.
	MaxAttempts int
	// BacklogDone is when the last task accepted before the fault ended
	// reached its terminal state.
	BacklogDone time.Time
	// Retransitioned lists tasks with more than one outbox entry (the
	// ledger writes one per terminal transition): a second success would
	// show here even if the notifier never sent it.
	Retransitioned []string
}

// readLedger reads every accepted task with the test's own client.
func readLedger(t *testing.T, e *env, c *checker, faultEnd time.Time) ledgerView {
	t.Helper()
	l := e.ledger()
	c.mu.Lock()
	ids := make([]string, 0, len(c.accepted))
	for id := range c.accepted {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	v := ledgerView{States: map[contracts.State]int{}}
	ctx := context.Background()
	for _, id := range ids {
		task, err := l.Get(ctx, faultTenant, id)
		if errors.Is(err, ledger.ErrNotFound) {
			v.Missing = append(v.Missing, id)
			continue
		}
		require.NoError(t, err)
		v.States[task.State]++
		v.MaxAttempts = max(v.MaxAttempts, task.Attempts)
		if !task.State.Terminal() {
			v.NotTerminal = append(v.NotTerminal, id)
			continue
		}
		if task.FinishedAt != nil && task.CreatedAt.Before(faultEnd) && task.FinishedAt.After(v.BacklogDone) {
			v.BacklogDone = *task.FinishedAt
		}
	}
	// The outbox keeps every terminal transition (up to its length bound).
	per := map[string]int{}
	start := "-"
	for {
		xs, err := e.rdb.XRangeN(ctx, l.OutboxStream(faultTenant), start, "+", 1000).Result()
		require.NoError(t, err)
		for _, x := range xs {
			per[ledger.RecordFromValues(x.Values).ID]++
		}
		if len(xs) < 1000 {
			break
		}
		start = "(" + xs[len(xs)-1].ID
	}
	for id, n := range per {
		if n > 1 {
			v.Retransitioned = append(v.Retransitioned, id)
		}
	}
	return v
}

// describeTasks logs the ledger records of up to n tasks, for a failure.
func describeTasks(t *testing.T, e *env, what string, ids []string, n int) {
	t.Helper()
	for i, id := range ids {
		if i == n {
			t.Logf("%s: ... %d more", what, len(ids)-n)
			return
		}
		task, err := e.ledger().Get(context.Background(), faultTenant, id)
		if err != nil {
			t.Logf("%s: %s: %v", what, id, err)
			continue
		}
		b, _ := json.Marshal(task)
		score, serr := e.rdb.ZScore(context.Background(), e.ledger().DelayKey(faultTenant), ledger.Member(faultTenant, id)).Result()
		delay := "not in the delay set"
		if serr == nil {
			delay = fmt.Sprintf("due in the delay set at %s", time.UnixMicro(int64(score)).Format(time.RFC3339Nano))
		} else if !errors.Is(serr, redis.Nil) {
			delay = serr.Error()
		}
		t.Logf("%s: %s; %s", what, b, delay)
	}
}

// outboxPending describes the notifiers' consumer group: entries delivered
// to a consumer and not acknowledged (with the longest idle time), and
// entries not delivered yet.
func outboxPending(e *env) string {
	ctx := context.Background()
	stream := e.ledger().OutboxStream(faultTenant)
	groups, err := e.rdb.XInfoGroups(ctx, stream).Result()
	if err != nil || len(groups) == 0 {
		return fmt.Sprintf("unreadable: %v", err)
	}
	g := groups[0]
	idle := time.Duration(0)
	if g.Pending > 0 {
		xs, err := e.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: g.Name, Start: "-", End: "+", Count: 1000}).Result()
		if err == nil {
			for _, x := range xs {
				idle = max(idle, x.Idle)
			}
		}
	}
	lag := fmt.Sprint(g.Lag)
	if g.Lag < 0 {
		lag = "unknown" // Redis cannot tell the lag right after loading the AOF
	}
	return fmt.Sprintf("pending=%d (longest idle %.1fs) undelivered=%s", g.Pending, idle.Seconds(), lag)
}

// poll reports whether cond became true within the deadline, checking every
// few milliseconds (testkit.Eventually without failing the test).
func poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// withoutResult lists the accepted tasks the sink has no result for.
func (c *checker) withoutResult() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id := range c.accepted {
		if len(c.results[id]) == 0 {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// outboxPendingEntries describes up to n outbox entries delivered to a
// notifier and not acknowledged: the task, the consumer holding it, how long
// it has been idle and delivered, and that consumer's heartbeat.
func outboxPendingEntries(e *env, n int) []string {
	ctx := context.Background()
	stream := e.ledger().OutboxStream(faultTenant)
	xs, err := e.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: notifier.ConsumerGroup, Start: "-", End: "+", Count: int64(n)}).Result()
	if err != nil {
		return []string{err.Error()}
	}
	beats, _ := e.rdb.HGetAll(ctx, e.ledger().OutboxBase()+":"+notifier.ConsumerGroup+":heartbeats").Result()
	var out []string
	for _, x := range xs {
		task := "?"
		if ms, err := e.rdb.XRangeN(ctx, stream, x.ID, x.ID, 1).Result(); err == nil && len(ms) == 1 {
			rec := ledger.RecordFromValues(ms[0].Values)
			task = rec.ID + " " + string(rec.State)
		}
		beat := "no heartbeat"
		if v, ok := beats[x.Consumer]; ok {
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
				beat = fmt.Sprintf("heartbeat %.1fs ago", time.Since(time.UnixMilli(ms)).Seconds())
			}
		}
		out = append(out, fmt.Sprintf("entry %s (task %s) pending on consumer %s (%s), idle %.1fs, delivered %d time(s)",
			x.ID, task, x.Consumer, beat, x.Idle.Seconds(), x.RetryCount))
	}
	if len(out) == 0 {
		out = append(out, "no pending entries")
	}
	return out
}

// faultRun is one fault scenario's measurements.
type faultRun struct {
	t        *testing.T
	e        *env
	c        *checker
	app      *proc
	load     *load
	faultEnd time.Time
}

// finish stops the load, waits until every accepted task has its result
// and the outbox is drained, logs the numbers and asserts the counts.
func (r faultRun) finish(finishWithin time.Duration) {
	t, e, c := r.t, r.e, r.c
	t.Helper()
	url := r.app.url()
	logged := false
	defer func() {
		// On a failure before the numbers were logged, say what the app saw.
		if t.Failed() && !logged {
			t.Logf("load: %s", r.load)
			t.Logf("checker: %d of %d accepted tasks have a result", c.finished(), c.total())
			for _, l := range metricLines(url, faultMetrics...) {
				t.Logf("metric %s", l)
			}
			for _, l := range r.app.logSummary(30) {
				t.Logf("app log: %s", l)
			}
			t.Logf("app log file: %s", r.app.logPath)
		}
	}()
	r.load.stop()
	loadEnd := time.Now()
	t.Logf("load stopped %.1fs after the fault ended: %d of %d accepted tasks have a result; outbox %s",
		loadEnd.Sub(r.faultEnd).Seconds(), c.finished(), c.total(), outboxPending(e))
	// Not testkit.Eventually: when results are missing, the counts below
	// say which and why before the test fails.
	allResults := poll(finishWithin, func() bool { return c.finished() >= c.total() })
	allDone := time.Now()
	drained := allResults && poll(90*time.Second, e.outboxDrained)
	if !allResults {
		t.Errorf("not within %s: every accepted task has a result event after the fault (%d of %d)", finishWithin, c.finished(), c.total())
		describeTasks(t, e, "accepted, no result event", c.withoutResult(), 10)
		for _, l := range outboxPendingEntries(e, 20) {
			t.Logf("outbox: %s", l)
		}
	} else if !drained {
		t.Errorf("results outbox not drained: %s", outboxPending(e))
	}

	lv := readLedger(t, e, c, r.faultEnd)
	if len(lv.Missing) > 0 {
		t.Logf("load: %s", r.load)
		describeTasks(t, e, "missing", lv.Missing, 10)
		t.Fatalf("%d accepted tasks are missing from the ledger", len(lv.Missing))
	}
	v := c.check(t, e, faultTenant)
	backlog := "n/a"
	if !lv.BacklogDone.IsZero() {
		backlog = fmt.Sprintf("%.1fs", lv.BacklogDone.Sub(r.faultEnd).Seconds())
	}
	t.Logf("load: %s", r.load)
	t.Logf("verdict: %s", v)
	t.Logf("ledger: states=%v max_attempts=%d missing=%d not_terminal=%d tasks_with_2+_terminal_transitions=%d",
		lv.States, lv.MaxAttempts, len(lv.Missing), len(lv.NotTerminal), len(lv.Retransitioned))
	if allResults {
		t.Logf("recovery: the last task accepted before the fault ended was terminal %s after it ended (negative: before); every task had its result %.1fs after the fault ended (%.1fs after the last submission)",
			backlog, allDone.Sub(r.faultEnd).Seconds(), allDone.Sub(loadEnd).Seconds())
	} else {
		t.Logf("recovery: the last task accepted before the fault ended was terminal %s after it ended (negative: before); NOT every task had its result %.1fs after the fault ended",
			backlog, allDone.Sub(r.faultEnd).Seconds())
	}
	for _, l := range metricLines(url, faultMetrics...) {
		t.Logf("metric %s", l)
	}
	for _, l := range r.app.logSummary(15) {
		t.Logf("app log: %s", l)
	}
	describeTasks(t, e, "not terminal", lv.NotTerminal, 10)
	describeTasks(t, e, "2+ terminal transitions", lv.Retransitioned, 10)
	t.Logf("app log file: %s", r.app.logPath)
	logged = true

	r.load.mu.Lock()
	events, notInLedger, unverified := r.load.events, r.load.notInLedger, r.load.unverified
	r.load.mu.Unlock()
	describeTasks(t, e, "not in the ledger right after its 202", notInLedger, 10)
	require.Equal(t, events, v.Accepted, "every submitted event accepted once, one task each")
	require.Empty(t, notInLedger, "202 answered for tasks not in the ledger (%d unverified at answer time were checked at the end)", len(unverified))
	require.Zero(t, v.Lost, "lost")
	require.Zero(t, v.DuplicateSuccesses, "duplicate successes")
	require.Empty(t, lv.Retransitioned, "tasks that reached a terminal state twice")
	require.Zero(t, v.Stuck, "stuck")
	require.Empty(t, lv.NotTerminal, "not terminal")
	require.Zero(t, v.Unexpected, "unexpected")
	require.Equal(t, v.Accepted, lv.States[contracts.StateSucceeded], "every task succeeded (the function always answers 200)")
}
