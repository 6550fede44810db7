// Command archive is an example result sink that keeps task history
// outside Redis. Tasklane keeps a finished task's record for
// ledger.retention only (24h by default); every result event carries the
// whole record, so a subscription whose sink is this server archives each
// one as a JSON line in <dir>/<tenant>/<yyyy-mm-dd>.jsonl (the day the task
// finished, UTC), for as long as the files are kept.
//
//	go run ./examples/archive -dir /var/lib/tasklane-archive   # listens on :9100
//
// with, in Tasklane's config:
//
//	subscriptions:
//	  - {name: archive, sink: "http://127.0.0.1:9100/results"}
//
// Each line is {"id": <result event id>, "type": <result type>, "time":
// <finished>, "task": <the task record>}. A line is written and synced
// before the answer is 204, so an accepted result is on disk; results are
// delivered at least once, so a line may repeat: readers deduplicate on
// "id" (the task id, its outcome and its redrive count). An event that is
// not a Tasklane result is refused with 400 (not retried).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/tasklane/tasklane/contracts"
)

func main() {
	addr := flag.String("addr", envOr("ARCHIVE_ADDR", ":9100"), "listen address (env ARCHIVE_ADDR)")
	dir := flag.String("dir", envOr("ARCHIVE_DIR", "archive"), "directory of the archive (env ARCHIVE_DIR)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &Archive{Dir: *dir}
	srv := &http.Server{Addr: *addr, Handler: a, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	slog.Info("archiving result events", "addr", *addr, "dir", *dir)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "archive:", err)
		os.Exit(1)
	}
}

// Line is one archived result.
type Line struct {
	ID   string          `json:"id"`
	Type string          `json:"type"`
	Time time.Time       `json:"time"`
	Task json.RawMessage `json:"task"`
}

// Archive is the sink: an http.Handler that appends each result event it
// is posted to its tenant's file of the day.
type Archive struct {
	// Dir is the archive's root directory.
	Dir string

	mu sync.Mutex // one append at a time: lines never interleave
}

// safeName is what a tenant id may be to name a directory (Tasklane's
// tenant ids are letters, digits, '-', '_' and '.'; anything else is
// refused rather than trusted as a path).
var safeName = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$`)

// ServeHTTP archives one result event.
func (a *Archive) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST a result event", http.StatusMethodNotAllowed)
		return
	}
	ev, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		http.Error(w, "not a CloudEvent: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !strings.HasPrefix(ev.Type(), contracts.ResultTypePrefix) {
		http.Error(w, "not a Tasklane result event: type "+ev.Type(), http.StatusBadRequest)
		return
	}
	var task contracts.Task
	if err := json.Unmarshal(ev.Data(), &task); err != nil || task.ID == "" {
		http.Error(w, "the event's data is not a task record", http.StatusBadRequest)
		return
	}
	if !safeName.MatchString(task.Tenant) {
		http.Error(w, "unusable tenant id", http.StatusBadRequest)
		return
	}
	at := ev.Time().UTC()
	if task.FinishedAt != nil {
		at = task.FinishedAt.UTC()
	}
	line, err := json.Marshal(Line{ID: ev.ID(), Type: ev.Type(), Time: at, Task: ev.Data()})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if err := a.append(filepath.Join(a.Dir, task.Tenant, at.Format(time.DateOnly)+".jsonl"), append(line, '\n')); err != nil {
		// 503: Tasklane retries the delivery.
		slog.Error("archiving a result", "event", ev.ID(), "error", err)
		http.Error(w, "archive unavailable", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// append writes line at the end of path and syncs it.
func (a *Archive) append(path string, line []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(line); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
