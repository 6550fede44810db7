package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// Cross-checks between sections (what a trigger emits against what the
// functions take, go: endpoints against the registered handlers) and the
// warnings of risky but legal settings.

// maxListed bounds the names a message lists.
const maxListed = 10

// listNames joins names for a message, at most maxListed of them.
func listNames(names []string) string {
	if len(names) > maxListed {
		return strings.Join(names[:maxListed], ", ") + fmt.Sprintf(", ... (%d more)", len(names)-maxListed)
	}
	return strings.Join(names, ", ")
}

// suggest returns the name in known that name is likely a typo of, or "".
// It is stricter than closest for long names, whose distance allowance
// would otherwise admit unrelated names sharing a prefix.
func suggest(name string, known []string) string {
	best := closest(name, known)
	if best == "" || best == name {
		return ""
	}
	if editDistance(strings.ToLower(name), strings.ToLower(best)) > 3 && !strings.EqualFold(
		strings.NewReplacer("_", "", "-", "").Replace(name),
		strings.NewReplacer("_", "", "-", "").Replace(best)) {
		return ""
	}
	return best
}

// triggerTypes reports a trigger whose events no function takes: every such
// event would be refused at submission (422), so the trigger could never
// run anything.
func (v *validator) triggerTypes() {
	var known []string // event types the functions take, in config order
	for _, f := range v.c.Functions {
		for _, e := range f.Events {
			if !slices.Contains(known, e) {
				known = append(known, e)
			}
		}
	}
	for i := range v.c.Triggers {
		t := &v.c.Triggers[i]
		if strings.TrimSpace(t.Event.Type) == "" || strings.ContainsFunc(t.Event.Type, isSpaceOrControl) {
			continue // reported by triggers()
		}
		if t.Tenant != "" && !slices.Contains(v.c.TenantIDs(), t.Tenant) {
			continue // unknown tenant: reported by triggers()
		}
		if kinds := btoi(t.Cron != nil) + btoi(t.HTTP != nil) + btoi(t.ObjectStore != nil); kinds != 1 {
			continue // not exactly one kind: reported by triggers()
		}
		types := []string{t.Event.Type}
		if o := t.ObjectStore; o != nil {
			types = types[:0]
			for _, e := range o.Events {
				if e == ObjectCreated || e == ObjectDeleted {
					types = append(types, t.Event.Type+"."+e)
				}
			}
		}
		name := t.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		path := fmt.Sprintf("triggers[%d].event.type", i)
		for _, typ := range types {
			if len(v.c.FunctionsFor(t.TenantID(), typ)) > 0 {
				continue
			}
			msg := fmt.Sprintf("trigger %q emits event type %q, which no function takes", name, typ)
			if typ != t.Event.Type {
				msg += fmt.Sprintf(" (an objectstore trigger emits %s.<event>)", t.Event.Type)
			}
			var others []string // functions taking typ for other tenants only
			for _, f := range v.c.Functions {
				if slices.Contains(f.Events, typ) {
					others = append(others, f.Name)
				}
			}
			switch {
			case len(others) > 0:
				msg += fmt.Sprintf(" for tenant %q: function %s restricted to other tenants", t.TenantID(), listNames(others))
			case len(known) == 0:
				msg += ": no functions are configured"
			default:
				if best := suggest(typ, known); best != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", best)
				} else {
					msg += fmt.Sprintf(" (functions take: %s)", listNames(known))
				}
			}
			v.add(path, "%s", msg)
		}
	}
}

// CheckGoEndpoints reports each function whose endpoint is "go:<name>" with
// a name not among registered (the Go handlers of the binary that will run
// the config): its tasks could not run. Each error names file, line and
// field, as validation errors do.
func (c *Config) CheckGoEndpoints(registered []string) error {
	v := &validator{c: c}
	for i, f := range c.Functions {
		name, ok := strings.CutPrefix(f.Endpoint, EndpointGoPrefix)
		if !ok || slices.Contains(registered, name) {
			continue
		}
		path := fmt.Sprintf("functions[%d].endpoint", i)
		switch best := suggest(name, registered); {
		case len(registered) == 0:
			v.add(path, "no Go handler registered as %q (this binary registers none; go: endpoints need a binary built with pkg/sdk handlers)", name)
		case best != "":
			v.add(path, "no Go handler registered as %q (did you mean %q? registered: %s)", name, EndpointGoPrefix+best, listNames(registered))
		default:
			v.add(path, "no Go handler registered as %q (registered: %s)", name, listNames(registered))
		}
	}
	return joinErrors(v.errs, 0)
}

// Warnings reports settings that are legal but risky: no tenants (no
// authentication), no admin keys with tenants (admin API off), a function
// endpoint, sink or object-store endpoint addressed to a listen-all host
// (0.0.0.0, ::), webhooks anyone can call, flow-control limits that cannot
// act as written (adaptive.max above concurrency, reserved_high with no
// limited function). Each names file, line and field as errors do; nil when
// there are none. They do not stop Tasklane.
func (c *Config) Warnings() []*Error {
	v := &validator{c: c}
	if len(c.Tenants) == 0 {
		v.add("tenants", "no tenants configured: every API request is taken without authentication, as tenant %q, and the admin API is open (add tenants with api_keys before exposing %s)", DefaultTenant, c.Server.Addr)
	} else if len(c.Server.AdminKeys) == 0 {
		v.add("server.admin_keys", "no admin keys: the admin API (dead-letter queue, routing, triggers) is off, and so is /metrics on server.addr")
	}
	listenAll := func(path, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return // reported by Validate
		}
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
			v.add(path, "host %s is a listen-all address, not a destination: requests reach this machine only, if at all (use 127.0.0.1 or the target's host name)", u.Hostname())
		}
	}
	for i, f := range c.Functions {
		if strings.HasPrefix(f.Endpoint, "http://") || strings.HasPrefix(f.Endpoint, "https://") {
			listenAll(fmt.Sprintf("functions[%d].endpoint", i), f.Endpoint)
		}
	}
	for i, s := range c.Subscriptions {
		listenAll(fmt.Sprintf("subscriptions[%d].sink", i), s.Sink)
	}
	for i := range c.Triggers {
		t := &c.Triggers[i]
		path := fmt.Sprintf("triggers[%d]", i)
		switch {
		case t.HTTP != nil && t.HTTP.Signature == nil:
			v.add(path+".http", "no signature: anyone who can reach %s%s can submit events", HookPathPrefix, t.HookPath())
		case t.ObjectStore != nil && t.ObjectStore.Mode == ObjectModeNotify && t.ObjectStore.TokenEnv == "":
			v.add(path+".objectstore", "no token_env: anyone who can reach %s%s can submit notifications", HookPathPrefix, t.HookPath())
		case t.ObjectStore != nil && t.ObjectStore.Mode == ObjectModePoll && t.ObjectStore.Endpoint != "":
			listenAll(path+".objectstore.endpoint", t.ObjectStore.Endpoint)
		}
	}
	v.limitWarnings()
	slices.SortStableFunc(v.errs, func(a, b *Error) int {
		return compareLineCol(a.Line, a.Column, b.Line, b.Column)
	})
	return v.errs
}

// limitWarnings reports flow-control settings that cannot act as written:
// an adaptive range above the function's concurrency (the limit never
// exceeds concurrency) and a reserved_high with no limited function to
// reserve a share of.
func (v *validator) limitWarnings() {
	limited := false
	for i, f := range v.c.Functions {
		limited = limited || f.Concurrency > 0 || f.Adaptive != nil
		a := f.Adaptive
		if a == nil || f.Concurrency <= 0 || a.Max <= f.Concurrency {
			continue
		}
		path := fmt.Sprintf("functions[%d]", i)
		if a.Min >= f.Concurrency {
			v.add(path+".adaptive.min", "adaptive.min (%d) is not below concurrency (%d): the limit never exceeds concurrency, so it stays at %d and does not adapt (lower adaptive.min, or leave concurrency out)", a.Min, f.Concurrency, f.Concurrency)
			continue
		}
		v.add(path+".adaptive.max", "adaptive.max (%d) is above concurrency (%d): the limit never exceeds concurrency, so it adapts between %d and %d only", a.Max, f.Concurrency, a.Min, f.Concurrency)
	}
	if r := v.c.Dispatcher.ReservedHigh; r > 0 && !limited {
		v.add("dispatcher.reserved_high", "has no effect: it reserves a share of each limited function's slots, and no function has a concurrency or adaptive limit")
	}
}

// unknownFunction reports a reference to a function that is not configured.
func (v *validator) unknownFunction(path, name string) {
	names := make([]string, 0, len(v.c.Functions))
	for _, f := range v.c.Functions {
		if f.Name != "" {
			names = append(names, f.Name)
		}
	}
	switch best := suggest(name, names); {
	case len(names) == 0:
		v.add(path, "unknown function %q (no functions are configured)", name)
	case best != "":
		v.add(path, "unknown function %q (did you mean %q?)", name, best)
	default:
		v.add(path, "unknown function %q (configured: %s)", name, listNames(names))
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
