// Package examples_test checks the documented Docker-free path of
// examples/triggers.yaml: MinIO's notification body in
// examples/minio-notification.json, POSTed to the notify trigger, makes a
// task of the log function.
package examples_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/tasklane"
)

// TestTriggersExampleNotifyWithoutDocker follows the commands at the top of
// examples/triggers.yaml: dev mode on that file, then the sample body.
func TestTriggersExampleNotifyWithoutDocker(t *testing.T) {
	t.Setenv("GITHUB_WEBHOOK_SECRET", "change-me")
	t.Setenv("MINIO_WEBHOOK_TOKEN", "change-me-too")
	// As documented: no S3 credentials (the poll trigger just fails to poll).
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		t.Setenv(k, "") // restored at cleanup
		require.NoError(t, os.Unsetenv(k))
	}
	cfg, err := config.Load("triggers.yaml")
	require.NoError(t, err)
	cfg.Server.Addr = "127.0.0.1:0"
	stop, err := tasklane.UseEmbeddedStore(cfg)
	require.NoError(t, err)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app, err := tasklane.Start(ctx, cfg, tasklane.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	defer func() { require.NoError(t, app.Shutdown(context.Background())) }()

	body, err := os.ReadFile("minio-notification.json")
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, app.URL()+"/hooks/minio/documents", strings.NewReader(string(body)))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer change-me-too")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var sr contracts.SubmitResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&sr))
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Len(t, sr.Tasks, 1)
	require.Equal(t, "log", sr.Tasks[0].Function)

	var task contracts.Task
	testkit.Eventually(t, 20*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, app.URL()+"/v1/tasks/"+sr.Tasks[0].ID, nil)
		req.Header.Set("Authorization", "Bearer acme-dev-key")
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer r.Body.Close()
		return json.NewDecoder(r.Body).Decode(&task) == nil && task.State == contracts.StateSucceeded
	}, "task %s succeeded (state %q)", sr.Tasks[0].ID, task.State)
	require.Equal(t, "com.example.document.created", task.Event.Type)
	var obj struct{ Bucket, Key string }
	require.NoError(t, json.Unmarshal(task.Result, &obj))
	require.Equal(t, "documents", obj.Bucket)
	require.Equal(t, "report.txt", obj.Key)
}
