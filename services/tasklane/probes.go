package tasklane

import (
	"context"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tasklane/tasklane/pkg/buildinfo"
	"github.com/tasklane/tasklane/services/gateway"
)

// registerProbes mounts /healthz (the process is up), /readyz (Redis and the
// broker answer, the lanes are declared and the roles run) and /metrics on
// server.addr, whatever the roles. /healthz and /readyz need no key.
// /metrics shows every tenant's id and volume, so it is guarded like the
// admin API: open in dev (no tenants, no admin keys), an admin key once
// server.admin_keys is set, and off when tenants are configured without
// admin keys (server.metrics_addr serves it without a key on an internal
// address).
func (a *App) registerProbes(mux *http.ServeMux) error {
	mux.HandleFunc("GET /healthz", a.handleHealthz)
	mux.HandleFunc("GET /readyz", a.handleReadyz)
	kr, err := a.adminKeyring()
	if err != nil {
		return err
	}
	metricsHandler := a.metricsHandler()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if kr == nil {
			gateway.WriteError(w, http.StatusForbidden, "/metrics is off on server.addr: set server.admin_keys (and send one as a Bearer key) or serve it on server.metrics_addr")
			return
		}
		if _, err := kr.Authenticate(r); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tasklane-admin"`)
			gateway.WriteError(w, http.StatusUnauthorized, "/metrics needs an admin key: "+err.Error())
			return
		}
		metricsHandler.ServeHTTP(w, r)
	})
	if a.opts.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return nil
}

// registerInternal mounts what server.metrics_addr serves, without a key:
// /metrics, /healthz and /readyz.
func (a *App) registerInternal(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", a.handleHealthz)
	mux.HandleFunc("GET /readyz", a.handleReadyz)
	mux.Handle("GET /metrics", a.metricsHandler())
}

func (a *App) metricsHandler() http.Handler {
	return promhttp.HandlerFor(a.metrics.Registry, promhttp.HandlerOpts{Registry: a.metrics.Registry})
}

// metricsAddr is where server.metrics_addr listens, or "".
func (a *App) metricsAddr() string {
	if a.metricsLn == nil {
		return ""
	}
	return a.metricsLn.Addr().String()
}

// handleHealthz answers 200 while the process runs, also while it waits for
// its services; 503 once the start-up gave up (the process should be
// restarted). Both say the binary's version.
func (a *App) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	version := buildinfo.Read().Version
	select {
	case <-a.failed:
		gateway.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "failed", "error": a.startErr.Error(), "version": version})
	default:
		gateway.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": version})
	}
}

// handleReadyz answers 200 when every check is "ok", 503 with the reason of
// each that is not: while starting, what the start-up waits for; after,
// whether Redis and the broker answer now.
func (a *App) handleReadyz(w http.ResponseWriter, r *http.Request) {
	select {
	case <-a.ready:
	default:
		gateway.WriteJSON(w, http.StatusServiceUnavailable, a.status.snapshot())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{statusRedis: "ok", statusBroker: "ok", statusLanes: "ok", statusReady: "ok"}
	status := http.StatusOK
	if err := a.rdb.Ping(ctx).Err(); err != nil {
		checks[statusRedis], status = err.Error(), http.StatusServiceUnavailable
	}
	if err := a.driver.Ping(ctx); err != nil {
		checks[statusBroker], status = err.Error(), http.StatusServiceUnavailable
	}
	gateway.WriteJSON(w, status, checks)
}
