package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/triggers"
)

// fakeStates holds trigger records; it answers err when set.
type fakeStates struct {
	recs  map[string]triggers.Record
	err   error
	asked []string
}

func (f *fakeStates) Read(_ context.Context, names ...string) (map[string]triggers.Record, error) {
	f.asked = slices.Clone(names)
	out := map[string]triggers.Record{}
	for _, n := range names {
		out[n] = f.recs[n]
	}
	return out, f.err
}

// TestTriggerList: a tenant sees its own triggers, in config order, with
// their state (stopped when the heartbeat is stale), and only with its key.
func TestTriggerList(t *testing.T) {
	t.Parallel()
	kr, err := auth.NewKeyring(map[string][]string{"acme": {"acme-key-1"}, "globex": {"globex-key-1"}})
	require.NoError(t, err)
	now := time.Now().UTC().Truncate(time.Millisecond)
	states := &fakeStates{recs: map[string]triggers.Record{
		"nightly": {State: triggers.StateRunning, Owner: "w-1", Heartbeat: now, NextFire: now.Add(time.Hour), Fires: 41},
		"signup":  {Owner: "g-1", Heartbeat: now.Add(-triggers.StaleAfter - time.Second), NextFire: now, Fires: 3, LastError: "boom", LastErrorAt: now},
	}}
	specs := []config.Trigger{
		{Name: "nightly", Tenant: "acme", Cron: &config.CronTrigger{Schedule: "0 2 * * *", Timezone: "UTC"}, Event: config.TriggerEvent{Type: "com.example.nightly"}},
		{Name: "theirs", Tenant: "globex", HTTP: &config.HTTPTrigger{Path: "theirs"}, Event: config.TriggerEvent{Type: "com.example.theirs"}},
		{Name: "signup", Tenant: "acme", HTTP: &config.HTTPTrigger{Path: "/signup/"}, Event: config.TriggerEvent{Type: "com.example.signup"}},
		{Name: "images", Tenant: "acme", ObjectStore: &config.ObjectStoreTrigger{Mode: config.ObjectModePoll, Bucket: "img"}, Event: config.TriggerEvent{Type: "com.example.image"}},
	}
	mux := http.NewServeMux()
	NewTriggers(TriggersConfig{Keyring: kr, States: states, Specs: func() []config.Trigger { return specs }, Logger: slog.New(slog.DiscardHandler)}).Register(mux)

	w := serve(mux, http.MethodGet, "/v1/triggers", "acme-key-1", "")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	ts := func(t time.Time) string { return t.Format(time.RFC3339Nano) }
	require.JSONEq(t, `{"triggers":[
		{"name":"nightly","kind":"cron","tenant":"acme","schedule":"0 2 * * *","timezone":"UTC","event_type":"com.example.nightly",
		 "state":"running","owner":"w-1","heartbeat":"`+ts(now)+`","next_fire":"`+ts(now.Add(time.Hour))+`","fires":41},
		{"name":"signup","kind":"http","tenant":"acme","path":"/hooks/signup","event_type":"com.example.signup",
		 "state":"stopped","owner":"g-1","heartbeat":"`+ts(now.Add(-triggers.StaleAfter-time.Second))+`","fires":3,
		 "last_error":"boom","last_error_at":"`+ts(now)+`"},
		{"name":"images","kind":"objectstore","tenant":"acme","mode":"poll","bucket":"img","event_type":"com.example.image","state":"stopped","fires":0}
	]}`, w.Body.String())
	require.Equal(t, []string{"nightly", "signup", "images"}, states.asked, "only the tenant's triggers are read")

	w = serve(mux, http.MethodGet, "/v1/triggers", "", "")
	require.Equal(t, http.StatusUnauthorized, w.Code)
	require.Equal(t, `Bearer realm="tasklane"`, w.Header().Get("WWW-Authenticate"))

	states.err = errors.New("redis down")
	w = serve(mux, http.MethodGet, "/v1/triggers", "globex-key-1", "")
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.Equal(t, `{"error":"trigger state unavailable"}`+"\n", w.Body.String())
}
