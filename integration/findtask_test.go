//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/tasklane/cli"
)

// TestIntegrationFindTaskByEvent is the CloudEvents SDK user's path: Send
// drops the 202's body, so the task is found by the event id; a task that
// failed once and then succeeded shows no error; a raw POST's 202 names
// its one task in Location; a dead task's DLQ show (API and CLI) carries
// the event data.
func TestIntegrationFindTaskByEvent(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			var mu sync.Mutex
			calls := map[string]int{}
			fn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				id := r.Header.Get("Ce-Id")
				mu.Lock()
				calls[id]++
				n := calls[id]
				mu.Unlock()
				switch {
				case r.Header.Get("Ce-Type") == "com.example.broken":
					http.Error(w, "bad input", http.StatusBadRequest)
				case n == 1:
					http.Error(w, "first attempt fails", http.StatusInternalServerError)
				default:
					w.Header().Set("Content-Type", "application/json")
					_, _ = io.WriteString(w, `{"ok":true}`)
				}
			}))
			t.Cleanup(fn.Close)
			e := startTasklane(t, driver, fmt.Sprintf(`
functions:
  - {name: flaky, events: [com.example.flaky], endpoint: %q, retry: {max_attempts: 3, initial_backoff: 20ms, max_backoff: 50ms}}
  - {name: broken, events: [com.example.broken], endpoint: %q}
`, fn.URL, fn.URL))
			ctx := context.Background()
			client, err := cloudevents.NewClientHTTP(cehttp.WithTarget(e.app.URL() + "/v1/events"))
			require.NoError(t, err)
			send := func(id, typ string) {
				ev := cloudevents.NewEvent()
				ev.SetID(id)
				ev.SetSource("/sdk")
				ev.SetType(typ)
				require.NoError(t, ev.SetData(cloudevents.ApplicationJSON, map[string]string{"order": id}))
				require.True(t, cloudevents.IsACK(client.Send(ctx, ev)))
			}
			find := func(query string) []contracts.Task {
				status, body := e.get("/v1/tasks?"+query, "")
				require.Equal(t, http.StatusOK, status, string(body))
				var l contracts.TaskList
				require.NoError(t, json.Unmarshal(body, &l))
				return l.Tasks
			}

			send("sdk-1", "com.example.flaky")
			tasks := find("event_id=sdk-1")
			require.Len(t, tasks, 1)
			bySource := find("event_id=sdk-1&source=/sdk")
			require.Len(t, bySource, 1)
			require.Equal(t, tasks[0].ID, bySource[0].ID)
			require.Empty(t, find("event_id=sdk-1&source=/other"))
			id := tasks[0].ID
			var task contracts.Task
			testkit.Eventually(t, 30*time.Second, func() bool {
				task = find("event_id=sdk-1")[0]
				return task.State == contracts.StateSucceeded
			}, "task %s succeeded", id)
			require.Equal(t, 2, task.Attempts)
			require.Empty(t, task.Error, "the first attempt's error is not kept")

			// A raw POST's 202 names its one task.
			req, err := http.NewRequest(http.MethodPost, e.app.URL()+"/v1/events", bytes.NewReader([]byte(`{}`)))
			require.NoError(t, err)
			for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "raw-1", "Ce-Source": "/raw", "Ce-Type": "com.example.flaky", "Content-Type": "application/json"} {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			var sr contracts.SubmitResponse
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&sr))
			resp.Body.Close()
			require.Equal(t, http.StatusAccepted, resp.StatusCode)
			require.Equal(t, "/v1/tasks/"+sr.Tasks[0].ID, resp.Header.Get("Location"))
			status, _ := e.get(resp.Header.Get("Location"), "")
			require.Equal(t, http.StatusOK, status)

			send("sdk-2", "com.example.broken")
			dead := find("event_id=sdk-2&source=/sdk")
			require.Len(t, dead, 1)
			testkit.Eventually(t, 30*time.Second, func() bool {
				return find("event_id=sdk-2")[0].State == contracts.StateDead
			}, "task %s dead", dead[0].ID)
			status, body := e.get("/v1/dlq/"+dead[0].ID, "")
			require.Equal(t, http.StatusOK, status, string(body))
			var shown contracts.Task
			require.NoError(t, json.Unmarshal(body, &shown))
			require.JSONEq(t, `{"order":"sdk-2"}`, string(shown.EventData))

			var out bytes.Buffer
			cmd := cli.NewCommand(nil, &out, io.Discard)
			cmd.SetArgs([]string{"dlq", "show", dead[0].ID, "--server", e.app.URL()})
			require.NoError(t, cmd.Execute())
			require.Contains(t, out.String(), `event_data:    {"order":"sdk-2"}`, "the table shows the event data")
			out.Reset()
			cmd = cli.NewCommand(nil, &out, io.Discard)
			cmd.SetArgs([]string{"dlq", "show", dead[0].ID, "--server", e.app.URL(), "--json"})
			require.NoError(t, cmd.Execute())
			var printed contracts.Task
			require.NoError(t, json.Unmarshal(out.Bytes(), &printed), out.String())
			require.JSONEq(t, `{"order":"sdk-2"}`, string(printed.EventData))
		})
	}
}
