package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// opsFlags configure --count-ops.
type opsFlags struct {
	enabled    bool
	redis      string
	management string
}

// OpsCount is what a run cost the servers, from counters read before and
// after it (--count-ops). The counters are server-wide: whatever else used
// the servers meanwhile is counted too.
type OpsCount struct {
	// Tasks is what the per-task figures divide by: the run's completed
	// tasks (accepted ones with --submit-only).
	Tasks    int        `json:"tasks"`
	Redis    *RedisOps  `json:"redis,omitempty"`
	RabbitMQ *RabbitOps `json:"rabbitmq,omitempty"`
	// Notes say what could not be counted, and why.
	Notes []string `json:"notes,omitempty"`
}

// RedisOps are the Redis commands of a run, from INFO commandstats (the
// count's own INFO left out).
type RedisOps struct {
	Commands int64   `json:"commands"`
	PerTask  float64 `json:"commands_per_task"`
	// Top are the 10 commands called most, most first.
	Top []CommandCount `json:"top"`
}

// CommandCount is one Redis command's calls during a run.
type CommandCount struct {
	Command string  `json:"command"`
	Calls   int64   `json:"calls"`
	PerTask float64 `json:"per_task"`
}

// RabbitOps are a vhost's message operations during a run, from the
// management API's message_stats (which lag by its collection interval).
type RabbitOps struct {
	Vhost      string  `json:"vhost"`
	Publishes  int64   `json:"publishes"`
	Deliveries int64   `json:"deliveries"`
	Acks       int64   `json:"acks"`
	PerTask    float64 `json:"operations_per_task"`
}

// opsTargets are the servers --count-ops reads for a run: the Redis of
// INFO commandstats and the amqp:// URL whose vhost the management API
// counts ("": none). A raw run (rawURL set) counts its own broker, and
// Redis beside RabbitMQ only when --ops-redis names one; a Tasklane run
// counts the Redis of --ops-redis, else of --results, else the local
// default, and the RabbitMQ of an amqp:// --results.
func (f *benchFlags) opsTargets(rawURL string) (redisURL, amqpURL string) {
	if rawURL != "" {
		if rawDriver(rawURL) == "redis" {
			return cmp.Or(f.ops.redis, rawURL), ""
		}
		return f.ops.redis, rawURL
	}
	if rawDriver(f.results) == "amqp" {
		amqpURL = f.results
	} else {
		redisURL = f.results
	}
	return cmp.Or(f.ops.redis, redisURL, "redis://127.0.0.1:6379/"), amqpURL
}

// runTasklane measures Tasklane, counting operations when --count-ops asks.
func runTasklane(ctx context.Context, f *benchFlags, progress io.Writer) (*Report, error) {
	return withOps(ctx, f, "", progress, func() (*Report, error) { return runBench(ctx, f, progress) })
}

// withOps runs run, and with --count-ops reads the counters before and
// after it into the report.
func withOps(ctx context.Context, f *benchFlags, runURL string, progress io.Writer, run func() (*Report, error)) (*Report, error) {
	if !f.ops.enabled {
		return run()
	}
	redisURL, amqpURL := f.opsTargets(runURL)
	c := &opsCounter{redisURL: redisURL, management: f.ops.management, amqpURL: amqpURL}
	c.before(ctx)
	defer c.close()
	r, err := run()
	if err != nil {
		return nil, err
	}
	r.Ops = c.after(ctx, r)
	if len(r.Ops.Notes) > 0 {
		fmt.Fprintf(progress, "count-ops: %s\n", strings.Join(r.Ops.Notes, "; "))
	}
	return r, nil
}

// opsCounter holds the counters read before a run.
type opsCounter struct {
	redisURL, management, amqpURL string
	// rdb reads INFO before and after on one connection, so the counts
	// hold one INFO of its own and no connection set-up.
	rdb          redis.UniversalClient
	redisBefore  map[string]int64
	rabbitBefore *RabbitOps
	notes        []string
}

func (c *opsCounter) before(ctx context.Context) {
	var err error
	if c.redisURL != "" {
		if c.redisBefore, err = c.redisCommandStats(ctx); err != nil {
			c.notes = append(c.notes, fmt.Sprintf("Redis not counted: %v", err))
		}
	}
	if c.amqpURL == "" {
		return
	}
	if c.rabbitBefore, err = rabbitStats(ctx, c.management, c.amqpURL); err != nil {
		c.notes = append(c.notes, fmt.Sprintf("RabbitMQ not counted (management API %s): %v", redactURL(c.management), err))
	}
}

func (c *opsCounter) close() {
	if c.rdb != nil {
		_ = c.rdb.Close()
	}
}

func (c *opsCounter) after(ctx context.Context, r *Report) *OpsCount {
	o := &OpsCount{Tasks: r.Completed, Notes: c.notes}
	if r.SubmitOnly {
		o.Tasks = r.Accepted
	}
	per := func(n int64) float64 {
		if o.Tasks == 0 {
			return 0
		}
		return float64(n) / float64(o.Tasks)
	}
	if c.redisBefore != nil {
		now, err := c.redisCommandStats(ctx)
		if err != nil {
			o.Notes = append(o.Notes, fmt.Sprintf("Redis not counted: %v", err))
		} else {
			o.Redis = redisOpsDelta(c.redisBefore, now, per)
		}
	}
	if c.rabbitBefore != nil {
		now, err := rabbitStats(ctx, c.management, c.amqpURL)
		if err != nil {
			o.Notes = append(o.Notes, fmt.Sprintf("RabbitMQ not counted: %v", err))
		} else {
			d := &RabbitOps{
				Vhost: now.Vhost, Publishes: now.Publishes - c.rabbitBefore.Publishes,
				Deliveries: now.Deliveries - c.rabbitBefore.Deliveries, Acks: now.Acks - c.rabbitBefore.Acks,
			}
			d.PerTask = per(d.Publishes + d.Deliveries + d.Acks)
			o.RabbitMQ = d
			o.Notes = append(o.Notes, "RabbitMQ message_stats lag by the management collection interval (5s by default)")
		}
	}
	return o
}

// redisOpsDelta is the commands called between two INFO commandstats
// readings, less the first reading's INFO.
func redisOpsDelta(before, after map[string]int64, per func(int64) float64) *RedisOps {
	ops := &RedisOps{}
	for cmd, n := range after {
		d := n - before[cmd]
		if cmd == "info" {
			d--
		}
		if d <= 0 {
			continue
		}
		ops.Commands += d
		ops.Top = append(ops.Top, CommandCount{Command: cmd, Calls: d, PerTask: per(d)})
	}
	slices.SortFunc(ops.Top, func(a, b CommandCount) int {
		return cmp.Or(cmp.Compare(b.Calls, a.Calls), strings.Compare(a.Command, b.Command))
	})
	ops.Top = ops.Top[:min(len(ops.Top), 10)]
	ops.PerTask = per(ops.Commands)
	return ops
}

// redisCommandStats reads the calls of every command from INFO
// commandstats; of a Redis Cluster (a URL with addr= seeds), summed over
// its masters.
func (c *opsCounter) redisCommandStats(ctx context.Context) (map[string]int64, error) {
	if c.rdb == nil {
		rdb, err := redisClient(c.redisURL, 1)
		if err != nil {
			return nil, err
		}
		c.rdb = rdb
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cc, ok := c.rdb.(*redis.ClusterClient)
	if !ok {
		info, err := c.rdb.Info(ctx, "commandstats").Result()
		if err != nil {
			return nil, fmt.Errorf("INFO commandstats: %w", err)
		}
		return parseCommandStats(info), nil
	}
	var mu sync.Mutex
	out := map[string]int64{}
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		info, err := m.Info(ctx, "commandstats").Result()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for k, v := range parseCommandStats(info) {
			out[k] += v
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("INFO commandstats of the cluster's masters: %w", err)
	}
	return out, nil
}

// redisClient connects to the Redis of rawURL: a Redis Cluster when the
// URL lists seeds (go-redis's form redis://h1:p1?addr=h2:p2), one Redis
// otherwise, with at most pool connections (per node).
func redisClient(rawURL string, pool int) (redis.UniversalClient, error) {
	if strings.Contains(rawURL, "addr=") {
		opt, err := redis.ParseClusterURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", redactURL(rawURL), err)
		}
		opt.PoolSize = pool
		return redis.NewClusterClient(opt), nil
	}
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", redactURL(rawURL), err)
	}
	opt.PoolSize = pool
	return redis.NewClient(opt), nil
}

// parseCommandStats parses INFO commandstats lines such as
// "cmdstat_xadd:calls=12,usec=30,...", keyed by the command's name
// ("xadd", "client|setname").
func parseCommandStats(info string) map[string]int64 {
	out := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, rest, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for field := range strings.SplitSeq(rest, ",") {
			if v, ok := strings.CutPrefix(field, "calls="); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					out[strings.TrimPrefix(name, "cmdstat_")] = n
				}
			}
		}
	}
	return out
}

// rabbitStats reads the publishes, deliveries and acks of amqpURL's vhost
// from the management API at management (user info: its credentials).
func rabbitStats(ctx context.Context, management, amqpURL string) (*RabbitOps, error) {
	uri, err := amqp.ParseURI(amqpURL)
	if err != nil {
		return nil, fmt.Errorf("parsing the amqp URL: %w", err)
	}
	m, err := url.Parse(management)
	if err != nil {
		return nil, fmt.Errorf("parsing --ops-management: %w", err)
	}
	user := m.User
	m.User = nil
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.JoinPath("api", "vhosts").String()+"/"+url.PathEscape(uri.Vhost), nil)
	if err != nil {
		return nil, fmt.Errorf("building the request: %w", err)
	}
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("unreachable: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET vhost %q: HTTP %d", uri.Vhost, resp.StatusCode)
	}
	var body struct {
		MessageStats struct {
			Publish    int64 `json:"publish"`
			DeliverGet int64 `json:"deliver_get"`
			Ack        int64 `json:"ack"`
		} `json:"message_stats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("decoding vhost %q: %w", uri.Vhost, err)
	}
	s := body.MessageStats
	return &RabbitOps{Vhost: uri.Vhost, Publishes: s.Publish, Deliveries: s.DeliverGet, Acks: s.Ack}, nil
}

// redactURL drops an URL's user info.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	return u.String()
}

// printOps prints an OpsCount under a run's report.
func printOps(w io.Writer, o *OpsCount) {
	fmt.Fprintf(w, "operations         per task over %d tasks (server-wide counters)\n", o.Tasks)
	if r := o.Redis; r != nil {
		fmt.Fprintf(w, "  redis commands   %d (%.2f/task)\n", r.Commands, r.PerTask)
		for _, c := range r.Top {
			fmt.Fprintf(w, "    %-20s %10d  %.2f/task\n", c.Command, c.Calls, c.PerTask)
		}
	}
	if r := o.RabbitMQ; r != nil {
		fmt.Fprintf(w, "  rabbitmq %-7s publishes %d, deliveries %d, acks %d (%.2f/task)\n", r.Vhost, r.Publishes, r.Deliveries, r.Acks, r.PerTask)
	}
	for _, n := range o.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
}
