package config

import (
	"cmp"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
)

// Trigger kinds, as [Trigger.Kind] names them.
const (
	// TriggerKindCron fires on a schedule.
	TriggerKindCron = "cron"
	// TriggerKindHTTP fires on a webhook request.
	TriggerKindHTTP = "http"
	// TriggerKindObjectStore fires on object-store changes.
	TriggerKindObjectStore = "objectstore"
)

// Trigger defaults, bounds and allowed values.
const (
	// TimezoneDefault is the default CronTrigger.Timezone.
	TimezoneDefault = "UTC"
	// MissedSkip drops fires missed while no replica ran the schedule.
	MissedSkip = "skip"
	// MissedCatchUp fires missed fires late, up to CronTrigger.MaxCatchUp.
	MissedCatchUp = "catch_up"
	// MissedDefault is the default CronTrigger.Missed.
	MissedDefault = MissedSkip
	// MaxCatchUpDefault is the default CronTrigger.MaxCatchUp.
	MaxCatchUpDefault = 10
	// MaxCatchUpMin is the smallest CronTrigger.MaxCatchUp.
	MaxCatchUpMin = 1
	// MaxCatchUpMax is the largest CronTrigger.MaxCatchUp.
	MaxCatchUpMax = 1000

	// SignatureSHA256 is a hex HMAC-SHA256 in one header ("sha256=<hex>",
	// GitHub style), over the raw body, or over "<timestamp>.<body>" when
	// Signature.TimestampHeader is set.
	SignatureSHA256 = "sha256"
	// SignatureStripe is Stripe's "t=<unix>,v1=<hex>[,v1=<hex>]" header, an
	// HMAC-SHA256 over "<t>.<body>".
	SignatureStripe = "stripe"
	// SignatureSchemeDefault is the default Signature.Scheme.
	SignatureSchemeDefault = SignatureSHA256
	// SignatureHeaderSHA256 is the default Signature.Header of the sha256
	// scheme.
	SignatureHeaderSHA256 = "X-Hub-Signature-256"
	// SignatureHeaderStripe is the default Signature.Header of the stripe
	// scheme.
	SignatureHeaderStripe = "Stripe-Signature"
	// ToleranceDefault is the default Signature.Tolerance.
	ToleranceDefault = Duration(5 * time.Minute)
	// ToleranceMin is the smallest Signature.Tolerance.
	ToleranceMin = Duration(time.Second)
	// ToleranceMax is the largest Signature.Tolerance.
	ToleranceMax = Duration(24 * time.Hour)

	// ObjectModePoll lists the bucket every PollInterval.
	ObjectModePoll = "poll"
	// ObjectModeNotify takes bucket-notification requests on a hook path.
	ObjectModeNotify = "notify"
	// ObjectModeDefault is the default ObjectStoreTrigger.Mode.
	ObjectModeDefault = ObjectModePoll
	// ObjectCreated is an object created or overwritten.
	ObjectCreated = "created"
	// ObjectDeleted is an object deleted.
	ObjectDeleted = "deleted"
	// PollIntervalDefault is the default ObjectStoreTrigger.PollInterval.
	PollIntervalDefault = Duration(30 * time.Second)
	// PollIntervalMin is the smallest ObjectStoreTrigger.PollInterval.
	PollIntervalMin = Duration(time.Second)
	// ExistingSkip records the objects found by the first poll without
	// events.
	ExistingSkip = "skip"
	// ExistingEmit makes the first poll emit a created event per object.
	ExistingEmit = "emit"
	// ExistingDefault is the default ObjectStoreTrigger.Existing.
	ExistingDefault = ExistingSkip
	// AccessKeyEnvDefault is the default ObjectStoreTrigger.AccessKeyEnv.
	AccessKeyEnvDefault = "AWS_ACCESS_KEY_ID"
	// SecretKeyEnvDefault is the default ObjectStoreTrigger.SecretKeyEnv.
	SecretKeyEnvDefault = "AWS_SECRET_ACCESS_KEY"
	// HookPathPrefix is where webhook paths are served: /hooks/<path>.
	HookPathPrefix = "/hooks/"
)

// Trigger turns something outside into events of its tenant: a schedule, a
// webhook request or object-store changes. Exactly one of Cron, HTTP and
// ObjectStore is set.
type Trigger struct {
	// Name identifies the trigger. Required, unique, matching
	// ^[a-z0-9][a-z0-9._-]{0,63}$. It names the trigger's state in Redis
	// and starts the ids of cron events.
	Name string `yaml:"name"`
	// Tenant owns the events. Default: DefaultTenant when no tenants are
	// configured; otherwise required, naming a configured tenant.
	Tenant string `yaml:"tenant"`
	// Cron fires on a schedule. Default nil.
	Cron *CronTrigger `yaml:"cron"`
	// HTTP fires on a webhook request. Default nil.
	HTTP *HTTPTrigger `yaml:"http"`
	// ObjectStore fires when objects of a bucket are created, overwritten
	// or deleted. Default nil.
	ObjectStore *ObjectStoreTrigger `yaml:"objectstore"`
	// Event is the event the trigger emits.
	Event TriggerEvent `yaml:"event"`
}

// CronTrigger fires on a schedule. Each fire is one event whose id is
// "<trigger name>/<scheduled time, RFC 3339 in UTC>", so a fire submitted
// twice is deduplicated.
type CronTrigger struct {
	// Schedule is a standard 5-field cron expression ("0 2 * * *") or a
	// descriptor (@hourly, @daily, "@every 30s", ...). Required; see
	// [ParseCronSchedule].
	Schedule string `yaml:"schedule"`
	// Timezone is the IANA zone the expression is read in. Default "UTC".
	Timezone string `yaml:"timezone"`
	// Missed says what happens to fires missed while no replica ran the
	// schedule (found more than a grace period late): "skip" (default)
	// drops them, "catch_up" fires them late, at most MaxCatchUp of them
	// (the most recent).
	Missed string `yaml:"missed"`
	// MaxCatchUp bounds the missed fires made up at once with catch_up.
	// Default 10, range 1..1000.
	MaxCatchUp int `yaml:"max_catch_up"`
}

// HTTPTrigger fires on a POST to /hooks/<path>: the raw body becomes the
// event's data and the request's Content-Type its datacontenttype.
type HTTPTrigger struct {
	// Path is served at /hooks/<path>. Required, unique among hook paths;
	// segments of letters, digits, '.', '_', '~' and '-', separated by '/'.
	Path string `yaml:"path"`
	// IDHeader names a request header carrying a delivery id (e.g.
	// X-GitHub-Delivery); when the request has it, it is the event id, so a
	// provider's retry is deduplicated. Default none: a new id per request.
	IDHeader string `yaml:"id_header"`
	// Signature, when set, requires every request to carry a valid
	// HMAC-SHA256 signature; other requests are refused with 401 and nothing
	// is queued. Default nil: no check (anyone who can reach the path can
	// submit).
	Signature *Signature `yaml:"signature"`
}

// Signature configures the HMAC-SHA256 check of a webhook.
type Signature struct {
	// Scheme is "sha256" (default: header "sha256=<hex>", GitHub style) or
	// "stripe" (header "t=<unix>,v1=<hex>").
	Scheme string `yaml:"scheme"`
	// Header carries the signature. Default X-Hub-Signature-256 (sha256) or
	// Stripe-Signature (stripe).
	Header string `yaml:"header"`
	// TimestampHeader, with the sha256 scheme only, names a header carrying
	// the Unix time of the request: the signature then covers
	// "<timestamp>.<body>" and requests outside Tolerance are refused.
	// Default none: the signature covers the body alone.
	TimestampHeader string `yaml:"timestamp_header"`
	// SecretEnv names the environment variable holding the shared secret.
	// Required; the variable must be set and non-empty when the trigger
	// starts.
	SecretEnv string `yaml:"secret_env"`
	// Tolerance is how far a signed timestamp may be from the server's
	// clock, and how long an accepted signature (or delivery id) is
	// remembered to refuse replays: twice Tolerance. Default 5m, range
	// 1s..24h.
	Tolerance Duration `yaml:"tolerance"`
}

// ObjectStoreTrigger fires on changes to the objects of an S3-compatible
// bucket (AWS S3, MinIO, Ceph, ...). Events carry the object's key, size
// and ETag and a dataref (s3://bucket/key), never the object itself. Their
// type is Event.Type + ".created" or ".deleted".
type ObjectStoreTrigger struct {
	// Mode is "poll" (default: list the bucket every PollInterval) or
	// "notify" (take S3/MinIO bucket-notification JSON at /hooks/<path>).
	Mode string `yaml:"mode"`
	// Endpoint is the store's URL, e.g. "https://s3.amazonaws.com" or
	// "http://127.0.0.1:9000" (no path). Required in poll mode; not used in
	// notify mode.
	Endpoint string `yaml:"endpoint"`
	// Region is the bucket's region. Default: found by the client.
	Region string `yaml:"region"`
	// Bucket is the bucket watched. Required; 3-63 lowercase letters,
	// digits, '.', '_' or '-'.
	Bucket string `yaml:"bucket"`
	// Prefix, when set, limits the trigger to keys starting with it.
	Prefix string `yaml:"prefix"`
	// Suffix, when set, limits the trigger to keys ending with it (e.g.
	// ".jpg").
	Suffix string `yaml:"suffix"`
	// Events are the changes that emit events: "created" (new or
	// overwritten objects) and "deleted". Default [created].
	Events []string `yaml:"events"`
	// PollInterval is the time between listings (poll mode). Default 30s,
	// at least 1s.
	PollInterval Duration `yaml:"poll_interval"`
	// Existing says what the first poll (no checkpoint yet) does with the
	// objects already there: "skip" (default) records them without events,
	// "emit" emits a created event for each (poll mode).
	Existing string `yaml:"existing"`
	// AccessKeyEnv and SecretKeyEnv name the environment variables holding
	// the credentials (poll mode). Default AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY; when the variables are empty, requests are
	// anonymous.
	AccessKeyEnv string `yaml:"access_key_env"`
	// SecretKeyEnv: see AccessKeyEnv.
	SecretKeyEnv string `yaml:"secret_key_env"`
	// Path is served at /hooks/<path> (notify mode). Required in notify
	// mode; unique among hook paths.
	Path string `yaml:"path"`
	// TokenEnv names the environment variable holding a token every
	// notification must carry as "Authorization: Bearer <token>" (notify
	// mode; the MinIO webhook target's auth_token). Default none: no check.
	TokenEnv string `yaml:"token_env"`
}

// TriggerEvent is the event a trigger emits.
type TriggerEvent struct {
	// Type is the CloudEvents type (for an object-store trigger, the prefix
	// of ".created" and ".deleted"). Required.
	Type string `yaml:"type"`
	// Source is the CloudEvents source. Required, except for object-store
	// triggers, where it defaults to "s3://<bucket>".
	Source string `yaml:"source"`
}

// Kind names the trigger's kind ("cron", "http" or "objectstore"), or ""
// when none is set.
func (t *Trigger) Kind() string {
	switch {
	case t.Cron != nil:
		return TriggerKindCron
	case t.HTTP != nil:
		return TriggerKindHTTP
	case t.ObjectStore != nil:
		return TriggerKindObjectStore
	}
	return ""
}

// TenantID is the tenant owning the trigger's events: Tenant, or
// DefaultTenant when it is empty (allowed only with no tenants configured).
func (t *Trigger) TenantID() string { return cmp.Or(t.Tenant, DefaultTenant) }

// HookPath is the path the trigger is served at under /hooks/, without
// surrounding slashes, or "" when it takes no requests (cron, and
// object-store triggers in poll mode).
func (t *Trigger) HookPath() string {
	switch {
	case t.HTTP != nil:
		return strings.Trim(t.HTTP.Path, "/")
	case t.ObjectStore != nil && t.ObjectStore.Mode == ObjectModeNotify:
		return strings.Trim(t.ObjectStore.Path, "/")
	}
	return ""
}

// withDefaults returns a deep copy of t with defaults applied.
func (t Trigger) withDefaults() Trigger {
	if t.Cron != nil {
		c := *t.Cron
		c.Timezone = cmp.Or(c.Timezone, TimezoneDefault)
		c.Missed = cmp.Or(c.Missed, MissedDefault)
		c.MaxCatchUp = cmp.Or(c.MaxCatchUp, MaxCatchUpDefault)
		t.Cron = &c
	}
	if t.HTTP != nil {
		h := *t.HTTP
		if h.Signature != nil {
			s := *h.Signature
			s.Scheme = cmp.Or(s.Scheme, SignatureSchemeDefault)
			switch s.Scheme {
			case SignatureSHA256:
				s.Header = cmp.Or(s.Header, SignatureHeaderSHA256)
			case SignatureStripe:
				s.Header = cmp.Or(s.Header, SignatureHeaderStripe)
			}
			s.Tolerance = cmp.Or(s.Tolerance, ToleranceDefault)
			h.Signature = &s
		}
		t.HTTP = &h
	}
	if t.ObjectStore != nil {
		o := *t.ObjectStore
		o.Events = slices.Clone(o.Events)
		if len(o.Events) == 0 {
			o.Events = []string{ObjectCreated}
		}
		o.Mode = cmp.Or(o.Mode, ObjectModeDefault)
		if o.Mode == ObjectModePoll {
			o.PollInterval = cmp.Or(o.PollInterval, PollIntervalDefault)
			o.Existing = cmp.Or(o.Existing, ExistingDefault)
			o.AccessKeyEnv = cmp.Or(o.AccessKeyEnv, AccessKeyEnvDefault)
			o.SecretKeyEnv = cmp.Or(o.SecretKeyEnv, SecretKeyEnvDefault)
		}
		if t.Event.Source == "" && o.Bucket != "" {
			t.Event.Source = "s3://" + o.Bucket
		}
		t.ObjectStore = &o
	}
	return t
}

var (
	triggerNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	hookPathRE    = regexp.MustCompile(`^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$`)
	envNameRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	headerNameRE  = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	bucketRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$`)
)

func (v *validator) triggers() {
	names := v.uniqueSet("trigger name")
	hookPaths := v.uniqueSet("hook path")
	tenants := v.c.TenantIDs()
	for i := range v.c.Triggers {
		t := &v.c.Triggers[i]
		path := fmt.Sprintf("triggers[%d]", i)
		switch {
		case t.Name == "":
			v.missing(path + ".name")
		case !triggerNameRE.MatchString(t.Name):
			v.add(path+".name", "invalid trigger name %q (want 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit)", t.Name)
		default:
			names.check(path+".name", t.Name)
		}

		switch {
		case t.Tenant == "" && len(v.c.Tenants) > 0:
			v.add(path+".tenant", "missing (required when tenants are configured)")
		case t.Tenant != "" && !slices.Contains(tenants, t.Tenant):
			v.add(path+".tenant", "unknown tenant %q (configured: %s)", t.Tenant, strings.Join(tenants, ", "))
		}

		var kinds []string
		for _, k := range []struct {
			name string
			set  bool
		}{{TriggerKindCron, t.Cron != nil}, {TriggerKindHTTP, t.HTTP != nil}, {TriggerKindObjectStore, t.ObjectStore != nil}} {
			if k.set {
				kinds = append(kinds, k.name)
			}
		}
		switch len(kinds) {
		case 0:
			v.add(path, "set exactly one of cron, http or objectstore")
		case 1:
			switch {
			case t.Cron != nil:
				v.cronTrigger(path+".cron", t.Cron)
			case t.HTTP != nil:
				v.httpTrigger(path+".http", t.HTTP)
			default:
				v.objectStoreTrigger(path+".objectstore", t.ObjectStore)
			}
			if hp := t.HookPath(); hp != "" {
				hookPaths.check(path+"."+kinds[0]+".path", hp)
			}
		default:
			v.add(path+"."+kinds[1], "set exactly one of cron, http or objectstore, not %s", strings.Join(kinds, " and "))
		}

		switch {
		case strings.TrimSpace(t.Event.Type) == "":
			v.missing(path + ".event.type")
		case strings.ContainsFunc(t.Event.Type, isSpaceOrControl):
			v.add(path+".event.type", "invalid event type %q (no white space or control characters)", t.Event.Type)
		}
		if strings.TrimSpace(t.Event.Source) == "" {
			v.missing(path + ".event.source")
		} else if _, err := url.Parse(t.Event.Source); err != nil || strings.ContainsFunc(t.Event.Source, isSpaceOrControl) {
			v.add(path+".event.source", "invalid source %q (want a URI reference, e.g. /hooks/signup or s3://bucket)", t.Event.Source)
		}
	}
}

func (v *validator) cronTrigger(path string, c *CronTrigger) {
	if c.Schedule == "" {
		v.missing(path + ".schedule")
	} else if _, err := ParseCronSchedule(c.Schedule); err != nil {
		v.add(path+".schedule", "%v", err)
	}
	if _, err := LoadTimezone(c.Timezone); err != nil {
		v.add(path+".timezone", "%v", err)
	}
	v.enum(path+".missed", c.Missed, MissedSkip, MissedCatchUp)
	v.intRange(path+".max_catch_up", int64(c.MaxCatchUp), MaxCatchUpMin, MaxCatchUpMax)
}

func (v *validator) httpTrigger(path string, h *HTTPTrigger) {
	v.hookPath(path+".path", h.Path)
	if h.IDHeader != "" {
		v.headerName(path+".id_header", h.IDHeader)
	}
	s := h.Signature
	if s == nil {
		return
	}
	sp := path + ".signature"
	v.enum(sp+".scheme", s.Scheme, SignatureSHA256, SignatureStripe)
	switch {
	case s.Header == "" && (s.Scheme == SignatureSHA256 || s.Scheme == SignatureStripe):
		v.missing(sp + ".header")
	case s.Header != "":
		v.headerName(sp+".header", s.Header)
	}
	if s.TimestampHeader != "" {
		if s.Scheme == SignatureStripe {
			v.add(sp+".timestamp_header", "not used with scheme stripe (its header carries the timestamp)")
		} else {
			v.headerName(sp+".timestamp_header", s.TimestampHeader)
		}
	}
	v.envName(sp+".secret_env", s.SecretEnv, true)
	if s.Tolerance < ToleranceMin || s.Tolerance > ToleranceMax {
		v.add(sp+".tolerance", "must be between %s and %s, got %s", ToleranceMin, ToleranceMax, s.Tolerance)
	}
}

func (v *validator) objectStoreTrigger(path string, o *ObjectStoreTrigger) {
	v.enum(path+".mode", o.Mode, ObjectModePoll, ObjectModeNotify)
	switch {
	case o.Bucket == "":
		v.missing(path + ".bucket")
	case !bucketRE.MatchString(o.Bucket) || strings.Contains(o.Bucket, ".."):
		v.add(path+".bucket", "invalid bucket name %q (want 3-63 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit)", o.Bucket)
	}
	seen := map[string]bool{}
	for j, e := range o.Events {
		ep := fmt.Sprintf("%s.events[%d]", path, j)
		switch {
		case e != ObjectCreated && e != ObjectDeleted:
			v.add(ep, "invalid value %q (allowed: %s, %s)", e, ObjectCreated, ObjectDeleted)
		case seen[e]:
			v.add(ep, "duplicate event %q", e)
		}
		seen[e] = true
	}
	// Keys of the other mode are mistakes: say so rather than ignore them.
	notUsed := func(key string, set bool, mode string) {
		if set {
			v.add(path+"."+key, "only used with mode %s", mode)
		}
	}
	switch o.Mode {
	case ObjectModePoll:
		if o.Endpoint == "" {
			v.missing(path + ".endpoint")
		} else if msg := checkEndpointURL(o.Endpoint); msg != "" {
			v.add(path+".endpoint", "%s", msg)
		}
		if o.PollInterval < PollIntervalMin {
			v.add(path+".poll_interval", "must be at least %s, got %s", PollIntervalMin, o.PollInterval)
		}
		v.enum(path+".existing", o.Existing, ExistingSkip, ExistingEmit)
		v.envName(path+".access_key_env", o.AccessKeyEnv, true)
		v.envName(path+".secret_key_env", o.SecretKeyEnv, true)
		notUsed("path", o.Path != "", ObjectModeNotify)
		notUsed("token_env", o.TokenEnv != "", ObjectModeNotify)
	case ObjectModeNotify:
		v.hookPath(path+".path", o.Path)
		v.envName(path+".token_env", o.TokenEnv, false)
		notUsed("endpoint", o.Endpoint != "", ObjectModePoll)
		notUsed("region", o.Region != "", ObjectModePoll)
		notUsed("poll_interval", o.PollInterval != 0, ObjectModePoll)
		notUsed("existing", o.Existing != "", ObjectModePoll)
		notUsed("access_key_env", o.AccessKeyEnv != "", ObjectModePoll)
		notUsed("secret_key_env", o.SecretKeyEnv != "", ObjectModePoll)
	}
}

func (v *validator) hookPath(path, p string) {
	trimmed := strings.Trim(p, "/")
	switch {
	case trimmed == "":
		v.missing(path)
	case !hookPathRE.MatchString(trimmed) || slices.ContainsFunc(strings.Split(trimmed, "/"), func(s string) bool { return s == "." || s == ".." }):
		v.add(path, "invalid hook path %q (want segments of letters, digits, '.', '_', '~' or '-' separated by '/', e.g. github/push)", p)
	}
}

func (v *validator) headerName(path, h string) {
	if !headerNameRE.MatchString(h) {
		v.add(path, "invalid header name %q", h)
	}
}

// envName checks the name of an environment variable; the variable itself
// is read only when the trigger starts.
func (v *validator) envName(path, name string, required bool) {
	switch {
	case name == "" && required:
		v.missing(path)
	case name != "" && !envNameRE.MatchString(name):
		v.add(path, "invalid environment variable name %q (want letters, digits and '_', not starting with a digit)", name)
	}
}

// checkEndpointURL checks an object-store endpoint: http(s), a host, no
// path.
func checkEndpointURL(raw string) string {
	const example = "http://127.0.0.1:9000"
	if msg := checkURL(raw, example, "http", "https"); msg != "" {
		return msg
	}
	u, _ := url.Parse(raw) // checkURL parsed it
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
		return fmt.Sprintf("an endpoint is scheme://host[:port] only, without path, query or credentials (want e.g. %s)", example)
	}
	return ""
}

func isSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// CheckTriggerEnv reports the environment variables the triggers need that
// getenv finds empty: a signature's secret_env, and a notify trigger's
// token_env when one is named (an empty token would turn the check off).
// Such a trigger cannot start. Each error names file, line and field, as
// validation errors do. Credentials of poll triggers are optional (empty
// means anonymous requests) and not reported.
func (c *Config) CheckTriggerEnv(getenv func(string) string) error {
	v := &validator{c: c}
	for i := range c.Triggers {
		t := &c.Triggers[i]
		path := fmt.Sprintf("triggers[%d]", i)
		if t.HTTP != nil && t.HTTP.Signature != nil && t.HTTP.Signature.SecretEnv != "" && getenv(t.HTTP.Signature.SecretEnv) == "" {
			v.add(path+".http.signature.secret_env", "environment variable %s is not set (it holds the webhook's signing secret)", t.HTTP.Signature.SecretEnv)
		}
		if o := t.ObjectStore; o != nil && o.Mode == ObjectModeNotify && o.TokenEnv != "" && getenv(o.TokenEnv) == "" {
			v.add(path+".objectstore.token_env", "environment variable %s is not set (it holds the notification token)", o.TokenEnv)
		}
	}
	return joinErrors(v.errs, 0)
}
