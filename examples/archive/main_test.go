package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/services/notifier"
)

// post sends e the way the notifier sends a sink its result (binary mode).
func post(t *testing.T, url string, task contracts.Task) int {
	t.Helper()
	e, err := notifier.ResultEvent(&task)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, url, nil)
	require.NoError(t, err)
	require.NoError(t, cehttp.WriteRequest(t.Context(), binding.ToMessage(e), req))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp.StatusCode
}

// Each result becomes a line of its tenant's file of the day it finished,
// with the whole record; what is not a result is refused, not retried.
func TestArchiveWritesAJSONLinePerResult(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := httptest.NewServer(&Archive{Dir: dir})
	t.Cleanup(srv.Close)

	fin := time.Date(2026, 12, 5, 1, 2, 3, 0, time.UTC)
	task := contracts.Task{ID: "t1", Tenant: "acme", Function: "resize", State: contracts.StateSucceeded,
		Attempts: 1, CreatedAt: fin.Add(-time.Second), FinishedAt: &fin, Result: json.RawMessage(`{"ok":true}`)}
	require.Equal(t, http.StatusNoContent, post(t, srv.URL, task))
	task.ID, task.State, task.Error = "t2", contracts.StateDead, "boom"
	require.Equal(t, http.StatusNoContent, post(t, srv.URL, task))

	f, err := os.Open(filepath.Join(dir, "acme", "2026-12-05.jsonl"))
	require.NoError(t, err)
	defer f.Close()
	var lines []Line
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l Line
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l))
		lines = append(lines, l)
	}
	require.Len(t, lines, 2)
	require.Equal(t, "t1.succeeded", lines[0].ID)
	require.Equal(t, contracts.StateSucceeded.ResultType(), lines[0].Type)
	require.True(t, fin.Equal(lines[0].Time))
	var got contracts.Task
	require.NoError(t, json.Unmarshal(lines[0].Task, &got))
	require.Equal(t, "resize", got.Function)
	require.JSONEq(t, `{"ok":true}`, string(got.Result))
	require.Equal(t, "t2.dead", lines[1].ID)

	task.Tenant = "../etc"
	require.Equal(t, http.StatusBadRequest, post(t, srv.URL, task), "a tenant id is never a path")
	resp, err := http.Post(srv.URL, "application/json", nil)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}
