package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
)

// `jobs get` shows a job; --wait polls it to its end with progress on
// stderr, and a failed job exits non-zero after it is shown; an unknown id
// is the server's 404.
func TestJobsGet(t *testing.T) {
	t.Parallel()
	var reads atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/jobs/J1":
			// Running for two reads, then done.
			if reads.Add(1) <= 2 {
				_, _ = io.WriteString(w, `{"id":"J1","kind":"cancel","state":"running","matched":12000,"done":5000,"errors":0,"started_at":"2026-12-05T04:00:00Z"}`)
				return
			}
			_, _ = io.WriteString(w, `{"id":"J1","kind":"cancel","state":"succeeded","matched":24000,"done":23990,"errors":1,"resumed":1,"started_at":"2026-12-05T04:00:00Z","finished_at":"2026-12-05T04:00:03.5Z"}`)
		case "/v1/jobs/J2":
			_, _ = io.WriteString(w, `{"id":"J2","kind":"dlq_purge","state":"failed","matched":100,"done":40,"errors":5,"started_at":"2026-12-05T04:00:00Z","finished_at":"2026-12-05T04:01:00Z","error":"redis: connection refused"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"error":"no job with this id"}`)
		}
	}))
	t.Cleanup(srv.Close)
	run := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := Run(nil, append(args, "--server", srv.URL, "--key", "k"), &out, &errOut)
		return out.String(), errOut.String(), code
	}

	out, _, code := run("jobs", "get", "J1")
	require.Equal(t, ExitOK, code)
	require.Contains(t, out, "state:    running")
	require.Contains(t, out, "matched:  12000")

	out, errOut, code := run("jobs", "get", "J1", "--wait")
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, errOut, "... job J1: 12000 matched, 5000 done so far")
	require.Contains(t, out, "state:        succeeded")
	require.Contains(t, out, "done:         23990")
	require.Contains(t, out, "resumed:      1 times")
	require.Contains(t, out, "finished:     2026-12-05T04:00:03Z (3.5s)")

	out, errOut, code = run("jobs", "get", "J2", "--wait", "--json")
	require.Equal(t, ExitError, code)
	var j contracts.Job
	require.NoError(t, json.Unmarshal([]byte(out), &j), out)
	require.Equal(t, contracts.JobState("failed"), j.State)
	require.Contains(t, errOut, "redis: connection refused")

	_, errOut, code = run("jobs", "get", "nope")
	require.Equal(t, ExitError, code)
	require.Contains(t, errOut, "no job with this id")

	_, errOut, code = run("jobs", "list")
	require.NotEqual(t, ExitOK, code)
	require.Contains(t, errOut, "unknown")
}
