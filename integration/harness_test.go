//go:build integration

// Package integration runs Tasklane's roles against the real RabbitMQ and
// Redis of the machine and checks whole scenarios by counting. Each stack
// names its lanes, quarantine and results exchange under a broker prefix of
// its own (its Redis key prefix) and deletes them when its test ends, so
// runs in other processes never take or purge its tasks.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/broker"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/redisconn"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/routing"
	"github.com/tasklane/tasklane/services/tasklane"
)

// redisStreamDB is the Redis database the redisstream-driver tests use for
// lanes, so their streams do not mix with anything in database 0.
const redisStreamDB = 1

// drivers lists the broker drivers every scenario runs on.
var drivers = []string{config.BrokerDriverAMQP, config.BrokerDriverRedisStream}

// testLogger sends logs to the test log, warnings and above only unless
// TASKLANE_TEST_LOG=debug.
func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	level := slog.LevelWarn
	if os.Getenv("TASKLANE_TEST_LOG") == "debug" {
		level = slog.LevelDebug
	}
	return testkit.Logger(t, level)
}

// env is one Tasklane under test.
type env struct {
	t      *testing.T
	driver string
	app    *tasklane.App
	cfg    *config.Config
	doc    string // the config file text
	rdb    redis.UniversalClient
	prefix string
}

// redisURL is the Redis URL for driver's tests.
func redisURL(driver string) string {
	u := strings.TrimSuffix(testkit.RedisURL(), "/0")
	if driver == config.BrokerDriverRedisStream {
		return fmt.Sprintf("%s/%d", u, redisStreamDB)
	}
	return u + "/0"
}

// startTasklane parses yamlBody (broker, redis and ledger prefix are filled
// in) and starts every role in this process. Leftover lane traffic from
// earlier runs is removed first, so every delivery belongs to this test. The
// server listens on a free port; other server keys may be given as one
// flow-style line in yamlBody, e.g. "server: {max_event_bytes: 1024}".
func startTasklane(t *testing.T, driver, yamlBody string) *env {
	e := newStack(t, driver, yamlBody)
	e.start()
	return e
}

// newStack prepares a Tasklane config for driver without starting anything.
func newStack(t *testing.T, driver, yamlBody string) *env {
	t.Helper()
	return newStackAt(t, driver, stackAt{}, yamlBody)
}

// stackAt says where a stack's app connects, when not to the machine's
// RabbitMQ and Redis: fault-injection tests point the app at proxies or at a
// Redis of their own while the test itself reads the ledger directly.
type stackAt struct {
	// AppAMQP is the app's broker.url. Default testkit.AMQPURL().
	AppAMQP string
	// AppRedis is the app's redis.url. Default redisURL(driver).
	AppRedis string
	// Redis is where the test's own client (e.rdb) reads the same data.
	// Default AppRedis.
	Redis string
	// Cluster, when set, is the Redis Cluster the app's ledger (and the
	// redisstream driver's streams) are on: redis.url is its cluster URL
	// and redis.cluster true. Default the cluster onCluster registered
	// for the test or one of its parents.
	Cluster *testkit.Cluster
}

// clusters holds the Redis Cluster registered for a test (by name) and
// its subtests.
var clusters sync.Map // test name -> *testkit.Cluster

// onCluster makes every stack of t and its subtests run on cl, so that a
// scenario written for one Redis runs unchanged on a cluster.
func onCluster(t *testing.T, cl *testkit.Cluster) {
	clusters.Store(t.Name(), cl)
	t.Cleanup(func() { clusters.Delete(t.Name()) })
}

// clusterOf is the cluster registered for t or its nearest parent.
func clusterOf(t *testing.T) *testkit.Cluster {
	name := t.Name()
	for {
		if cl, ok := clusters.Load(name); ok {
			return cl.(*testkit.Cluster)
		}
		i := strings.LastIndex(name, "/")
		if i < 0 {
			return nil
		}
		name = name[:i]
	}
}

// newStackAt is newStack with the app's connections redirected by at.
func newStackAt(t *testing.T, driver string, at stackAt, yamlBody string) *env {
	t.Helper()
	amqpURL := testkit.RequireAMQP(t)
	_, prefix := testkit.Redis(t)
	if at.AppAMQP != "" {
		amqpURL = at.AppAMQP
	}
	if at.Cluster == nil {
		at.Cluster = clusterOf(t)
	}
	var rdb redis.UniversalClient
	redisKeys := ""
	if at.Cluster != nil {
		at.AppRedis, redisKeys = at.Cluster.URL(), ", cluster: true"
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: at.Cluster.Addrs(), ClusterStateReloadInterval: redisconn.ClusterStateReload})
	} else {
		if at.AppRedis == "" {
			at.AppRedis = redisURL(driver)
		}
		if at.Redis == "" {
			at.Redis = at.AppRedis
		}
		opt, err := redis.ParseURL(at.Redis)
		require.NoError(t, err)
		rdb = redis.NewClient(opt)
	}
	e := &env{t: t, driver: driver, rdb: rdb, prefix: prefix}
	t.Cleanup(func() {
		// Registered before the app starts, so run after it stopped.
		e.deleteBrokerNames()
		testkit.DeleteKeys(rdb, prefix)
		// The dispatchers' group is named after the prefix, not under it:
		// its heartbeats outlive the test when a process was killed.
		_ = rdb.Del(context.Background(), prefix+"-dispatchers:heartbeats").Err()
		_ = rdb.Close()
	})
	serverKeys, yamlBody := splitFlowLine(t, "server", yamlBody)
	ledgerKeys, yamlBody := splitFlowLine(t, "ledger", yamlBody)
	// The broker prefix is the key prefix: every stack has lanes, a
	// quarantine and a results exchange of its own, so parallel test
	// processes never take or purge each other's tasks.
	doc := fmt.Sprintf("server: {addr: \"127.0.0.1:0\"%s}\nbroker: {driver: %s, url: %q, prefix: %q}\nredis: {url: %q%s}\nledger: {key_prefix: %q%s}\n%s",
		serverKeys, driver, amqpURL, prefix, at.AppRedis, redisKeys, prefix, ledgerKeys, yamlBody)
	cfg, err := config.Parse("test.yaml", []byte(doc))
	require.NoError(t, err)
	e.cfg, e.doc = cfg, doc
	return e
}

// names names the stack's lanes (under its own broker prefix).
func (e *env) names() routing.Names { return routing.NamesFor(e.cfg.Broker.Prefix) }

// quarantine is the stack's quarantine queue (or stream).
func (e *env) quarantine() string { return broker.QuarantineTopicFor(e.cfg.Broker.Prefix) }

// resultsExchange is the stack's results exchange (or stream).
func (e *env) resultsExchange() string { return contracts.ResultsExchangeFor(e.cfg.Broker.Prefix) }

// deleteBrokerNames deletes what the stack declared on the broker: its
// shared lanes, the dedicated lanes its routing table names, the
// quarantine and the results exchange (or stream).
func (e *env) deleteBrokerNames() {
	t := e.t
	if e.cfg == nil {
		return
	}
	tab, err := routing.NewStaticNamed(e.names(), e.cfg.Lanes.Shared, e.cfg.Lanes.ShardSize)
	require.NoError(t, err)
	lanes := append(tab.Lanes(), e.quarantine())
	for _, tenant := range e.cfg.Tenants { // split lanes the table may not name
		lanes = append(lanes, e.names().Dedicated(tenant.ID))
	}
	if snap, err := routing.NewStoreAt(e.rdb, e.ledger().RoutingKey()).Load(context.Background()); err == nil {
		for _, lane := range snap.Dedicated {
			lanes = append(lanes, lane)
		}
		for lane := range snap.Retiring {
			lanes = append(lanes, lane)
		}
	}
	switch e.driver {
	case config.BrokerDriverAMQP:
		testkit.PurgeQueues(t, lanes...)
		testkit.DeleteExchanges(t, e.resultsExchange())
	case config.BrokerDriverRedisStream:
		// Where the stack's streams are (a fault-injection test's own Redis
		// may be gone by now: nothing to delete then).
		_ = e.rdb.Del(context.Background(), append(lanes, e.resultsExchange())...).Err()
	}
}

// start runs roles (all when none are named) in this process, stopped when
// the test ends.
func (e *env) start(roles ...string) {
	t := e.t
	t.Helper()
	logger := testLogger(t)
	r, err := tasklane.ParseRoles(strings.Join(roles, ","))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	app, err := tasklane.Start(ctx, e.cfg, tasklane.Options{Logger: logger, Roles: r})
	require.NoError(t, err)
	e.app = app
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		require.NoError(t, app.Shutdown(sctx))
	})
}

// splitFlowLine takes a "<block>: {...}" line (server, ledger) out of
// yamlBody (leaving it blank, so line numbers hold) and returns its keys as
// ", k: v, ...".
func splitFlowLine(t *testing.T, block, yamlBody string) (string, string) {
	t.Helper()
	lines := strings.Split(yamlBody, "\n")
	for i, l := range lines {
		rest, ok := strings.CutPrefix(l, block+":")
		if !ok {
			continue
		}
		rest = strings.TrimSpace(rest)
		if !strings.HasPrefix(rest, "{") || !strings.HasSuffix(rest, "}") {
			t.Fatalf("startTasklane: give %s keys as one flow-style line, e.g. server: {max_event_bytes: 1024}; got %q", block, l)
		}
		lines[i] = ""
		if inner := strings.TrimSpace(rest[1 : len(rest)-1]); inner != "" {
			return ", " + inner, strings.Join(lines, "\n")
		}
		return "", strings.Join(lines, "\n")
	}
	return "", yamlBody
}

// laneDepth reports how many tasks wait in lane for the stack's
// dispatchers (ready messages on RabbitMQ; entries the dispatchers' group
// has not read plus those read and not acknowledged on Redis), and whether
// the lane exists at all.
func (e *env) laneDepth(lane string) (int, bool) {
	t := e.t
	t.Helper()
	if e.driver == config.BrokerDriverAMQP {
		return testkit.QueueDepth(t, lane)
	}
	ctx := context.Background()
	n, err := e.rdb.Exists(ctx, lane).Result()
	require.NoError(t, err)
	if n == 0 {
		return 0, false
	}
	groups, err := e.rdb.XInfoGroups(ctx, lane).Result()
	require.NoError(t, err)
	for _, g := range groups {
		if g.Name != e.cfg.Ledger.KeyPrefix+"-dispatchers" {
			continue
		}
		lag := g.Lag
		if lag < 0 { // Redis cannot tell: count the entries after the group's last read
			xs, err := e.rdb.XRange(ctx, lane, "("+g.LastDeliveredID, "+").Result()
			require.NoError(t, err)
			lag = int64(len(xs))
		}
		return int(lag + g.Pending), true
	}
	return 0, true // no dispatchers' group: nothing waits for them
}

// post sends a request to the app with the given key.
func (e *env) post(path, key, contentType string, header map[string]string, body []byte) (int, []byte) {
	e.t.Helper()
	h := map[string]string{}
	if contentType != "" {
		h["Content-Type"] = contentType
	}
	for k, v := range header {
		h[k] = v // an explicit header wins
	}
	return e.do(http.MethodPost, path, key, h, body)
}

func (e *env) get(path, key string) (int, []byte) {
	e.t.Helper()
	return e.do(http.MethodGet, path, key, nil, nil)
}

// do sends a request to the app with the given key (none when empty) and
// headers, and returns the status and body.
func (e *env) do(method, path, key string, header map[string]string, body []byte) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.app.URL()+path, bytes.NewReader(body))
	require.NoError(e.t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return resp.StatusCode, b
}

// ledger is the app's ledger, or, when the app runs only in child processes
// (spawn), a ledger over the test's own client with the stack's prefix.
func (e *env) ledger() *ledger.Ledger {
	if e.app != nil {
		return e.app.Ledger()
	}
	return ledger.New(ledger.Config{Redis: e.rdb, Prefix: e.prefix, Partitions: e.cfg.LedgerPartitions()})
}

// outboxDrained reports whether the notifiers have read and acknowledged
// every results-outbox entry (of every partition's stream): after that,
// no further result is sent.
func (e *env) outboxDrained() bool {
	for _, stream := range e.ledger().OutboxStreams() {
		groups, err := e.rdb.XInfoGroups(context.Background(), stream).Result()
		if err != nil || len(groups) == 0 {
			return false
		}
		if g := groups[0]; g.Pending != 0 || g.Lag != 0 {
			return false
		}
	}
	return true
}

// sink records result events by type and by task.
type sink struct {
	srv    *httptest.Server
	mu     sync.Mutex
	byTask map[string][]contracts.Task
	types  map[string]int
	bad    []string
}

func newSink(t *testing.T) *sink {
	s := &sink{byTask: map[string][]contracts.Task{}, types: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var task contracts.Task
		s.mu.Lock()
		defer s.mu.Unlock()
		typ := r.Header.Get("Ce-Type")
		if err := json.Unmarshal(b, &task); err != nil || r.Header.Get("Ce-Subject") != task.ID ||
			r.Header.Get("Ce-Source") != contracts.ResultSourcePrefix+task.Function || typ != task.State.ResultType() {
			s.bad = append(s.bad, fmt.Sprintf("%s %s: %s", typ, r.Header.Get("Ce-Subject"), b))
		}
		s.types[typ]++
		s.byTask[task.ID] = append(s.byTask[task.ID], task)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.byTask {
		n += len(v)
	}
	return n
}

// resultFeed collects the result events published on the results exchange
// (amqp) or stream (redisstream) from now on, by routing key and task id.
type resultFeed struct {
	mu    sync.Mutex
	byKey map[string]int
	tasks map[string]int
}

func (f *resultFeed) add(key string, t contracts.Task) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byKey[key]++
	f.tasks[t.ID]++
}

func (f *resultFeed) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.byKey {
		n += c
	}
	return n
}

func (e *env) watchResults() *resultFeed {
	t := e.t
	f := &resultFeed{byKey: map[string]int{}, tasks: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	switch e.driver {
	case config.BrokerDriverAMQP:
		conn, err := amqp.Dial(testkit.AMQPURL())
		require.NoError(t, err)
		ch, err := conn.Channel()
		require.NoError(t, err)
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		require.NoError(t, err)
		require.NoError(t, ch.QueueBind(q.Name, "#", e.resultsExchange(), false, nil))
		deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
		require.NoError(t, err)
		go func() {
			defer close(done)
			defer conn.Close()
			for {
				select {
				case <-ctx.Done():
					return
				case d := <-deliveries:
					var task contracts.Task
					if json.Unmarshal(d.Body, &task) == nil {
						f.add(d.RoutingKey, task)
					}
				}
			}
		}()
	case config.BrokerDriverRedisStream:
		// From the stream's last entry, or from its start when it does not
		// exist yet (everything in it is then new). Not "$": "$" means
		// "entries added while this call blocks", so an entry added between
		// two blocking reads, before the first one arrived, was missed.
		last := "0-0"
		if xs, err := e.rdb.XRevRangeN(ctx, e.resultsExchange(), "+", "-", 1).Result(); err == nil && len(xs) > 0 {
			last = xs[0].ID
		}
		go func() {
			defer close(done)
			for ctx.Err() == nil {
				streams, err := e.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{e.resultsExchange(), last}, Count: 500, Block: 100 * time.Millisecond}).Result()
				if err != nil {
					continue
				}
				for _, m := range streams[0].Messages {
					last = m.ID
					msg, err := broker.ResultUnmarshaller{}.Unmarshal(m.Values)
					if err != nil {
						continue
					}
					var task contracts.Task
					if json.Unmarshal(msg.Payload, &task) == nil {
						f.add(msg.Metadata.Get(broker.FieldRoutingKey), task)
					}
				}
			}
		}()
	}
	return f
}

// deleteTask cancels a task through the API.
func (e *env) deleteTask(id string) (int, []byte) {
	e.t.Helper()
	return e.do(http.MethodDelete, "/v1/tasks/"+id, "", nil, nil)
}

// allTasks lists every task of tenant from the ledger.
func allTasks(t *testing.T, led *ledger.Ledger, tenant string) []contracts.Task {
	t.Helper()
	var out []contracts.Task
	f := ledger.ListFilter{Limit: ledger.ListLimitMax}
	for {
		page, err := led.List(context.Background(), tenant, f)
		require.NoError(t, err)
		out = append(out, page.Tasks...)
		if page.NextCursor == "" {
			return out
		}
		f.Cursor = page.NextCursor
	}
}
