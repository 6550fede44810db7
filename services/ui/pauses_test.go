package ui

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// stateOf reads a task's state from the ledger.
func (b *bundle) stateOf(t *testing.T, tenant, id string) contracts.State {
	t.Helper()
	task, err := b.l.Get(context.Background(), tenant, id)
	require.NoError(t, err)
	return task.State
}

var pauseRowRE = regexp.MustCompile(`data-pause="([^"]+)"`)

func TestPausesPauseAndResumeAFunction(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	mine := b.submit(t, keyAcme, "ev-1", "two", "") // f1 and f2
	require.Len(t, mine, 2)
	theirs := b.submit(t, keyOther, "ev-2", "one", "")[0]
	br := b.browser(t)
	br.signIn(keyAcme)
	w := br.get("/ui/pauses")
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), "No pauses in force.")
	require.Contains(t, w.Body.String(), `aria-current="page">Pauses<`)

	// Without the session's token, or from another site: refused.
	w = br.do(http.MethodPost, "/ui/pauses", url.Values{"csrf": {"forged"}, "kind": {"function"}, "function": {"f1"}}, nil)
	require.Equal(t, http.StatusForbidden, w.Code)
	form := url.Values{"csrf": {csrfOf(t, br.get("/ui/pauses").Body.String())}, "kind": {"function"}, "function": {"f1"}}
	w = br.do(http.MethodPost, "/ui/pauses", form, map[string]string{"Sec-Fetch-Site": "cross-site"})
	require.Equal(t, http.StatusForbidden, w.Code)
	ps, err := b.l.Pauses(context.Background(), "acme")
	require.NoError(t, err)
	require.Empty(t, ps, "a refused POST pauses nothing")

	// A function that is not configured is refused with the form again.
	w = br.post("/ui/pauses", "/ui/pauses", url.Values{"kind": {"function"}, "function": {"nope"}})
	require.Equal(t, http.StatusBadRequest, w.Code)
	require.Contains(t, w.Body.String(), "Choose one of the configured functions.")

	// Pause f1: acme's f1 task is paused, its f2 task and the other
	// tenant's f1 task (naming tenant=other does not reach it) are not.
	w = br.post("/ui/pauses", "/ui/pauses", url.Values{"kind": {"function"}, "function": {"f1"}, "tenant": {"other"}})
	require.Equal(t, http.StatusSeeOther, w.Code, w.Body.String())
	require.Equal(t, "/ui/pauses?done=paused", w.Header().Get("Location"))
	require.Equal(t, contracts.StatePaused, b.stateOf(t, "acme", mine[0]))
	require.Equal(t, contracts.StateQueued, b.stateOf(t, "acme", mine[1]))
	require.Equal(t, contracts.StateQueued, b.stateOf(t, "other", theirs))
	page := br.get(w.Header().Get("Location")).Body.String()
	require.Contains(t, page, "Pause created")
	require.Contains(t, page, "function <code>f1</code>")
	require.NotContains(t, page, "No pauses in force.")
	m := pauseRowRE.FindStringSubmatch(page)
	require.NotNil(t, m)
	pid := m[1]
	require.Contains(t, br.get("/ui/tasks?state=paused").Body.String(), mine[0])

	// The other tenant sees no pause and cannot resume acme's.
	ob := b.browser(t)
	ob.signIn(keyOther)
	require.Contains(t, ob.get("/ui/pauses").Body.String(), "No pauses in force.")
	require.Contains(t, ob.get("/ui/pauses?tenant=acme").Body.String(), "No pauses in force.")
	w = ob.post("/ui/pauses", "/ui/pauses/"+pid+"/resume", url.Values{"tenant": {"acme"}})
	require.Equal(t, "/ui/pauses?done=pause-not-found", w.Header().Get("Location"))
	require.Equal(t, contracts.StatePaused, b.stateOf(t, "acme", mine[0]))

	// An admin sees every tenant's pauses, or the picked tenant's.
	ab := b.browser(t)
	ab.signIn(keyAdmin)
	page = ab.get("/ui/pauses").Body.String()
	require.Contains(t, page, `data-pause="`+pid+`"`)
	require.Contains(t, page, "<td>acme</td>")
	require.Contains(t, ab.get("/ui/pauses?tenant=other").Body.String(), "No pauses in force.")
	require.Contains(t, ab.get("/ui/pauses?tenant=acme").Body.String(), pid)

	// Resume: the task waits to run again and the pause is gone.
	w = br.post("/ui/pauses", "/ui/pauses/"+pid+"/resume", url.Values{})
	require.Equal(t, "/ui/pauses?done=resumed", w.Header().Get("Location"))
	require.Equal(t, contracts.StateQueued, b.stateOf(t, "acme", mine[0]))
	require.Contains(t, br.get("/ui/pauses").Body.String(), "No pauses in force.")
	w = br.post("/ui/pauses", "/ui/pauses/"+pid+"/resume", url.Values{})
	require.Equal(t, "/ui/pauses?done=pause-not-found", w.Header().Get("Location"))
	requireNoKeys(t, "the log", b.logs.String())
}

func TestPausesAdminPausesAPickedTenantsBatch(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	inBatch := b.submit(t, keyOther, "ev-1", "one", `,"batch":"nightly"`)[0]
	outside := b.submit(t, keyOther, "ev-2", "one", `,"batch":"daily"`)[0]
	acmes := b.submit(t, keyAcme, "ev-3", "one", `,"batch":"nightly"`)[0]
	ab := b.browser(t)
	ab.signIn(keyAdmin)
	w := ab.post("/ui/pauses", "/ui/pauses", url.Values{"kind": {"batch"}, "batch": {" nightly "}, "tenant": {"other"}})
	require.Equal(t, http.StatusSeeOther, w.Code, w.Body.String())
	require.Equal(t, "/ui/pauses?done=paused&tenant=other", w.Header().Get("Location"))
	require.Equal(t, contracts.StatePaused, b.stateOf(t, "other", inBatch))
	require.Equal(t, contracts.StateQueued, b.stateOf(t, "other", outside))
	require.Equal(t, contracts.StateQueued, b.stateOf(t, "acme", acmes))
	require.Contains(t, ab.get(w.Header().Get("Location")).Body.String(), "batch <code>nightly</code>")

	// The tasks page searches by batch.
	page := ab.get("/ui/tasks?tenant=other&batch=nightly").Body.String()
	require.Contains(t, page, inBatch)
	require.NotContains(t, page, outside)
	require.Contains(t, page, `name="batch" value="nightly"`)
	page = ab.get("/ui/tasks/" + inBatch + "?tenant=other").Body.String()
	require.Contains(t, page, `<a href="/ui/tasks?batch=nightly&amp;tenant=other"><code>nightly</code></a>`)

	w = ab.post("/ui/pauses", "/ui/pauses", url.Values{"kind": {"batch"}, "batch": {"  "}})
	require.Equal(t, http.StatusBadRequest, w.Code)
	require.Contains(t, w.Body.String(), "Give the batch to pause")
}

func TestPausesEscapeAMaliciousBatch(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	evil := `"><script>alert(1)</script><img src=x onerror=alert(2)>`
	id := b.submit(t, keyAcme, "ev-1", "one", `,"batch":"`+regexp.MustCompile(`"`).ReplaceAllString(evil, `\"`)+`"`)[0]
	br := b.browser(t)
	br.signIn(keyAcme)
	w := br.post("/ui/pauses", "/ui/pauses", url.Values{"kind": {"batch"}, "batch": {evil}})
	require.Equal(t, http.StatusSeeOther, w.Code, w.Body.String())
	require.Equal(t, contracts.StatePaused, b.stateOf(t, "acme", id))
	// A selector written through the API (no dashboard validation) too.
	_, err := b.l.CreatePause(context.Background(), "acme", contracts.Selector{Type: evil, SubjectPrefix: evil})
	require.NoError(t, err)
	// And a task log line.
	require.NoError(t, b.l.AppendLog(context.Background(), "acme", id, contracts.LogEntry{Kind: contracts.LogLine, Message: evil}))
	for _, p := range []string{"/ui/pauses", "/ui/tasks?batch=" + url.QueryEscape(evil), "/ui/tasks/" + id} {
		page := br.get(p).Body.String()
		require.NotContains(t, page, "<script>alert", p)
		require.NotContains(t, page, "<img src=x", p)
		require.NotContains(t, page, `"><script`, p)
	}
	page := br.get("/ui/pauses").Body.String()
	require.Contains(t, page, "&lt;script&gt;alert(1)&lt;/script&gt;")
	// A bad form with the value echoes it escaped.
	w = br.post("/ui/pauses", "/ui/pauses", url.Values{"kind": {"function"}, "function": {evil}, "batch": {evil}})
	require.Equal(t, http.StatusBadRequest, w.Code)
	require.NotContains(t, w.Body.String(), "<script>alert")
	require.Contains(t, w.Body.String(), `value="&#34;&gt;&lt;script&gt;`)
}

func TestTaskPageShowsItsLog(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	id := b.submit(t, keyAcme, "ev-1", "one", "")[0]
	b.finish(t, "acme", id, "f1", contracts.StateDead)
	require.NoError(t, b.l.AppendLog(context.Background(), "acme", id, contracts.LogEntry{Kind: contracts.LogLine, Attempt: 1, Message: "charging card 4242"}))
	br := b.browser(t)
	br.signIn(keyAcme)
	page := br.get("/ui/tasks/" + id).Body.String()
	require.Contains(t, page, `id="task-log"`)
	require.Contains(t, page, `<tr data-kind="accepted">`)
	require.Contains(t, page, `<td class="msg">dead-lettered (non_retryable): HTTP 400</td>`)
	require.Contains(t, page, `<td class="msg">charging card 4242</td>`)
	// An entry can still be on its way (written in the background after
	// the submit answered): the page and the log agree once it is in.
	rows := regexp.MustCompile(`<tr data-kind=`)
	testkit.Eventually(t, 5*time.Second, func() bool {
		log, err := b.l.Log(context.Background(), "acme", id)
		require.NoError(t, err)
		return len(log) == len(rows.FindAllString(br.get("/ui/tasks/"+id).Body.String(), -1))
	}, "every entry of the log shown on the task page")
}
