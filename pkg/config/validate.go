package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

var (
	tenantIDRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	functionNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	goNameRE       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_./-]{0,127}$`)
)

const hashedKeyPrefix = "sha256:"

// Validate checks c as it is (call [Config.WithDefaults] first on a Config
// built in Go) and reports every problem: the error joins one [*Error] per
// problem, or is nil. A Config from [Parse] or [Load] carries the positions of
// its fields, so the errors name file, line and column; one built in Go gets
// field paths only.
func (c *Config) Validate() error {
	return joinErrors(c.validate(), 0)
}

// validator collects the problems of one Config.
type validator struct {
	c    *Config
	errs []*Error
}

func (c *Config) validate() []*Error {
	v := &validator{c: c}
	v.server()
	v.broker()
	v.redis()
	v.lanes()
	v.dispatcher()
	v.admission()
	v.telemetry()
	v.ledger()
	v.routing()
	v.tenants()
	v.functions()
	v.subscriptions()
	v.triggers()
	v.triggerTypes()
	return v.errs
}

// position finds path, or its closest ancestor, in the position index. A path
// set by ApplyEnv has no position.
func (c *Config) position(path string) (position, bool) {
	if _, ok := c.env[path]; ok {
		return position{}, false
	}
	for p := path; p != ""; {
		if pos, ok := c.pos[p]; ok && pos.line > 0 {
			return pos, true
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return position{}, false
}

func (v *validator) add(path, format string, args ...any) {
	e := &Error{File: v.c.File, Field: path, Msg: fmt.Sprintf(format, args...)}
	if name, ok := v.c.env[path]; ok {
		e.File = ""
		e.Msg += " (set by " + name + ")"
	} else if p, ok := v.c.position(path); ok {
		e.Line, e.Column = p.line, p.col
	}
	v.errs = append(v.errs, e)
}

func (v *validator) missing(path string) {
	v.add(path, "missing (required)")
}

// where names where path is, for "first at ..." notes: its line when known,
// its path otherwise.
func (v *validator) where(path string) string {
	if p, ok := v.c.position(path); ok {
		return fmt.Sprintf("line %d", p.line)
	}
	return path
}

func (v *validator) intRange(path string, got, lo, hi int64) {
	if got < lo || got > hi {
		v.add(path, "must be between %d and %d, got %d", lo, hi, got)
	}
}

func (v *validator) intMin(path string, got, lo int64) {
	if got < lo {
		v.add(path, "must be at least %d, got %d", lo, got)
	}
}

// limit checks an optional limit, where 0 means none.
func (v *validator) limit(path string, got int64) {
	if got < 0 {
		v.add(path, "must be 0 (no limit) or more, got %d", got)
	}
}

func (v *validator) positive(path string, d Duration) {
	if d <= 0 {
		v.add(path, "must be a positive duration, got %s", d)
	}
}

func (v *validator) enum(path, got string, allowed ...string) {
	if !slices.Contains(allowed, got) {
		v.add(path, "invalid value %q (allowed: %s)", got, strings.Join(allowed, ", "))
	}
}

// unique reports the second and later occurrences of a name. kind names what
// is named, e.g. "function name".
type uniqueSet struct {
	v     *validator
	kind  string
	first map[string]string // name -> path of its first occurrence
}

func (v *validator) uniqueSet(kind string) *uniqueSet {
	return &uniqueSet{v: v, kind: kind, first: map[string]string{}}
}

func (u *uniqueSet) check(path, name string) {
	if name == "" {
		return
	}
	if first, dup := u.first[name]; dup {
		u.v.add(path, "duplicate %s %q (first at %s)", u.kind, name, u.v.where(first))
		return
	}
	u.first[name] = path
}

func (v *validator) server() {
	s := v.c.Server
	if s.Addr == "" {
		v.missing("server.addr")
	} else if msg := checkAddr(s.Addr); msg != "" {
		v.add("server.addr", "%s", msg)
	}
	v.intRange("server.max_event_bytes", s.MaxEventBytes, 1, MaxEventBytesMax)
	if s.MaxBatchBytes < s.MaxEventBytes {
		v.add("server.max_batch_bytes", "must be at least server.max_event_bytes (%d), got %d", s.MaxEventBytes, s.MaxBatchBytes)
	}
	v.intMin("server.max_batch_events", int64(s.MaxBatchEvents), 1)
	v.intMin("server.bulk_sync_max", int64(s.BulkSyncMax), 1)
	v.positive("server.write_timeout", s.WriteTimeout)
	v.intRange("server.max_header_bytes", int64(s.MaxHeaderBytes), MaxHeaderBytesMin, MaxHeaderBytesMax)
	if s.MetricsAddr != "" {
		if msg := checkAddr(s.MetricsAddr); msg != "" {
			v.add("server.metrics_addr", "%s", msg)
		} else if s.MetricsAddr == s.Addr && !strings.HasSuffix(s.Addr, ":0") {
			v.add("server.metrics_addr", "must differ from server.addr (%s)", s.Addr)
		}
	}
	for i, k := range s.AdminKeys {
		if _, msg := checkKey(k); msg != "" {
			v.add(fmt.Sprintf("server.admin_keys[%d]", i), "%s", msg)
		}
	}
}

func (v *validator) broker() {
	b := v.c.Broker
	v.enum("broker.driver", b.Driver, BrokerDriverAMQP, BrokerDriverRedisStream)
	if b.Driver == BrokerDriverAMQP {
		if b.URL == "" {
			v.missing("broker.url")
		} else {
			v.brokerURLs(b.URL)
		}
	}
	v.intRange("broker.publish_channels", int64(b.PublishChannels), PublishChannelsMin, PublishChannelsMax)
	v.intRange("broker.prefetch", int64(b.Prefetch), PrefetchMin, PrefetchMax)
	if !keyPrefixRE.MatchString(b.Prefix) {
		v.add("broker.prefix", "must be 1 to 64 letters, digits, '-', '_' or '.', got %q", b.Prefix)
	}
}

// brokerURLs checks broker.url: one AMQP URL, or several separated by
// commas (the nodes of a RabbitMQ cluster), all naming the same vhost. A
// bad URL of a list is named by its position and with its password
// redacted; a single one is not echoed at all.
func (v *validator) brokerURLs(raw string) {
	const example = "amqp://guest:guest@127.0.0.1:5672/"
	urls := SplitURLs(raw)
	if len(urls) == 1 {
		if msg := checkURL(urls[0], example, "amqp", "amqps"); msg != "" {
			v.add("broker.url", "%s", msg)
		}
		return
	}
	firstVhost, seen := "", map[string]int{}
	for i, u := range urls {
		which := fmt.Sprintf("URL %d of %d", i+1, len(urls))
		if u == "" {
			v.add("broker.url", "%s is empty (URLs are separated by single commas, e.g. %s,amqp://guest:guest@rabbit2:5672/)", which, example)
			continue
		}
		which += " (" + RedactURL(u) + ")"
		if msg := checkURL(u, example, "amqp", "amqps"); msg != "" {
			v.add("broker.url", "%s: %s", which, msg)
			continue
		}
		if j, dup := seen[u]; dup {
			v.add("broker.url", "%s repeats URL %d", which, j+1)
			continue
		}
		seen[u] = i
		vhost := amqpVhost(u)
		if len(seen) == 1 {
			firstVhost = vhost
		} else if vhost != firstVhost {
			v.add("broker.url", "%s names vhost %q, the first URL %q (every URL of the list must name the same vhost: they are nodes of one cluster)", which, vhost, firstVhost)
		}
	}
}

// amqpVhost is the vhost an AMQP URL names, as amqp091 reads it: the path
// without its leading '/', unescaped, "/" when empty.
func amqpVhost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	if vh := strings.TrimPrefix(u.Path, "/"); vh != "" {
		return vh
	}
	return "/"
}

func (v *validator) redis() {
	r := v.c.Redis
	v.intRange("redis.wait_replicas", int64(r.WaitReplicas), 0, WaitReplicasMax)
	if raw, ok := v.c.envBad["redis.cluster"]; ok {
		v.add("redis.cluster", "want true or false, got %q", raw)
	}
	u := r.URL
	if u == "" {
		v.missing("redis.url")
		return
	}
	example := "redis://127.0.0.1:6379/0"
	if r.Cluster {
		example = clusterURLExample
	}
	if msg := checkURL(u, example, "redis", "rediss"); msg != "" {
		v.add("redis.url", "%s", msg)
		return
	}
	parsed, _ := url.Parse(u) // checkURL parsed it
	db := strings.TrimPrefix(parsed.Path, "/")
	if db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			v.add("redis.url", "invalid database %q (want a number, e.g. redis://127.0.0.1:6379/0)", db)
			return
		}
	}
	seeds := parsed.Query()["addr"]
	if !r.Cluster {
		if len(seeds) > 0 {
			v.add("redis.url", "lists more addresses (addr=%s): that is a Redis Cluster URL; set redis.cluster: true for a cluster, or name one Redis (e.g. redis://127.0.0.1:6379/0)",
				strings.Join(seeds, ", addr="))
		}
		return
	}
	if db != "" && db != "0" {
		v.add("redis.url", "database %s: a Redis Cluster has database 0 only (want e.g. %s)", db, clusterURLExample)
	}
	for _, a := range seeds {
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || !isPort(port) {
			v.add("redis.url", "invalid seed address addr=%s (want host:port, e.g. %s)", a, clusterURLExample)
		}
	}
}

// clusterURLExample is a Redis Cluster URL in go-redis's form.
const clusterURLExample = "redis://10.0.0.1:6379?addr=10.0.0.2:6379&addr=10.0.0.3:6379"

func isPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n < 65536
}

func (v *validator) lanes() {
	l := v.c.Lanes
	v.intRange("lanes.shared", int64(l.Shared), LanesSharedMin, LanesSharedMax)
	if l.ShardSize < ShardSizeMin || (l.Shared >= ShardSizeMin && l.ShardSize > l.Shared) {
		v.add("lanes.shard_size", "must be between %d and lanes.shared (%d), got %d", ShardSizeMin, l.Shared, l.ShardSize)
	}
	v.enum("lanes.queue_type", l.QueueType, QueueTypeClassic, QueueTypeQuorum)
}

func (v *validator) dispatcher() {
	d := v.c.Dispatcher
	v.intRange("dispatcher.consumers_per_lane", int64(d.ConsumersPerLane), ConsumersPerLaneMin, ConsumersPerLaneMax)
	if d.LeaseTTL < LeaseTTLMin {
		v.add("dispatcher.lease_ttl", "must be at least %s, got %s", LeaseTTLMin, d.LeaseTTL)
	}
	v.positive("dispatcher.drain_timeout", d.DrainTimeout)
	v.intMin("dispatcher.max_result_bytes", d.MaxResultBytes, 1)
	v.intRange("dispatcher.max_running", int64(d.MaxRunning), 1, MaxRunningMax)
	if !(d.ReservedHigh >= 0 && d.ReservedHigh < 1) {
		v.add("dispatcher.reserved_high", "must be a share in [0, 1) (0: none reserved), got %v", d.ReservedHigh)
	}
	n := v.c.Notifier
	v.intRange("notifier.consumers", int64(n.Consumers), 1, NotifierConsumersMax)
	if n.SinkTimeout <= 0 || n.SinkTimeout > SinkTimeoutMax {
		v.add("notifier.sink_timeout", "must be a positive duration of at most %s, got %s", SinkTimeoutMax, n.SinkTimeout)
	}
	v.intRange("notifier.sink_attempts", int64(n.SinkAttempts), 1, SinkAttemptsMax)
	v.intRange("notifier.sink_concurrency", int64(n.SinkConcurrency), 1, SinkConcurrencyMax)
	v.intRange("notifier.sink_backlog", int64(n.SinkBacklog), 1, SinkBacklogMax)
}

func (v *validator) admission() {
	v.limit("admission.max_backlog", v.c.Admission.MaxBacklog)
}

func (v *validator) telemetry() {
	t := v.c.Telemetry
	if t.Protocol != "" && t.Protocol != TelemetryHTTP && t.Protocol != TelemetryGRPC {
		v.add("telemetry.protocol", "must be %q or %q, got %q", TelemetryHTTP, TelemetryGRPC, t.Protocol)
	}
	if t.SampleRatio != nil && !(*t.SampleRatio >= 0 && *t.SampleRatio <= 1) {
		v.add("telemetry.sample_ratio", "must be a share in [0, 1], got %v", *t.SampleRatio)
	}
	if t.Endpoint != "" {
		if u, err := url.Parse(t.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add("telemetry.endpoint", "must be an http:// or https:// URL with a host, got %q", t.Endpoint)
		}
	}
}

func (v *validator) ledger() {
	l := v.c.Ledger
	v.positive("ledger.retention", l.Retention)
	v.positive("ledger.dedup_window", l.DedupWindow)
	v.positive("ledger.dead_retention", l.DeadRetention)
	v.positive("ledger.publish_guard", l.PublishGuard)
	// A duplicate submission answers with the tasks the event first made:
	// the records must outlive the dedup entry, or the answer names tasks
	// that are gone (404).
	if l.DedupWindow > 0 && l.Retention > 0 && l.DedupWindow > l.Retention {
		v.add("ledger.dedup_window", "must not be longer than ledger.retention (%s), got %s: a duplicate submission would name tasks whose records expired", l.Retention, l.DedupWindow)
	}
	if l.DedupWindow > 0 && l.DeadRetention > 0 && l.DedupWindow > l.DeadRetention {
		v.add("ledger.dedup_window", "must not be longer than ledger.dead_retention (%s), got %s: a duplicate submission would name dead tasks whose records expired", l.DeadRetention, l.DedupWindow)
	}
	if !keyPrefixRE.MatchString(l.KeyPrefix) {
		v.add("ledger.key_prefix", "must be 1 to 64 letters, digits, '-', '_' or '.', got %q", l.KeyPrefix)
	}
	if raw, ok := v.c.envBad["ledger.partitions"]; ok {
		v.add("ledger.partitions", "want a whole number, got %q", raw)
	} else if l.Partitions != 0 {
		// 0 is the default: the legacy layout, or ClusterPartitionsDefault.
		v.intRange("ledger.partitions", int64(l.Partitions), 1, PartitionsMax)
	}
}

var keyPrefixRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (v *validator) tenants() {
	ids := v.uniqueSet("tenant id")
	type owner struct {
		tenant int
		path   string
	}
	keys := map[string]owner{} // canonical key -> first holder
	for i, t := range v.c.Tenants {
		path := fmt.Sprintf("tenants[%d]", i)
		v.rate(path, t.Rate, t.Burst)
		v.limit(path+".concurrency", int64(t.Concurrency))
		v.limit(path+".max_backlog", t.MaxBacklog)
		switch {
		case t.ID == "":
			v.missing(path + ".id")
		case !tenantIDRE.MatchString(t.ID):
			v.add(path+".id", "invalid tenant id %q (want 1-64 lowercase letters, digits, '_' or '-', starting with a letter or digit)", t.ID)
		default:
			ids.check(path+".id", t.ID)
		}
		if len(t.APIKeys) == 0 {
			v.missing(path + ".api_keys")
		}
		for j, k := range t.APIKeys {
			kpath := fmt.Sprintf("%s.api_keys[%d]", path, j)
			canon, msg := checkKey(k)
			if msg != "" {
				v.add(kpath, "%s", msg)
				continue
			}
			first, dup := keys[canon]
			switch {
			case !dup:
				keys[canon] = owner{i, kpath}
			case first.tenant == i:
				v.add(kpath, "duplicate API key (first at %s)", v.where(first.path))
			default:
				v.add(kpath, "API key also belongs to tenant %q (first at %s); a key must identify one tenant",
					v.c.Tenants[first.tenant].ID, v.where(first.path))
			}
		}
	}
	for i, k := range v.c.Server.AdminKeys {
		canon, msg := checkKey(k)
		if msg != "" {
			continue // reported by server()
		}
		if first, dup := keys[canon]; dup {
			v.add(fmt.Sprintf("server.admin_keys[%d]", i), "admin key is also an API key of tenant %q (at %s)",
				v.c.Tenants[first.tenant].ID, v.where(first.path))
		}
	}
}

func (v *validator) functions() {
	names := v.uniqueSet("function name")
	tenants := v.c.TenantIDs()
	for i, f := range v.c.Functions {
		path := fmt.Sprintf("functions[%d]", i)
		switch {
		case f.Name == "":
			v.missing(path + ".name")
		case !functionNameRE.MatchString(f.Name):
			v.add(path+".name", "invalid function name %q (want 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit)", f.Name)
		default:
			names.check(path+".name", f.Name)
		}

		if len(f.Events) == 0 {
			v.missing(path + ".events")
		}
		seen := map[string]bool{}
		for j, e := range f.Events {
			epath := fmt.Sprintf("%s.events[%d]", path, j)
			switch {
			case strings.TrimSpace(e) == "":
				v.add(epath, "empty event type")
			case seen[e]:
				v.add(epath, "duplicate event type %q", e)
			}
			seen[e] = true
		}

		if f.Endpoint == "" {
			v.missing(path + ".endpoint")
		} else if msg := checkEndpoint(f.Endpoint); msg != "" {
			v.add(path+".endpoint", "%s", msg)
		}

		v.positive(path+".timeout", f.Timeout)
		if f.Timeout > FunctionTimeoutMax {
			v.add(path+".timeout", "must be at most %s, got %s", FunctionTimeoutMax, f.Timeout)
		}
		v.limit(path+".concurrency", int64(f.Concurrency))
		v.rate(path, f.Rate, f.Burst)
		if f.Adaptive != nil {
			v.adaptive(path+".adaptive", *f.Adaptive)
		}

		r := f.Retry
		v.intRange(path+".retry.max_attempts", int64(r.MaxAttempts), MaxAttemptsMin, MaxAttemptsMax)
		if r.MaxThrottled != nil {
			v.intRange(path+".retry.max_throttled", int64(*r.MaxThrottled), 0, MaxThrottledMax)
		}
		v.positive(path+".retry.initial_backoff", r.InitialBackoff)
		if r.MaxBackoff < r.InitialBackoff {
			v.add(path+".retry.max_backoff", "must be at least retry.initial_backoff (%s), got %s", r.InitialBackoff, r.MaxBackoff)
		}

		for j, t := range f.Tenants {
			if !slices.Contains(tenants, t) {
				v.add(fmt.Sprintf("%s.tenants[%d]", path, j), "unknown tenant %q (configured: %s)", t, strings.Join(tenants, ", "))
			}
		}
	}
}

func (v *validator) subscriptions() {
	names := v.uniqueSet("subscription name")
	tenants := v.c.TenantIDs()
	for i, s := range v.c.Subscriptions {
		path := fmt.Sprintf("subscriptions[%d]", i)
		if s.Name == "" {
			v.missing(path + ".name")
		}
		names.check(path+".name", s.Name)
		if s.Sink == "" {
			v.missing(path + ".sink")
		} else if msg := checkURL(s.Sink, "http://127.0.0.1:9100/results", "http", "https"); msg != "" {
			v.add(path+".sink", "%s", msg)
		}
		for j, t := range s.Filter.Types {
			if strings.TrimSpace(t) == "" {
				v.add(fmt.Sprintf("%s.filter.types[%d]", path, j), "empty event type")
			}
		}
		for j, t := range s.Filter.Tenants {
			if !slices.Contains(tenants, t) {
				v.add(fmt.Sprintf("%s.filter.tenants[%d]", path, j), "unknown tenant %q (configured: %s)", t, strings.Join(tenants, ", "))
			}
		}
		for j, fn := range s.Filter.Functions {
			if v.c.Function(fn) == nil {
				v.unknownFunction(fmt.Sprintf("%s.filter.functions[%d]", path, j), fn)
			}
		}
	}
}

// checkKey checks an API key and returns its canonical form (the lowercase hex
// SHA-256 of the secret), or a problem. The key itself never appears in the
// problem.
func checkKey(k string) (canon, problem string) {
	if hexSum, ok := strings.CutPrefix(k, hashedKeyPrefix); ok {
		if _, err := hex.DecodeString(hexSum); err != nil || len(hexSum) != 2*sha256.Size {
			return "", `invalid hashed key (want "sha256:" followed by 64 hex digits)`
		}
		return strings.ToLower(hexSum), ""
	}
	if len(k) < 8 {
		return "", `API key too short (want a secret of at least 8 characters, or "sha256:" followed by 64 hex digits)`
	}
	if strings.ContainsFunc(k, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return "", "API key must not contain white space or control characters"
	}
	sum := sha256.Sum256([]byte(k))
	return hex.EncodeToString(sum[:]), ""
}

// checkAddr checks a listen address.
func checkAddr(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		if n, perr := strconv.Atoi(port); perr == nil && n >= 0 && n <= 65535 {
			return ""
		}
	}
	return fmt.Sprintf("invalid address %q (want host:port, e.g. \":8080\")", addr)
}

// checkURL checks that raw is a URL with one of schemes and a host. The URL
// is not echoed: it may hold credentials.
func checkURL(raw, example string, schemes ...string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" {
		return fmt.Sprintf("invalid URL (want e.g. %s)", example)
	}
	if !slices.Contains(schemes, u.Scheme) {
		return fmt.Sprintf("unsupported URL scheme %q (want %s, e.g. %s)", u.Scheme, strings.Join(schemes, " or "), example)
	}
	if u.Hostname() == "" {
		return fmt.Sprintf("URL has no host (want e.g. %s)", example)
	}
	return ""
}

// checkEndpoint checks a function endpoint.
func checkEndpoint(e string) string {
	const want = "want an http:// or https:// URL with a host, builtin:echo, builtin:noop or go:<name>"
	switch {
	case e == EndpointEcho, e == EndpointNoop:
		return ""
	case strings.HasPrefix(e, "builtin:"):
		return fmt.Sprintf("unknown builtin %q (allowed: %s, %s)", e, EndpointEcho, EndpointNoop)
	case strings.HasPrefix(e, EndpointGoPrefix):
		if !goNameRE.MatchString(strings.TrimPrefix(e, EndpointGoPrefix)) {
			return fmt.Sprintf("invalid go function name in %q (want go:<name>, e.g. go:resize)", e)
		}
		return ""
	}
	u, err := url.Parse(e)
	if err != nil || u.Opaque != "" || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return "invalid endpoint (" + want + ")"
	}
	return ""
}

// adaptive checks a function's adaptive concurrency settings. A bound that
// is itself out of range is reported once: the fields checked against it
// (max against min, increase against max) are then checked alone.
func (v *validator) adaptive(path string, a Adaptive) {
	minOK := false
	switch {
	case !v.required(path+".min", a.Min):
	case a.Min < 1:
		v.add(path+".min", "must be at least 1, got %d", a.Min)
	default:
		minOK = true
	}
	maxOK := false
	switch {
	case !v.required(path+".max", a.Max):
	case a.Max < 1 || a.Max > AdaptiveMaxMax:
		v.add(path+".max", "must be between 1 and %d, got %d", AdaptiveMaxMax, a.Max)
	case minOK && a.Max < a.Min:
		v.add(path+".max", "must be at least adaptive.min (%d), got %d", a.Min, a.Max)
	default:
		maxOK = true
	}
	switch {
	case a.Increase < 1:
		v.add(path+".increase", "must be at least 1, got %d", a.Increase)
	case maxOK && a.Increase > a.Max:
		v.add(path+".increase", "must be at most adaptive.max (%d), got %d", a.Max, a.Increase)
	}
	if a.Interval < AdaptiveIntervalMin || a.Interval > AdaptiveIntervalMax {
		v.add(path+".interval", "must be between %s and %s, got %s", AdaptiveIntervalMin, AdaptiveIntervalMax, a.Interval)
	}
	if !(a.Decrease > 0 && a.Decrease < 1) {
		v.add(path+".decrease", "must be a factor in (0, 1), got %v", a.Decrease)
	}
	if !(a.ErrorRate > 0 && a.ErrorRate <= 1) {
		v.add(path+".error_rate", "must be a share in (0, 1], got %v", a.ErrorRate)
	}
	v.intRange(path+".error_count", int64(a.ErrorCount), 1, AdaptiveErrorCountMax)
}

// required reports a required number left out (zero and not written in the
// file) and returns false then; a zero written in the file is left to the
// range check.
func (v *validator) required(path string, got int) bool {
	if got == 0 && !v.c.IsSet(path) {
		v.missing(path)
		return false
	}
	return true
}

// rate checks a rate (tasks per second) and its burst.
func (v *validator) rate(path string, rate float64, burst int) {
	if rate < 0 || rate > 1e6 || math.IsNaN(rate) {
		v.add(path+".rate", "must be between 0 (no limit) and 1000000 tasks per second, got %v", rate)
	}
	v.intRange(path+".burst", int64(burst), 0, 1_000_000)
}

func (v *validator) routing() {
	r := v.c.Routing
	v.positive("routing.window", r.Window)
	if !(r.HotShare > 0 && r.HotShare <= 1) {
		v.add("routing.hot_share", "must be a share in (0, 1], got %v", r.HotShare)
	}
	v.intMin("routing.hot_backlog", r.HotBacklog, 0)
	v.positive("routing.cooldown", r.Cooldown)
	v.intRange("routing.max_dedicated", int64(r.MaxDedicated), 0, 1000)
	v.positive("routing.lane_grace", r.LaneGrace)
}
