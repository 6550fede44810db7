package tasklane

import (
	"context"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tasklane/tasklane/services/gateway"
)

// registerProbes mounts /healthz (the process is up), /readyz (Redis and the
// broker answer and the lanes are declared) and /metrics on every process,
// whatever its roles.
func (a *App) registerProbes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		gateway.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		checks := map[string]string{"redis": "ok", "broker": "ok", "lanes": "ok"}
		status := http.StatusOK
		if err := a.rdb.Ping(ctx).Err(); err != nil {
			checks["redis"], status = err.Error(), http.StatusServiceUnavailable
		}
		if err := a.driver.Ping(ctx); err != nil {
			checks["broker"], status = err.Error(), http.StatusServiceUnavailable
		}
		select {
		case <-a.ready:
		default:
			checks["lanes"], status = "not declared yet", http.StatusServiceUnavailable
		}
		gateway.WriteJSON(w, status, checks)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.Registry, promhttp.HandlerOpts{Registry: a.metrics.Registry}))
	if a.opts.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}
