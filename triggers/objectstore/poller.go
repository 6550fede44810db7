package objectstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/triggers"
)

// Defaults of PollConfig.
const (
	// PollIntervalDefault is the default PollConfig.PollInterval.
	PollIntervalDefault = 30 * time.Second
	// BatchSizeDefault is the default PollConfig.BatchSize.
	BatchSizeDefault = 100
	// RetryEveryDefault is the default PollConfig.RetryEvery.
	RetryEveryDefault = time.Second
	// checkpointChunk bounds the fields of one checkpoint write.
	checkpointChunk = 500
)

// PollConfig configures a Poller.
type PollConfig struct {
	Common
	// Endpoint is the store's URL, http(s)://host[:port]. Required.
	Endpoint string
	// Region is the bucket's region. Default: asked of the store.
	Region string
	// AccessKey and SecretKey are the credentials; both empty means
	// anonymous requests.
	AccessKey string
	// SecretKey: see AccessKey.
	SecretKey string
	// PollInterval is the time between listings. Default 30s.
	PollInterval time.Duration
	// Existing is config.ExistingSkip (default: the first poll records the
	// objects without events) or config.ExistingEmit (it emits a created
	// event for each).
	Existing string
	// BatchSize bounds the events of one submission. Default 100.
	BatchSize int
	// LockTTL is the poll lock's time to live. Default
	// triggers.LockTTLDefault.
	LockTTL time.Duration
	// RetryEvery is the wait after a failed poll or submission, and between
	// attempts of a standby replica to take the lock. Default 1s.
	RetryEvery time.Duration
}

// Poller is an object-store trigger in poll mode.
type Poller struct {
	cfg    PollConfig
	env    triggers.Env
	client *minio.Client
	lock   *triggers.Lock
	rep    *triggers.Reporter
	keyObj string // checkpoint: key -> version
	keyMet string // checkpoint metadata: scope

	triggers.Background

	// While holding the lock: the checkpoint (nil until loaded) and
	// whether it was started for this scope.
	known     map[string]version
	baselined bool
}

// version is what the checkpoint keeps of an object.
type version struct {
	ETag string `json:"e"`
	Mod  int64  `json:"m"` // modification time, Unix ms
	Size int64  `json:"s"`
}

func (v version) id() string { return v.ETag + "@" + strconv.FormatInt(v.Mod, 10) }

// NewPoller returns a poll-mode trigger.
func NewPoller(cfg PollConfig, env triggers.Env) (*Poller, error) {
	env = env.WithDefaults()
	cfg.withDefaults()
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = PollIntervalDefault
	}
	if cfg.Existing == "" {
		cfg.Existing = config.ExistingDefault
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = BatchSizeDefault
	}
	if cfg.RetryEvery <= 0 {
		cfg.RetryEvery = RetryEveryDefault
	}
	errs := []error{cfg.validate(), env.Validate()}
	if cfg.Existing != config.ExistingSkip && cfg.Existing != config.ExistingEmit {
		errs = append(errs, fmt.Errorf("object-store trigger %s: invalid Existing %q", cfg.Name, cfg.Existing))
	}
	client, err := newClient(cfg)
	if err != nil {
		errs = append(errs, fmt.Errorf("object-store trigger %s: %w", cfg.Name, err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	env.Logger = env.Logger.With("component", "trigger", "trigger", cfg.Name, "kind", config.TriggerKindObjectStore, "bucket", cfg.Bucket)
	return &Poller{
		cfg: cfg, env: env, client: client,
		lock:   env.Store.Lock(cfg.Name, env.Owner, cfg.LockTTL),
		rep:    triggers.NewReporter(env, cfg.Name, config.TriggerKindObjectStore),
		keyObj: env.Store.Key(cfg.Name, "objects"),
		keyMet: env.Store.Key(cfg.Name, "objmeta"),

		Background: triggers.Background{What: "object-store trigger " + cfg.Name},
	}, nil
}

func newClient(cfg PollConfig) (*minio.Client, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("endpoint %q: want http(s)://host[:port]", cfg.Endpoint)
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:      credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:     u.Scheme == "https",
		Region:     cfg.Region,
		MaxRetries: 2, // the poll loop retries
	})
	if err != nil {
		return nil, fmt.Errorf("making the S3 client: %w", err)
	}
	return client, nil
}

// Name is the trigger's name.
func (p *Poller) Name() string { return p.cfg.Name }

// Kind is "objectstore".
func (p *Poller) Kind() string { return config.TriggerKindObjectStore }

// Status is the trigger's state in this process.
func (p *Poller) Status() triggers.Status { return p.rep.Status() }

// Start polls in the background: the replica that takes the lock polls,
// the others stand by. Stop stops polling (a listing in progress is
// abandoned; submissions in flight finish and are checkpointed) and
// releases the lock.
func (p *Poller) Start(ctx context.Context) error {
	p.rep.SetState(triggers.StateStandby)
	p.Go(ctx, p.run)
	return nil
}

func (p *Poller) run(ctx context.Context) {
	el := &triggers.Elected{
		Lock: p.lock, Reporter: p.rep, Logger: p.env.Logger, Retry: p.cfg.RetryEvery,
		Acquired: p.loadCheckpoint,
		Step: func(ctx context.Context) time.Duration {
			start := time.Now()
			wait := p.cfg.PollInterval
			if err := p.poll(ctx); err != nil {
				if ctx.Err() != nil {
					return 0
				}
				if errors.Is(err, triggers.ErrLockLost) {
					p.known = nil
					return 0
				}
				p.rep.Failed(ctx, "polling the bucket", err)
				wait = min(wait, p.cfg.RetryEvery)
			}
			wait -= time.Since(start)
			p.rep.SetNext(p.env.Now().Add(wait))
			return wait
		},
	}
	el.Run(ctx)
}

// scope identifies what a checkpoint is of; another endpoint, bucket,
// prefix or suffix starts afresh (per Existing), so objects that come into
// scope when the prefix or suffix widens are not taken for new ones. An
// empty prefix and suffix keep the scope of a checkpoint written before
// they were part of it.
func (p *Poller) scope() string {
	s := p.cfg.Endpoint + "|" + p.cfg.Bucket
	if p.cfg.Prefix != "" || p.cfg.Suffix != "" {
		s += "|prefix=" + strconv.Quote(p.cfg.Prefix) + "|suffix=" + strconv.Quote(p.cfg.Suffix)
	}
	return s
}

// loadCheckpoint reads the checkpoint: it may have moved while another
// replica held the lock.
func (p *Poller) loadCheckpoint(ctx context.Context) error {
	rdb := p.env.Store.Redis()
	scope, err := rdb.HGet(ctx, p.keyMet, "scope").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("reading checkpoint scope: %w", err)
	}
	h, err := rdb.HGetAll(ctx, p.keyObj).Result()
	if err != nil {
		return fmt.Errorf("reading checkpoint: %w", err)
	}
	p.known = make(map[string]version, len(h))
	for k, v := range h {
		var ver version
		if json.Unmarshal([]byte(v), &ver) == nil {
			p.known[k] = ver
		}
	}
	p.baselined = scope == p.scope()
	return nil
}

// poll lists the bucket once and submits the changes since the
// checkpoint.
func (p *Poller) poll(ctx context.Context) error {
	if p.known == nil {
		if err := p.loadCheckpoint(ctx); err != nil {
			return err
		}
	}
	listing := map[string]minio.ObjectInfo{}
	for obj := range p.client.ListObjects(ctx, p.cfg.Bucket, minio.ListObjectsOptions{Prefix: p.cfg.Prefix, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("listing bucket %s: %w", p.cfg.Bucket, obj.Err)
		}
		if p.cfg.matches(obj.Key) {
			listing[obj.Key] = obj
		}
	}

	if !p.baselined {
		if err := p.startCheckpoint(ctx, listing); err != nil {
			return err
		}
		if p.cfg.Existing == config.ExistingSkip {
			return nil
		}
	}

	var created, deleted, forget []string
	for k, obj := range listing {
		if v, ok := p.known[k]; !ok || v.ETag != obj.ETag {
			created = append(created, k)
		}
	}
	for k := range p.known {
		if _, ok := listing[k]; ok {
			continue
		}
		if p.cfg.matches(k) {
			deleted = append(deleted, k)
		} else {
			forget = append(forget, k) // out of a changed prefix/suffix: not a deletion
		}
	}
	slices.Sort(created)
	slices.Sort(deleted)
	if err := p.checkpoint(ctx, p.keyObj, nil, forget); err != nil {
		return err
	}
	for _, k := range forget {
		delete(p.known, k)
	}

	now := p.env.Now()
	for chunk := range slices.Chunk(created, p.cfg.BatchSize) {
		if err := ctx.Err(); err != nil {
			return err // stopping: submit nothing new
		}
		var events []*event.Event
		set := make([]string, 0, 2*len(chunk))
		vers := make([]version, len(chunk))
		for i, k := range chunk {
			obj := listing[k]
			vers[i] = version{ETag: obj.ETag, Mod: obj.LastModified.UnixMilli(), Size: obj.Size}
			b, _ := json.Marshal(vers[i])
			set = append(set, k, string(b))
			o := Object{Change: Created, Bucket: p.cfg.Bucket, Key: k, Size: obj.Size, ETag: obj.ETag, Time: obj.LastModified}
			events = append(events, p.cfg.cloudEvent(o, eventID(Created, p.cfg.Bucket, k, vers[i].id())))
		}
		if err := p.submit(ctx, Created, events); err != nil {
			return err
		}
		if err := p.checkpoint(ctx, p.keyObj, set, nil); err != nil {
			return err
		}
		for i, k := range chunk {
			p.known[k] = vers[i]
		}
	}
	for chunk := range slices.Chunk(deleted, p.cfg.BatchSize) {
		if err := ctx.Err(); err != nil {
			return err
		}
		var events []*event.Event
		for _, k := range chunk {
			v := p.known[k]
			o := Object{Change: Deleted, Bucket: p.cfg.Bucket, Key: k, Size: v.Size, ETag: v.ETag, Time: now}
			events = append(events, p.cfg.cloudEvent(o, eventID(Deleted, p.cfg.Bucket, k, v.id())))
		}
		if err := p.submit(ctx, Deleted, events); err != nil {
			return err
		}
		if err := p.checkpoint(ctx, p.keyObj, nil, chunk); err != nil {
			return err
		}
		for _, k := range chunk {
			delete(p.known, k)
		}
	}
	return nil
}

// checkpoint writes to the checkpoint under the lock. The write is not
// cancelled with ctx: a stopping trigger checkpoints what it submitted, so
// its successor does not submit it again.
func (p *Poller) checkpoint(ctx context.Context, key string, set, del []string) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), triggers.CheckpointTimeout)
	defer cancel()
	return p.lock.HashUpdate(wctx, key, set, del)
}

// startCheckpoint begins the checkpoint of this scope: with existing skip,
// the listing is recorded as seen; with emit, the checkpoint starts empty
// so the poll emits an event per object.
func (p *Poller) startCheckpoint(ctx context.Context, listing map[string]minio.ObjectInfo) error {
	old := make([]string, 0, len(p.known))
	for k := range p.known {
		old = append(old, k)
	}
	for chunk := range slices.Chunk(old, checkpointChunk) {
		if err := p.lock.HashUpdate(ctx, p.keyObj, nil, chunk); err != nil {
			return err
		}
	}
	p.known = map[string]version{}
	if p.cfg.Existing == config.ExistingSkip {
		keys := make([]string, 0, len(listing))
		for k := range listing {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for chunk := range slices.Chunk(keys, checkpointChunk) {
			set := make([]string, 0, 2*len(chunk))
			for _, k := range chunk {
				obj := listing[k]
				v := version{ETag: obj.ETag, Mod: obj.LastModified.UnixMilli(), Size: obj.Size}
				b, _ := json.Marshal(v)
				set = append(set, k, string(b))
				p.known[k] = v
			}
			if err := p.lock.HashUpdate(ctx, p.keyObj, set, nil); err != nil {
				return err
			}
		}
	}
	if err := p.lock.HashUpdate(ctx, p.keyMet, []string{"scope", p.scope()}, nil); err != nil {
		return err
	}
	p.baselined = true
	p.env.Logger.InfoContext(ctx, "started the checkpoint", "objects", len(listing), "existing", p.cfg.Existing)
	return nil
}

// submit sends one chunk of events of a change the trigger emits. A chunk
// the ingest path refuses for good is submitted event by event, so one bad
// object (a key that is not valid UTF-8, say) does not hold up the others;
// the refused ones are recorded and skipped.
func (p *Poller) submit(ctx context.Context, change string, events []*event.Event) error {
	if !p.cfg.wants(change) || len(events) == 0 {
		return nil
	}
	_, err := p.env.Submit(ctx, p.cfg.Tenant, events)
	switch {
	case err == nil:
		p.rep.Fired(ctx, events[len(events)-1].ID(), len(events))
		return nil
	case !triggers.IsPermanent(err):
		return err
	}
	for _, e := range events {
		if _, err := p.env.Submit(ctx, p.cfg.Tenant, []*event.Event{e}); err != nil {
			if !triggers.IsPermanent(err) {
				return err
			}
			p.rep.Failed(ctx, "the event of an object was refused; skipping it", fmt.Errorf("object %q: %w", e.Subject(), err))
			continue
		}
		p.rep.Fired(ctx, e.ID(), 1)
	}
	return nil
}
