package gateway

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/triggers"
)

// TriggersRoute is the route Triggers.Register mounts.
const TriggersRoute = "GET /v1/triggers"

// TriggerStates reads triggers' state in Redis (*triggers.Store).
type TriggerStates interface {
	Read(ctx context.Context, names ...string) (map[string]triggers.Record, error)
}

// TriggersConfig configures the trigger list.
type TriggersConfig struct {
	// Keyring authenticates tenants' API keys.
	Keyring *auth.Keyring
	// States holds the triggers' state, written by whichever process runs
	// them.
	States TriggerStates
	// Specs returns the triggers of the config as last (re)loaded.
	Specs func() []config.Trigger
	// Logger receives the errors reading the state. Default
	// slog.Default().
	Logger *slog.Logger
}

// Triggers serves GET /v1/triggers: the caller's tenant's triggers with
// their state, read from Redis, so any gateway answers for triggers that
// other processes run.
type Triggers struct{ cfg TriggersConfig }

// NewTriggers returns the trigger list.
func NewTriggers(cfg TriggersConfig) *Triggers {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Triggers{cfg: cfg}
}

// Register mounts TriggersRoute on mux.
func (t *Triggers) Register(mux *http.ServeMux) { mux.HandleFunc(TriggersRoute, t.handleList) }

func (t *Triggers) handleList(w http.ResponseWriter, r *http.Request) {
	tenant, err := t.cfg.Keyring.Authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tasklane"`)
		WriteError(w, http.StatusUnauthorized, err.Error())
		return
	}
	views, err := triggerViews(r.Context(), t.cfg.States, t.cfg.Specs(), tenant, time.Now())
	if err != nil {
		t.cfg.Logger.ErrorContext(r.Context(), "reading trigger state", "error", err)
		WriteError(w, http.StatusServiceUnavailable, "trigger state unavailable")
		return
	}
	WriteJSON(w, http.StatusOK, contracts.TriggerList{Triggers: views})
}

// Views describes the tenant's triggers with their state, as GET
// /v1/triggers answers them (the dashboard, services/ui, shows them).
func (t *Triggers) Views(ctx context.Context, tenant string) ([]contracts.TriggerView, error) {
	return triggerViews(ctx, t.cfg.States, t.cfg.Specs(), tenant, time.Now())
}

// triggerViews describes the tenant's triggers of specs, in config order,
// with their state in states as of now.
func triggerViews(ctx context.Context, states TriggerStates, specs []config.Trigger, tenant string, now time.Time) ([]contracts.TriggerView, error) {
	var mine []config.Trigger
	for _, s := range specs {
		if s.TenantID() == tenant {
			mine = append(mine, s)
		}
	}
	names := make([]string, len(mine))
	for i, s := range mine {
		names[i] = s.Name
	}
	recs, err := states.Read(ctx, names...)
	if err != nil {
		return nil, err
	}
	out := make([]contracts.TriggerView, 0, len(mine))
	for _, s := range mine {
		rec := recs[s.Name]
		v := contracts.TriggerView{
			Name: s.Name, Kind: s.Kind(), Tenant: s.TenantID(), EventType: s.Event.Type, State: triggers.StateStopped,
			Owner: rec.Owner, Heartbeat: rec.Heartbeat, LastFire: rec.LastFire, LastEventID: rec.LastEventID,
			Fires: rec.Fires, LastError: rec.LastError, LastErrorAt: rec.LastErrorAt,
		}
		if rec.Fresh(now) {
			v.State, v.NextFire = cmp.Or(rec.State, triggers.StateRunning), rec.NextFire
		}
		switch {
		case s.Cron != nil:
			v.Schedule, v.Timezone = s.Cron.Schedule, s.Cron.Timezone
		case s.ObjectStore != nil:
			v.Mode, v.Bucket = s.ObjectStore.Mode, s.ObjectStore.Bucket
		}
		if p := s.HookPath(); p != "" {
			v.Path = config.HookPathPrefix + p
		}
		out = append(out, v)
	}
	return out, nil
}
