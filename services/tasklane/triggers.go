package tasklane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/triggers"
	"github.com/tasklane/tasklane/triggers/cron"
	"github.com/tasklane/tasklane/triggers/objectstore"
	"github.com/tasklane/tasklane/triggers/webhook"
)

// TriggerStopTimeout bounds the wait for one trigger's work in flight when
// it is stopped (config reload, shutdown): longer than a submission and the
// checkpoint after it, plus the lock release, so a stopping trigger is not
// cut off between the two (its successor would submit the events again:
// deduplicated, but counted as fired twice).
const TriggerStopTimeout = triggers.SubmitTimeout + triggers.CheckpointTimeout + 10*time.Second

// buildTrigger makes the trigger of spec; getenv reads the secrets and
// credentials the spec names. maxBody bounds a webhook body.
func buildTrigger(spec config.Trigger, env triggers.Env, getenv func(string) string, maxBody int64) (triggers.Trigger, error) {
	ev := spec.Event
	switch {
	case spec.Cron != nil:
		c := spec.Cron
		return cron.New(cron.Config{
			Name: spec.Name, Tenant: spec.TenantID(), Schedule: c.Schedule, Timezone: c.Timezone,
			Missed: c.Missed, MaxCatchUp: c.MaxCatchUp, EventType: ev.Type, EventSource: ev.Source,
		}, env)
	case spec.HTTP != nil:
		h := spec.HTTP
		cfg := webhook.Config{
			Name: spec.Name, Tenant: spec.TenantID(), Path: h.Path, EventType: ev.Type, EventSource: ev.Source,
			IDHeader: h.IDHeader, MaxBodyBytes: maxBody,
		}
		if s := h.Signature; s != nil {
			cfg.Signature = &webhook.Signature{
				Scheme: s.Scheme, Header: s.Header, TimestampHeader: s.TimestampHeader,
				Secret: []byte(getenv(s.SecretEnv)), Tolerance: s.Tolerance.Std(),
			}
		}
		return webhook.New(cfg, env)
	case spec.ObjectStore != nil:
		o := spec.ObjectStore
		common := objectstore.Common{
			Name: spec.Name, Tenant: spec.TenantID(), Bucket: o.Bucket, Prefix: o.Prefix, Suffix: o.Suffix,
			Events: o.Events, EventType: ev.Type, EventSource: ev.Source,
		}
		if o.Mode == config.ObjectModeNotify {
			cfg := objectstore.NotifyConfig{Common: common, Path: o.Path}
			if o.TokenEnv != "" {
				cfg.Token = getenv(o.TokenEnv)
			}
			return objectstore.NewNotifier(cfg, env)
		}
		return objectstore.NewPoller(objectstore.PollConfig{
			Common: common, Endpoint: o.Endpoint, Region: o.Region,
			AccessKey: getenv(o.AccessKeyEnv), SecretKey: getenv(o.SecretKeyEnv),
			PollInterval: o.PollInterval.Std(), Existing: o.Existing,
		}, env)
	}
	return nil, fmt.Errorf("trigger %s: no kind set", spec.Name)
}

// runsHere reports whether a process with roles runs spec: hooks (webhooks,
// object-store notify) wherever HTTP ingress is (the gateway or triggers
// role), schedules and polls with the triggers role only.
func runsHere(spec config.Trigger, roles map[string]bool) bool {
	if spec.HookPath() != "" {
		return roles[RoleGateway] || roles[RoleTriggers]
	}
	return roles[RoleTriggers]
}

// triggerSet runs a process's triggers and swaps them on a config reload.
type triggerSet struct {
	env     triggers.Env
	roles   map[string]bool
	getenv  func(string) string
	maxBody int64
	logger  *slog.Logger

	mu      sync.Mutex // serializes apply and stop
	running map[string]*runningTrigger
	routes  atomic.Pointer[map[string]*hookRoute] // hook path -> route

	// routeLoadedFunc, when set (tests), is called by ServeHTTP between
	// looking up a route and entering it.
	routeLoadedFunc func()
}

type runningTrigger struct {
	spec  config.Trigger
	t     triggers.Trigger
	route *hookRoute // for hooks
}

// hookRoute serves one hook and counts the requests it has in flight, so a
// replaced hook is stopped only after they are done. Once closed it takes
// no request: one that looked the route up before the swap looks again.
type hookRoute struct {
	hook triggers.Hook

	mu       sync.Mutex // orders enter against close (WaitGroup.Add from zero vs Wait)
	closed   bool
	inflight sync.WaitGroup
}

// enter counts a request in, unless the route is closed.
func (r *hookRoute) enter() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.inflight.Add(1)
	return true
}

// close takes no more requests and waits for those in flight, or ctx.
func (r *hookRoute) close(ctx context.Context) {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	waitGroup(ctx, &r.inflight)
}

func newTriggerSet(env triggers.Env, roles map[string]bool, getenv func(string) string, maxBody int64, logger *slog.Logger) *triggerSet {
	if ing, ok := env.Submitter.(*ingest.Ingester); ok {
		// Triggered events are bounded as POSTed ones are
		// (server.max_event_bytes: attributes, extensions and data).
		env.Submitter = ing.WithMaxEventBytes(maxBody)
	}
	s := &triggerSet{env: env, roles: roles, getenv: getenv, maxBody: maxBody, logger: logger, running: map[string]*runningTrigger{}}
	s.routes.Store(&map[string]*hookRoute{})
	return s
}

// ServeHTTP serves /hooks/<path>.
func (s *triggerSet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.Trim(strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(config.HookPathPrefix, "/")), "/")
	// A route is closed only after the routes without it are published,
	// so looking again finds its successor (or none); the bound is a
	// safeguard against reloads in a tight loop.
	for range 3 {
		route := (*s.routes.Load())[path]
		if route == nil {
			triggers.WriteError(w, http.StatusNotFound, "no trigger at "+config.HookPathPrefix+path)
			return
		}
		if s.routeLoadedFunc != nil {
			s.routeLoadedFunc()
		}
		if !route.enter() {
			continue
		}
		defer route.inflight.Done()
		route.hook.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Retry-After", "1")
	triggers.WriteError(w, http.StatusServiceUnavailable, "trigger at "+config.HookPathPrefix+path+" is being reloaded; retry")
}

// apply makes the running triggers those of specs this process runs.
// Unchanged triggers go on untouched; new and changed ones are built first
// (any error leaves everything as it was), hooks are switched over to their
// new version before the old one stops, and a stopped trigger finishes its
// work in flight (a submission, a request) before its successor starts.
func (s *triggerSet) apply(ctx context.Context, specs []config.Trigger) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := map[string]*runningTrigger{}
	var fresh []*runningTrigger
	var errs []error
	for _, spec := range specs {
		if !runsHere(spec, s.roles) {
			continue
		}
		if old := s.running[spec.Name]; old != nil && reflect.DeepEqual(old.spec, spec) {
			next[spec.Name] = old
			continue
		}
		t, err := buildTrigger(spec, s.env, s.getenv, s.maxBody)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rt := &runningTrigger{spec: spec, t: t}
		if h, ok := t.(triggers.Hook); ok {
			rt.route = &hookRoute{hook: h}
		}
		next[spec.Name] = rt
		fresh = append(fresh, rt)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("building triggers: %w", err)
	}

	// Hooks first: the new version takes requests before the old stops.
	for _, rt := range fresh {
		if rt.route != nil {
			if err := rt.t.Start(ctx); err != nil {
				return fmt.Errorf("starting trigger %s: %w", rt.spec.Name, err)
			}
		}
	}
	routes := map[string]*hookRoute{}
	for _, rt := range next {
		if rt.route != nil {
			routes[rt.route.hook.Path()] = rt.route
		}
	}
	s.routes.Store(&routes)

	var gone []*runningTrigger
	for name, rt := range s.running {
		if next[name] != rt {
			gone = append(gone, rt)
		}
	}
	stopErr := s.stopAll(gone)

	for _, rt := range fresh {
		if rt.route == nil {
			if err := rt.t.Start(ctx); err != nil {
				return fmt.Errorf("starting trigger %s: %w", rt.spec.Name, err)
			}
		}
	}
	s.running = next
	if len(fresh) > 0 || len(gone) > 0 {
		s.logger.InfoContext(ctx, "triggers applied", "running", len(next), "started", len(fresh), "stopped", len(gone))
	}
	return stopErr
}

// stopAll stops triggers in parallel, each waiting for its work in flight.
func (s *triggerSet) stopAll(list []*runningTrigger) error {
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, rt := range list {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), TriggerStopTimeout)
			defer cancel()
			if rt.route != nil {
				rt.route.close(ctx)
			}
			errs[i] = rt.t.Stop(ctx)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitGroup waits for wg or ctx.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// stop stops every trigger.
func (s *triggerSet) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routes.Store(&map[string]*hookRoute{})
	list := make([]*runningTrigger, 0, len(s.running))
	for _, rt := range s.running {
		list = append(list, rt)
	}
	s.running = map[string]*runningTrigger{}
	return s.stopAll(list)
}

// names lists the running triggers' names, sorted.
func (s *triggerSet) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.running))
	for n := range s.running {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// ReloadTriggers applies the triggers of cfg, a config read again (SIGHUP):
// unchanged triggers go on, changed ones are replaced and removed ones
// stopped, each finishing its work in flight. Other sections of cfg take
// effect only at a restart. On error the triggers running stay as they
// were.
func (a *App) ReloadTriggers(ctx context.Context, cfg *config.Config) error {
	a.trigMu.Lock() // before the start-up made the triggers, it applies these
	defer a.trigMu.Unlock()
	if a.opts.Roles[RoleGateway] || a.opts.Roles[RoleTriggers] {
		if err := cfg.CheckTriggerEnv(a.opts.Getenv); err != nil {
			return err
		}
	}
	if a.trig != nil {
		if err := a.trig.apply(ctx, cfg.Triggers); err != nil {
			return err
		}
	}
	specs := slices.Clone(cfg.Triggers)
	a.trigSpecs.Store(&specs)
	return nil
}

// Triggers lists the names of the triggers this process runs.
func (a *App) Triggers() []string {
	a.trigMu.Lock()
	defer a.trigMu.Unlock()
	if a.trig == nil {
		return nil
	}
	return a.trig.names()
}
