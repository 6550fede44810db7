package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/tasktoken"
	"github.com/tasklane/tasklane/pkg/testkit"
)

func (b *apiBundle) taskLog(t *testing.T, id string) contracts.TaskLog {
	t.Helper()
	w := serve(b.h, "GET", "/v1/tasks/"+id+"/logs", keyAcme, "")
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	var lg contracts.TaskLog
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &lg))
	return lg
}

func TestTaskLogRoutes(t *testing.T) {
	t.Parallel()
	b := setupAPI(t)
	_, resp := b.submit(t, ctStructured, ce("ev-1", "/a", "two", ""))
	t1, t2 := resp.Tasks[0].ID, resp.Tasks[1].ID

	lg := b.taskLog(t, t1)
	require.NotEmpty(t, lg.Entries)
	require.Equal(t, contracts.LogAccepted, lg.Entries[0].Kind)
	require.Contains(t, lg.Entries[0].Message, "accepted from event ev-1 of /a for f1")
	require.Equal(t, http.StatusNotFound, serve(b.h, "GET", "/v1/tasks/"+t1+"/logs", keyOther, "").Code, "tenant-scoped")
	require.Equal(t, http.StatusUnauthorized, serve(b.h, "GET", "/v1/tasks/"+t1+"/logs", "", "").Code)

	secret, err := b.l.TokenSecret(context.Background())
	require.NoError(t, err)
	tok := tasktoken.Sign(secret, tasktoken.Claims{Tenant: "acme", Task: t1, Attempt: 2, Expires: time.Now().Add(time.Minute)})

	w := serve(b.h, "POST", "/v1/tasks/"+t1+"/logs", tok, `{"lines": ["fetched 42 bytes", "done"]}`)
	require.Equal(t, http.StatusNoContent, w.Code, w.Body.String())
	var lines []contracts.LogEntry
	for _, e := range b.taskLog(t, t1).Entries {
		if e.Kind == contracts.LogLine {
			lines = append(lines, e)
		}
	}
	require.Len(t, lines, 2)
	require.Equal(t, "fetched 42 bytes", lines[0].Message)
	require.Equal(t, 2, lines[0].Attempt, "the token's attempt")

	// The token is for t1 only, and for this route only.
	w = serve(b.h, "POST", "/v1/tasks/"+t2+"/logs", tok, `{"lines": ["x"]}`)
	require.Equal(t, http.StatusForbidden, w.Code, w.Body.String())
	for _, r := range [][2]string{{"GET", "/v1/tasks/" + t1 + "/logs"}, {"GET", "/v1/tasks/" + t2 + "/logs"}, {"GET", "/v1/tasks/" + t1},
		{"DELETE", "/v1/tasks/" + t1}, {"GET", "/v1/tasks"}, {"POST", "/v1/events"}} {
		require.Equal(t, http.StatusUnauthorized, serve(b.h, r[0], r[1], tok, "").Code, "%s %s with a task token", r[0], r[1])
	}
	for _, e := range b.taskLog(t, t2).Entries {
		require.NotEqual(t, contracts.LogLine, e.Kind, "nothing written to t2")
	}

	// An API key does not write logs; nor does an expired, forged or
	// altered token.
	expired := tasktoken.Sign(secret, tasktoken.Claims{Tenant: "acme", Task: t1, Attempt: 1, Expires: time.Now().Add(-time.Millisecond)})
	forged := tasktoken.Sign([]byte("not the server's secret"), tasktoken.Claims{Tenant: "acme", Task: t1, Attempt: 1, Expires: time.Now().Add(time.Minute)})
	for name, key := range map[string]string{"api key": keyAcme, "expired": expired, "forged": forged, "none": "", "altered": tok + "x"} {
		w := serve(b.h, "POST", "/v1/tasks/"+t1+"/logs", key, `{"lines": ["x"]}`)
		require.Equal(t, http.StatusUnauthorized, w.Code, "%s: %s", name, w.Body.String())
	}
	require.Contains(t, serve(b.h, "POST", "/v1/tasks/"+t1+"/logs", expired, `{"lines": ["x"]}`).Body.String(), "expired")

	// Another tenant's token (signed by the server) finds no such task.
	otherTok := tasktoken.Sign(secret, tasktoken.Claims{Tenant: "other", Task: t1, Attempt: 1, Expires: time.Now().Add(time.Minute)})
	require.Equal(t, http.StatusNotFound, serve(b.h, "POST", "/v1/tasks/"+t1+"/logs", otherTok, `{"lines": ["x"]}`).Code)

	for body, code := range map[string]int{
		`{"lines": []}`: http.StatusBadRequest,
		`not json`:      http.StatusBadRequest,
		`{"lines": [` + strings.Repeat(`"x",`, 256) + `"x"]}`:         http.StatusBadRequest,
		`{"lines": ["` + strings.Repeat("x", maxLogBodyBytes) + `"]}`: http.StatusRequestEntityTooLarge,
	} {
		w := serve(b.h, "POST", "/v1/tasks/"+t1+"/logs", tok, body)
		require.Equal(t, code, w.Code, w.Body.String())
	}
}

// ?after=<seq> continues a log after the entries read; a bad after is a
// 400 naming it.
func TestTaskLogAfter(t *testing.T) {
	t.Parallel()
	b := setupAPI(t)
	_, resp := b.submit(t, ctStructured, ce("ev-1", "/a", "one", ""))
	id := resp.Tasks[0].ID
	read := func(q string) contracts.TaskLog {
		t.Helper()
		w := serve(b.h, "GET", "/v1/tasks/"+id+"/logs"+q, keyAcme, "")
		require.Equal(t, http.StatusOK, w.Code, w.Body.String())
		var lg contracts.TaskLog
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &lg))
		return lg
	}
	// The lane publish is confirmed, and logged, after the 202: wait for
	// it so the log does not grow between the reads below.
	var all contracts.TaskLog
	testkit.Eventually(t, 10*time.Second, func() bool {
		all = read("")
		return slices.ContainsFunc(all.Entries, func(e contracts.LogEntry) bool { return e.Kind == contracts.LogPublished })
	}, "the publish is logged")
	require.EqualValues(t, 1, all.Entries[0].Seq)
	require.Positive(t, all.LastSeq)
	require.Equal(t, all, read("?after=0"))
	none := read("?after=" + strconv.FormatInt(all.LastSeq, 10))
	require.Empty(t, none.Entries)
	require.NotNil(t, none.Entries, "an empty list, not null")
	require.Equal(t, all.LastSeq, none.LastSeq)

	require.NoError(t, b.l.AppendLog(context.Background(), "acme", id, contracts.LogEntry{Kind: contracts.LogLine, Message: "one"}, contracts.LogEntry{Kind: contracts.LogLine, Message: "two"}))
	more := read("?after=" + strconv.FormatInt(all.LastSeq, 10))
	require.Len(t, more.Entries, 2)
	require.Equal(t, "one", more.Entries[0].Message)
	require.Equal(t, all.LastSeq+1, more.Entries[0].Seq)
	require.Equal(t, all.LastSeq+2, more.LastSeq)

	for _, q := range []string{"?after=", "?after=x", "?after=-1", "?after=1.5", "?after=1&after=2", "?after=99999999999999999999"} {
		w := serve(b.h, "GET", "/v1/tasks/"+id+"/logs"+q, keyAcme, "")
		require.Equal(t, http.StatusBadRequest, w.Code, q)
		require.Contains(t, w.Body.String(), `"error":"after: want the seq of a log entry`, q)
	}
	require.Equal(t, http.StatusNotFound, serve(b.h, "GET", "/v1/tasks/"+id+"/logs?after=1", keyOther, "").Code)
	require.Equal(t, http.StatusUnauthorized, serve(b.h, "GET", "/v1/tasks/"+id+"/logs?after=1", "", "").Code)
}
