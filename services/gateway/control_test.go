package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
)

func TestPausesAndCancelBySelector(t *testing.T) {
	t.Parallel()
	b := setupAPI(t)
	_, sub := b.submit(t, ctBatch, `[`+ce("e1", "/a", "one", `,"batch":"b1"`)+`,`+ce("e2", "/a", "one", `,"batch":"b2"`)+`]`)
	require.Len(t, sub.Tasks, 2)
	require.Equal(t, []string{sub.Tasks[0].ID}, listIDs(t, serve(b.h, "GET", "/v1/tasks?batch=b1", keyAcme, "")))

	for body, want := range map[string]int{
		`{}`:                               http.StatusBadRequest,
		`{"state":"queued"}`:               http.StatusBadRequest,
		`{"batch":"b1","colour":"red"}`:    http.StatusBadRequest,
		`{"batch":"b1","state":"running"}`: http.StatusBadRequest,
		`{"batch":"b1"} {}`:                http.StatusBadRequest,
	} {
		w := serve(b.h, "POST", "/v1/pauses", keyAcme, body)
		require.Equal(t, want, w.Code, "%s: %s", body, w.Body)
	}
	w := serve(b.h, "POST", "/v1/pauses", keyAcme, `{"batch":"b1"}`)
	require.Equal(t, http.StatusCreated, w.Code, w.Body.String())
	var p contracts.Pause
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &p))
	require.Equal(t, 1, p.Paused)
	require.Equal(t, "b1", p.Selector.Batch)

	w = serve(b.h, "GET", "/v1/pauses", keyOther, "")
	require.JSONEq(t, `{"pauses":[]}`, w.Body.String())
	require.Equal(t, http.StatusNotFound, serve(b.h, "DELETE", "/v1/pauses/"+p.ID, keyOther, "").Code)

	w = serve(b.h, "POST", "/v1/tasks/cancel", keyAcme, `{"source":"/a","dry_run":true}`)
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.JSONEq(t, `{"matched":2,"cancelled":0}`, w.Body.String())
	w = serve(b.h, "POST", "/v1/tasks/cancel", keyAcme, `{"source":"/a","state":"paused"}`)
	require.JSONEq(t, `{"matched":1,"cancelled":1}`, w.Body.String())
	w = serve(b.h, "POST", "/v1/tasks/cancel", keyAcme, `{"source":"/a","cursor":"nope"}`)
	require.Equal(t, http.StatusBadRequest, w.Code)

	w = serve(b.h, "DELETE", "/v1/pauses/"+p.ID, keyAcme, "")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.JSONEq(t, `{"resumed":0}`, w.Body.String(), "its task was cancelled")
}

func TestSelectorOfAnUnknownFunction(t *testing.T) {
	t.Parallel()
	g := New(Config{FunctionExists: func(n string) bool { return n == "f1" }})
	w := httptest.NewRecorder()
	require.False(t, g.checkSelector(w, contracts.Selector{Function: "nope"}, contracts.PausableStates))
	require.Equal(t, http.StatusUnprocessableEntity, w.Code)
	require.Contains(t, w.Body.String(), `function: no function \"nope\"`)
	require.True(t, g.checkSelector(httptest.NewRecorder(), contracts.Selector{Function: "f1"}, contracts.PausableStates))
}
