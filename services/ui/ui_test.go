package ui

import (
	"context"
	"encoding/json"
	"html"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/auth"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/gateway"
)

const (
	keyAcme  = "key-acme-0123456789abcdef"
	keyOther = "key-other-0123456789abcdef"
	keyAdmin = "key-admin-0123456789abcdef"
)

var allKeys = []string{keyAcme, keyOther, keyAdmin}

type oneLane struct{}

func (oneLane) LaneFor(string, string) string { return "lane" }

// bundle is a dashboard and the gateway API over one real ledger, and
// what the dashboard logged.
type bundle struct {
	api  http.Handler
	ui   http.Handler
	l    *ledger.Ledger
	logs *testkit.SyncBuffer
	// pins records the Pin calls; trigTenants the tenants Triggers was
	// asked about.
	mu          sync.Mutex
	pins        []string
	trigTenants []string
}

// setup serves the dashboard over a real ledger. Events of type "two" go
// to functions f1 and f2, every other type to f1. Tenants acme and other;
// open makes both keyrings open (dev).
func setup(t *testing.T, open bool, tune ...func(*Config)) *bundle {
	t.Helper()
	rdb, prefix := testkit.Redis(t)
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions()})
	pub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, nil)
	t.Cleanup(func() { _ = pub.Close() })
	in := ingest.New(ingest.Config{
		Ledger: l, Publisher: pub, Router: oneLane{}, Metrics: metrics.New(),
		Subscribers: func(_, typ string) []string {
			if typ == "two" {
				return []string{"f1", "f2"}
			}
			return []string{"f1"}
		},
	})
	t.Cleanup(in.Close)
	kr, err := auth.NewKeyring(map[string][]string{"acme": {keyAcme}, "other": {keyOther}})
	require.NoError(t, err)
	admins, err := auth.NewKeyring(map[string][]string{"admin": {keyAdmin}})
	require.NoError(t, err)
	tenants := []string{"acme", "other"}
	if open {
		kr, admins, tenants = auth.Open("acme"), auth.Open("admin"), nil
	}
	api := http.NewServeMux()
	gateway.New(gateway.Config{Keyring: kr, Ingester: in, Ledger: l, Metrics: metrics.New(), Logger: testkit.Logger(t, 0)}).Register(api)
	b := &bundle{api: api, l: l, logs: &testkit.SyncBuffer{}}
	cfg := Config{
		Keyring: kr, AdminKeyring: admins, Ledger: l, Tenants: tenants,
		Functions: []ledger.FunctionSpec{{Name: "f1", Concurrency: 3}, {Name: "f2"}},
		Logger:    slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Routing: func(context.Context) (contracts.RoutingView, error) {
			return contracts.RoutingView{Version: 7,
				Lanes:   []contracts.LaneView{{Name: "tasklane.lane.shared.00", Kind: contracts.LaneShared, Backlog: 12, Consumers: 2}},
				Tenants: []contracts.TenantPlacement{{Tenant: "acme", Shard: []string{"tasklane.lane.shared.00"}}},
			}, nil
		},
		Pin: func(_ context.Context, tenant string, dedicated bool) error {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.pins = append(b.pins, tenant+map[bool]string{true: ":dedicated", false: ":shared"}[dedicated])
			return nil
		},
		Triggers: func(_ context.Context, tenant string) ([]contracts.TriggerView, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.trigTenants = append(b.trigTenants, tenant)
			return []contracts.TriggerView{{Name: "nightly-" + tenant, Kind: "cron", Tenant: tenant, Schedule: "0 3 * * *", State: "running",
				LastError: "<b>boom</b>"}}, nil
		},
	}
	for _, f := range tune {
		f(&cfg)
	}
	u := New(cfg)
	mux := http.NewServeMux()
	u.Register(mux)
	b.ui = mux
	return b
}

// submit posts one structured event as key's tenant and returns its task ids.
func (b *bundle) submit(t *testing.T, key, id, typ, extra string) []string {
	t.Helper()
	body := `{"specversion":"1.0","id":"` + id + `","source":"/t","type":"` + typ + `"` + extra + `}`
	r := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+key)
	r.Header.Set("Content-Type", "application/cloudevents+json")
	w := httptest.NewRecorder()
	b.api.ServeHTTP(w, r)
	require.Equal(t, http.StatusAccepted, w.Code, w.Body.String())
	var resp contracts.SubmitResponse
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &resp))
	ids := make([]string, len(resp.Tasks))
	for i, task := range resp.Tasks {
		ids[i] = task.ID
	}
	return ids
}

// finish runs one attempt of tenant's task and ends it in state.
func (b *bundle) finish(t *testing.T, tenant, id, fn string, state contracts.State) {
	t.Helper()
	ctx := context.Background()
	cl, err := b.l.Claim(ctx, ledger.ClaimRequest{Tenant: tenant, ID: id, Function: fn, Owner: "t", Lease: time.Minute})
	require.NoError(t, err)
	require.Equal(t, ledger.VerdictRun, cl.Verdict)
	o := ledger.Outcome{State: state, Result: []byte(`{"ok":true}`)}
	if state == contracts.StateDead {
		o = ledger.Outcome{State: state, Error: "HTTP 400", Reason: contracts.ReasonNonRetryable}
	}
	ok, err := b.l.Finish(ctx, tenant, id, fn, cl.Fence(), o)
	require.NoError(t, err)
	require.True(t, ok)
}

// browser is a cookie-keeping client of the dashboard.
type browser struct {
	t      *testing.T
	h      http.Handler
	cookie *http.Cookie
}

func (b *bundle) browser(t *testing.T) *browser { return &browser{t: t, h: b.ui} }

func (br *browser) do(method, path string, form url.Values, hdr map[string]string) *httptest.ResponseRecorder {
	br.t.Helper()
	var r *http.Request
	if form != nil {
		r = httptest.NewRequest(method, path, strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		r = httptest.NewRequest(method, path, nil)
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	if br.cookie != nil {
		r.AddCookie(br.cookie)
	}
	w := httptest.NewRecorder()
	br.h.ServeHTTP(w, r)
	for _, c := range w.Result().Cookies() {
		if c.Name == cookieName {
			if c.MaxAge < 0 {
				br.cookie = nil
			} else {
				br.cookie = c
			}
		}
	}
	return w
}

func (br *browser) get(path string) *httptest.ResponseRecorder {
	return br.do(http.MethodGet, path, nil, nil)
}

// post submits a form with the CSRF token of the page at from.
func (br *browser) post(from, path string, form url.Values) *httptest.ResponseRecorder {
	br.t.Helper()
	page := br.get(from)
	require.Equal(br.t, http.StatusOK, page.Code, page.Body.String())
	form.Set("csrf", csrfOf(br.t, page.Body.String()))
	return br.do(http.MethodPost, path, form, map[string]string{"Sec-Fetch-Site": "same-origin"})
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	require.NotNil(t, m, "the page has a CSRF field")
	return html.UnescapeString(m[1])
}

func (br *browser) signIn(key string) {
	br.t.Helper()
	w := br.do(http.MethodPost, "/ui/login", url.Values{"key": {key}}, map[string]string{"Sec-Fetch-Site": "same-origin"})
	require.Equal(br.t, http.StatusSeeOther, w.Code, w.Body.String())
	require.Equal(br.t, "/ui/", w.Header().Get("Location"))
	require.NotNil(br.t, br.cookie)
}

// requireNoKeys fails when any key appears in what the dashboard wrote.
func requireNoKeys(t *testing.T, what string, texts ...string) {
	t.Helper()
	for _, s := range texts {
		for _, k := range allKeys {
			require.NotContains(t, s, k, "%s shows a key", what)
			require.NotContains(t, s, k[:16], "%s shows part of a key", what)
		}
	}
}

func TestSignInGivesAnOpaqueSessionCookie(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	br := b.browser(t)
	w := br.get("/ui/")
	require.Equal(t, http.StatusSeeOther, w.Code, "no session: to the sign-in form")
	require.Equal(t, "/ui/login", w.Header().Get("Location"))
	w = br.get("/ui/login")
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), `type="password"`)

	w = br.do(http.MethodPost, "/ui/login", url.Values{"key": {"key-nobody-0123456789"}}, nil)
	require.Equal(t, http.StatusUnauthorized, w.Code)
	require.Contains(t, w.Body.String(), "not accepted")
	require.NotContains(t, w.Body.String(), "key-nobody")
	require.Nil(t, br.cookie)

	w = br.do(http.MethodPost, "/ui/login", url.Values{"key": {keyAcme}}, map[string]string{"Sec-Fetch-Site": "cross-site"})
	require.Equal(t, http.StatusForbidden, w.Code, "a sign-in posted from another site is refused")
	w = br.do(http.MethodPost, "/ui/login", url.Values{"key": {keyAcme}}, map[string]string{"Origin": "https://evil.example"})
	require.Equal(t, http.StatusForbidden, w.Code, "a sign-in posted from another origin is refused")
	require.Nil(t, br.cookie)
	w = br.do(http.MethodPost, "/ui/login", url.Values{"key": {keyAcme}}, map[string]string{"Origin": "https://example.com", "X-Forwarded-Proto": "https"})
	require.Equal(t, http.StatusSeeOther, w.Code, "same host behind a proxy that ends TLS")
	require.True(t, w.Result().Cookies()[0].Secure, "a cookie for a TLS visit is Secure")
	br.cookie = nil

	br.signIn(keyAcme)
	c := br.cookie
	require.True(t, c.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, c.SameSite)
	require.Equal(t, "/ui/", c.Path)
	require.NotContains(t, c.Value, keyAcme)
	w = br.get("/ui/")
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), "tenant <strong>acme</strong>")
	require.Equal(t, "no-store", w.Header().Get("Cache-Control"))
	require.Contains(t, w.Header().Get("Content-Security-Policy"), "script-src 'self'")

	// Sign out ends the session on the server: the old cookie is refused.
	old := *br.cookie
	w = br.post("/ui/", "/ui/logout", url.Values{})
	require.Equal(t, http.StatusSeeOther, w.Code)
	require.Nil(t, br.cookie)
	br.cookie = &old
	require.Equal(t, http.StatusSeeOther, br.get("/ui/").Code, "a signed-out session id is dead")
	requireNoKeys(t, "the log", b.logs.String())
}

func TestTenantSeesOnlyItsOwnTasks(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	mine := b.submit(t, keyAcme, "ev-1", "one", "")[0]
	theirs := b.submit(t, keyOther, "ev-2", "one", "")[0]
	br := b.browser(t)
	br.signIn(keyAcme)

	var pages []string
	w := br.get("/ui/tasks")
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), mine)
	require.NotContains(t, w.Body.String(), theirs)
	pages = append(pages, w.Body.String())
	w = br.get("/ui/tasks?tenant=other")
	require.NotContains(t, w.Body.String(), theirs, "a tenant cannot choose another tenant")
	require.Contains(t, w.Body.String(), mine)

	w = br.get("/ui/tasks/" + theirs)
	require.Equal(t, http.StatusNotFound, w.Code, "another tenant's task is not found")
	w = br.get("/ui/tasks/" + theirs + "?tenant=other")
	require.Equal(t, http.StatusNotFound, w.Code)
	w = br.get("/ui/tasks/" + mine)
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), `id="task-state">queued<`)
	pages = append(pages, w.Body.String())

	// Another tenant's task cannot be cancelled either.
	w = br.post("/ui/", "/ui/tasks/"+theirs+"/cancel", url.Values{"tenant": {"other"}})
	require.Equal(t, http.StatusSeeOther, w.Code)
	require.Contains(t, w.Header().Get("Location"), "done=not-found")
	task, err := b.l.Get(context.Background(), "other", theirs)
	require.NoError(t, err)
	require.Equal(t, contracts.StateQueued, task.State)

	// Admin pages refuse a tenant.
	for _, p := range []string{"/ui/lanes"} {
		w = br.get(p)
		require.Equal(t, http.StatusForbidden, w.Code, p)
		pages = append(pages, w.Body.String())
	}
	w = br.post("/ui/", "/ui/lanes/pin", url.Values{"tenant": {"acme"}, "dedicated": {"true"}})
	require.Equal(t, http.StatusForbidden, w.Code)
	require.Empty(t, b.pins)

	w = br.get("/ui/triggers")
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), "nightly-acme")
	require.NotContains(t, w.Body.String(), "nightly-other")
	require.Contains(t, w.Body.String(), "&lt;b&gt;boom&lt;/b&gt;")
	require.Equal(t, []string{"acme"}, b.trigTenants)
	pages = append(pages, w.Body.String(), br.get("/ui/").Body.String(), br.get("/ui/dlq").Body.String())
	requireNoKeys(t, "a page", pages...)
	requireNoKeys(t, "the log", b.logs.String())
}

func TestAdminSeesEveryTenantLanesAndPins(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	mine := b.submit(t, keyAcme, "ev-1", "one", "")[0]
	theirs := b.submit(t, keyOther, "ev-2", "one", "")[0]
	br := b.browser(t)
	br.signIn(keyAdmin)

	w := br.get("/ui/tasks?tenant=other")
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), theirs)
	require.NotContains(t, w.Body.String(), mine)
	require.Contains(t, br.get("/ui/tasks?tenant=acme").Body.String(), mine)
	w = br.get("/ui/tasks/" + theirs)
	require.Equal(t, http.StatusOK, w.Code, "an admin finds a task in any tenant")
	require.Contains(t, w.Body.String(), "<dd>other</dd>")

	w = br.get("/ui/lanes")
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), "tasklane.lane.shared.00")
	require.Contains(t, w.Body.String(), "version 7")
	w = br.post("/ui/lanes", "/ui/lanes/pin", url.Values{"tenant": {"acme"}, "dedicated": {"true"}})
	require.Equal(t, http.StatusSeeOther, w.Code, w.Body.String())
	require.Equal(t, []string{"acme:dedicated"}, b.pins)
	w = br.post("/ui/lanes", "/ui/lanes/pin", url.Values{"tenant": {"nobody"}, "dedicated": {"true"}})
	require.Equal(t, http.StatusBadRequest, w.Code)

	w = br.get("/ui/triggers")
	require.Contains(t, w.Body.String(), "nightly-acme")
	require.Contains(t, w.Body.String(), "nightly-other")

	// The overview counts every tenant's tasks, or one tenant's.
	b.finish(t, "other", theirs, "f1", contracts.StateSucceeded)
	w = br.get("/ui/")
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), `<span class="badge">admin</span>`)
	require.Contains(t, w.Body.String(), "1 succeeded, 0 failed or dead")
	// Waiting and running are the ready queues' (none here: nothing was
	// admitted) and live leases, every tenant's.
	require.Regexp(t, `^f1 0 0 3 1 0 0 \d+ ms \d+ ms$`, row(t, w.Body.String(), "f1"))
	w = br.get("/ui/?tenant=acme")
	require.Contains(t, w.Body.String(), "0 succeeded, 0 failed or dead")
	require.Equal(t, "f1 1 0 3 0 0 0 — —", row(t, w.Body.String(), "f1"), "acme's queued task")
	requireNoKeys(t, "the log", b.logs.String())
}

// row returns the overview's table row of function fn, tags stripped.
func row(t *testing.T, page, fn string) string {
	t.Helper()
	i := strings.Index(page, `<tr data-function="`+fn+`">`)
	require.GreaterOrEqual(t, i, 0, "the overview names function %s", fn)
	end := strings.Index(page[i:], "</tr>")
	text := regexp.MustCompile(`<[^>]+>`).ReplaceAllString(page[i:i+end], " ")
	return strings.Join(strings.Fields(text), " ")
}

func TestOverviewCountsTheTenantsFunctions(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	ids := b.submit(t, keyAcme, "ev-1", "two", "") // f1 and f2
	ok := b.submit(t, keyAcme, "ev-2", "one", "")[0]
	dead := b.submit(t, keyAcme, "ev-3", "one", "")[0]
	b.submit(t, keyOther, "ev-4", "one", "") // not acme's
	b.finish(t, "acme", ok, "f1", contracts.StateSucceeded)
	b.finish(t, "acme", dead, "f1", contracts.StateDead)
	require.Len(t, ids, 2)

	br := b.browser(t)
	br.signIn(keyAcme)
	w := br.get("/ui/")
	require.Equal(t, http.StatusOK, w.Code)
	page := w.Body.String()
	// Function, waiting, running, limit, succeeded, failed, dead, p50, p99.
	f1 := row(t, page, "f1")
	require.Regexp(t, `^f1 1 0 3 1 0 1 \d+ ms \d+ ms$`, f1)
	require.Equal(t, "f2 1 0 none 0 0 0 — —", row(t, page, "f2"))
	require.Contains(t, page, "1 succeeded, 1 failed or dead")
	require.Contains(t, page, `<svg`)
	require.Contains(t, page, `data-refresh="5000"`)

	// The self-refresh asks for the live part alone.
	w = br.get("/ui/?partial=1")
	require.Equal(t, http.StatusOK, w.Code)
	require.NotContains(t, w.Body.String(), "<html")
	require.Contains(t, w.Body.String(), `<tr data-function="f1">`)
}

func TestTaskPageAndActions(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	id := b.submit(t, keyAcme, "ev-1", "one", `,"datacontenttype":"application/json","data":{"order":42}`)[0]
	br := b.browser(t)
	br.signIn(keyAcme)
	page := br.get("/ui/tasks/" + id).Body.String()
	require.Contains(t, page, `<code id="task-id">`+id+`</code>`)
	require.Contains(t, page, "&#34;order&#34;: 42")
	require.Contains(t, page, "Cancel task")
	require.Contains(t, page, `<time datetime="`)

	// A POST without the session's CSRF token, or from another site, is refused.
	w := br.do(http.MethodPost, "/ui/tasks/"+id+"/cancel", url.Values{"csrf": {"forged"}}, nil)
	require.Equal(t, http.StatusForbidden, w.Code)
	form := url.Values{"csrf": {csrfOf(t, page)}}
	w = br.do(http.MethodPost, "/ui/tasks/"+id+"/cancel", form, map[string]string{"Sec-Fetch-Site": "cross-site"})
	require.Equal(t, http.StatusForbidden, w.Code)
	task, err := b.l.Get(context.Background(), "acme", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateQueued, task.State)

	w = br.post("/ui/tasks/"+id, "/ui/tasks/"+id+"/cancel", url.Values{})
	require.Equal(t, http.StatusSeeOther, w.Code)
	require.Equal(t, "/ui/tasks/"+id+"?done=cancelled", w.Header().Get("Location"))
	page = br.get(w.Header().Get("Location")).Body.String()
	require.Contains(t, page, `id="task-state">cancelled<`)
	require.Contains(t, page, "Task cancelled.")
	require.NotContains(t, page, "Cancel task")
	w = br.post("/ui/", "/ui/tasks/"+id+"/cancel", url.Values{})
	require.Contains(t, w.Header().Get("Location"), "done=not-cancellable")

	// A dead task: redrive, then dead again and purge.
	dead := b.submit(t, keyAcme, "ev-2", "one", "")[0]
	b.finish(t, "acme", dead, "f1", contracts.StateDead)
	page = br.get("/ui/tasks/" + dead).Body.String()
	require.Contains(t, page, `id="task-state">dead<`)
	w = br.post("/ui/", "/ui/tasks/"+dead+"/redrive", url.Values{})
	require.Equal(t, "/ui/tasks/"+dead+"?done=redriven", w.Header().Get("Location"))
	task, err = b.l.Get(context.Background(), "acme", dead)
	require.NoError(t, err)
	require.NotEqual(t, contracts.StateDead, task.State)
	require.Equal(t, 1, task.Redrives)
	w = br.post("/ui/", "/ui/tasks/"+dead+"/purge", url.Values{})
	require.Contains(t, w.Header().Get("Location"), "done=not-dead")

	b.finish(t, "acme", dead, "f1", contracts.StateDead)
	w = br.post("/ui/", "/ui/tasks/"+dead+"/purge", url.Values{})
	require.Equal(t, "/ui/dlq?done=purged", w.Header().Get("Location"))
	_, err = b.l.Get(context.Background(), "acme", dead)
	require.ErrorIs(t, err, ledger.ErrNotFound)
	require.Equal(t, http.StatusNotFound, br.post("/ui/", "/ui/tasks/"+dead+"/explode", url.Values{}).Code)
}

func TestDeadLettersBulkCountsFirst(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	var dead []string
	for _, ev := range []string{"ev-1", "ev-2", "ev-3"} {
		id := b.submit(t, keyAcme, ev, "one", "")[0]
		b.finish(t, "acme", id, "f1", contracts.StateDead)
		dead = append(dead, id)
	}
	otherDead := b.submit(t, keyOther, "ev-9", "one", "")[0]
	b.finish(t, "other", otherDead, "f1", contracts.StateDead)

	br := b.browser(t)
	br.signIn(keyAcme)
	page := br.get("/ui/dlq?function=f1").Body.String()
	for _, id := range dead {
		require.Contains(t, page, id)
	}
	require.NotContains(t, page, otherDead)
	require.Contains(t, br.get("/ui/dlq?function=f2").Body.String(), "No dead tasks match.")

	// The first press counts (a dry run) and changes nothing.
	w := br.post("/ui/dlq", "/ui/dlq", url.Values{"op": {"redrive"}, "function": {"f1"}})
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	require.Contains(t, w.Body.String(), "<strong>3</strong> dead task(s) match.")
	list, err := b.l.List(context.Background(), "acme", ledger.ListFilter{State: contracts.StateDead})
	require.NoError(t, err)
	require.Len(t, list.Tasks, 3)

	w = br.post("/ui/dlq", "/ui/dlq", url.Values{"op": {"redrive"}, "function": {"f1"}, "confirm": {"1"}})
	require.Contains(t, w.Body.String(), "Redrove 3 of 3 matching dead task(s).")
	list, err = b.l.List(context.Background(), "acme", ledger.ListFilter{State: contracts.StateDead})
	require.NoError(t, err)
	require.Empty(t, list.Tasks)
	task, err := b.l.Get(context.Background(), "other", otherDead)
	require.NoError(t, err)
	require.Equal(t, contracts.StateDead, task.State, "another tenant's dead task stays")

	for _, id := range dead {
		b.finish(t, "acme", id, "f1", contracts.StateDead)
	}
	w = br.post("/ui/dlq", "/ui/dlq", url.Values{"op": {"purge"}, "confirm": {"1"}})
	require.Contains(t, w.Body.String(), "Purged 3 of 3 matching dead task(s).")
}

func TestMaliciousEventIsRenderedInert(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	evil := `<script>alert(1)</script><img src=x onerror=alert(2)>`
	data, err := json.Marshal(map[string]string{"x": evil})
	require.NoError(t, err)
	subject, err := json.Marshal(evil)
	require.NoError(t, err)
	id := b.submit(t, keyAcme, "ev-1", "one", `,"subject":`+string(subject)+`,"datacontenttype":"application/json","data":`+string(data))[0]
	text := b.submit(t, keyAcme, "ev-2", "one", `,"datacontenttype":"text/html","data":`+string(subject))[0]
	br := b.browser(t)
	br.signIn(keyAcme)
	for _, p := range []string{"/ui/tasks/" + id, "/ui/tasks/" + text, "/ui/tasks"} {
		page := br.get(p).Body.String()
		require.NotContains(t, page, "<script>alert", p)
		require.NotContains(t, page, "<img src=x", p)
	}
	page := br.get("/ui/tasks/" + text).Body.String()
	require.Contains(t, page, "&lt;script&gt;alert(1)&lt;/script&gt;")
}

func TestOpenModeNeedsNoSignIn(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	id := b.submit(t, "", "ev-1", "one", "")[0]
	br := b.browser(t)
	w := br.get("/ui/")
	require.Equal(t, http.StatusOK, w.Code)
	require.NotNil(t, br.cookie, "an open dashboard still gives a session, for its CSRF token")
	require.Contains(t, w.Body.String(), "open: no keys configured")
	require.Contains(t, br.get("/ui/tasks").Body.String(), id)
	require.Equal(t, http.StatusOK, br.get("/ui/lanes").Code, "open: admin pages too")

	// Actions still need the token.
	w = br.do(http.MethodPost, "/ui/tasks/"+id+"/cancel", url.Values{}, nil)
	require.Equal(t, http.StatusForbidden, w.Code)
	w = (&browser{t: t, h: b.ui}).do(http.MethodPost, "/ui/tasks/"+id+"/cancel", url.Values{}, nil)
	require.Equal(t, http.StatusUnauthorized, w.Code, "no session: a POST does not start one")
	w = br.post("/ui/tasks/"+id, "/ui/tasks/"+id+"/cancel", url.Values{})
	require.Contains(t, w.Header().Get("Location"), "done=cancelled")
}

func TestSessionsExpireWhenIdle(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	ss := newSessions(time.Hour, func() time.Time { return now })
	w := httptest.NewRecorder()
	ss.start(w, httptest.NewRequest(http.MethodGet, "/ui/", nil), "acme", false, false)
	r := httptest.NewRequest(http.MethodGet, "/ui/", nil)
	r.AddCookie(w.Result().Cookies()[0])
	now = now.Add(59 * time.Minute)
	require.NotNil(t, ss.fromRequest(r), "use extends the session")
	now = now.Add(59 * time.Minute)
	require.NotNil(t, ss.fromRequest(r))
	now = now.Add(61 * time.Minute)
	require.Nil(t, ss.fromRequest(r), "idle past the TTL: gone")
}

func TestStaticAssetsAreEmbedded(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	for _, p := range []string{"/ui/static/app.js", "/ui/static/app.css"} {
		w := (&browser{t: t, h: b.ui}).get(p)
		require.Equal(t, http.StatusOK, w.Code, p)
		require.NotEmpty(t, w.Body.String())
	}
	// Nothing from outside the server.
	for _, p := range pageNames {
		raw, err := templateFS.ReadFile("templates/" + p)
		require.NoError(t, err)
		require.NotRegexp(t, `(src|href)="(https?:)?//`, string(raw), p)
	}
}

func TestSessionsAreBounded(t *testing.T) {
	t.Parallel()
	ss := newSessions(time.Hour, time.Now)
	ss.max = 20
	for range 70 {
		ss.start(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/ui/", nil), "acme", false, true)
	}
	require.Len(t, ss.m, 20)
}
