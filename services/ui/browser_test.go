//go:build integration

package ui

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
)

// chromium finds a headless Chromium: TASKLANE_CHROMIUM, else Debian's
// chromium (which .ci/run installs), else Chrome. Without one the test
// skips locally and fails in CI (CI=true).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TASKLANE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium: .ci/run installs Debian's chromium package")
	}
	t.Skip("no Chromium or Chrome installed (apt-get install chromium); set TASKLANE_CHROMIUM to use another")
	return ""
}

// shots is where screenshots go: TASKLANE_UI_SCREENSHOTS (the README's
// come from a run with docs/dashboard there), else the test's temp dir.
func shots(t *testing.T) string {
	if d := os.Getenv("TASKLANE_UI_SCREENSHOTS"); d != "" {
		require.NoError(t, os.MkdirAll(d, 0o755))
		return d
	}
	return t.TempDir()
}

// TestBrowserDashboard drives a real headless Chromium against a running
// server (the gateway API and the dashboard over a real ledger): sign in,
// see the configured functions on the overview and a submitted task
// arrive by the self-refresh, open the task's page and see its state,
// redrive a dead task by its button, see a malicious event rendered
// inert, pause a function and see its tasks paused, resume and see them
// run, and as an admin see the lanes and every tenant's triggers.
func TestBrowserDashboard(t *testing.T) {
	exe := chromium(t)
	dir := shots(t)
	b := setup(t, false, func(c *Config) { c.Refresh = 300 * time.Millisecond })
	mux := http.NewServeMux()
	mux.Handle("/v1/", b.api)
	mux.Handle("/ui/", b.ui)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	queued := b.submit(t, keyAcme, "ev-1", "one", `,"batch":"import-42","datacontenttype":"application/json","data":{"order":42}`)[0]
	dead := b.submit(t, keyAcme, "ev-2", "one", "")[0]
	b.finish(t, "acme", dead, "f1", contracts.StateDead)
	ok := b.submit(t, keyAcme, "ev-3", "two", "")[0]
	b.finish(t, "acme", ok, "f1", contracts.StateSucceeded)
	payload, err := json.Marshal(`<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>`)
	require.NoError(t, err)
	evil := b.submit(t, keyAcme, "ev-4", "one", `,"subject":`+string(payload)+`,"datacontenttype":"text/plain","data":`+string(payload))[0]

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU, // a fresh profile of chromedp's own, removed after
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.WindowSize(1280, 900),
		chromedp.Env("TZ=Asia/Tokyo"),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel)

	shot := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			var png []byte
			if err := chromedp.FullScreenshot(&png, 100).Do(ctx); err != nil { // quality 100: PNG
				return err
			}
			return os.WriteFile(filepath.Join(dir, name), png, 0o644)
		})
	}

	// Sign in: the overview sends the browser to the form first.
	var functions, loginURL string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Navigate(srv.URL+"/ui/"),
		chromedp.WaitVisible(`#key`, chromedp.ByID),
		chromedp.Location(&loginURL),
		shot("login.png"),
		chromedp.SendKeys(`#key`, keyAcme, chromedp.ByID),
		chromedp.Submit(`#key`, chromedp.ByID),
		chromedp.WaitVisible(`#functions`, chromedp.ByID),
		chromedp.Text(`#functions`, &functions, chromedp.ByID),
	))
	require.Equal(t, srv.URL+"/ui/login", loginURL)
	require.Contains(t, functions, "f1")
	require.Contains(t, functions, "f2")

	// Dates are in the browser's zone, UTC on hover.
	var shown, hover string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Text(`figcaption time`, &shown, chromedp.ByQuery),
		chromedp.AttributeValue(`figcaption time`, "title", &hover, nil, chromedp.ByQuery),
	))
	require.NotContains(t, shown, "UTC", "the script shows local time")
	require.Contains(t, hover, "UTC")

	// The overview refreshes itself: a new task shows up as waiting.
	// The table is replaced every 300 ms: a cell found just before a
	// refresh is gone when its text is read ("No node with given id
	// found"), so a failed read is read again.
	waiting := func() string {
		var s string
		if err := chromedp.Run(ctx, chromedp.Text(`tr[data-function="f2"] td`, &s, chromedp.ByQuery)); err != nil {
			t.Logf("reading the overview again: %v", err)
			return ""
		}
		return strings.TrimSpace(s)
	}
	waitFor := func(want, msg string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for waiting() != want {
			require.True(t, time.Now().Before(deadline), msg)
			require.NoError(t, chromedp.Run(ctx, chromedp.Sleep(100*time.Millisecond)))
		}
	}
	waitFor("1", "f2 has ev-3's task waiting")
	b.submit(t, keyAcme, "ev-5", "two", "")
	waitFor("2", "the overview did not refresh")
	require.NoError(t, chromedp.Run(ctx, shot("overview.png")))

	// A task's page shows its id and state.
	var id, state string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Navigate(srv.URL+"/ui/tasks/"+queued),
		chromedp.Text(`#task-id`, &id, chromedp.ByID),
		chromedp.Text(`#task-state`, &state, chromedp.ByID),
		shot("task.png"),
	))
	require.Equal(t, queued, id)
	require.Equal(t, "queued", state)

	// Dead letters: redrive the dead task with its button on its page.
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Navigate(srv.URL+"/ui/dlq"),
		chromedp.WaitVisible(`#dead`, chromedp.ByID),
		shot("dlq.png"),
		chromedp.Navigate(srv.URL+"/ui/tasks/"+dead),
		chromedp.Text(`#task-state`, &state, chromedp.ByID),
	))
	require.Equal(t, "dead", state)
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Click(`form[action$="/redrive"] button`, chromedp.ByQuery),
		chromedp.WaitVisible(`.flash`, chromedp.ByQuery),
		chromedp.Text(`#task-state`, &state, chromedp.ByID),
	))
	require.Equal(t, "queued", state, "redriven")

	// A malicious event renders as text: no element made, no script run.
	var xss bool
	var imgs int
	var text string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Navigate(srv.URL+"/ui/tasks/"+evil),
		chromedp.Text(`#event-data`, &text, chromedp.ByID),
		chromedp.Evaluate(`typeof window.__xss !== "undefined"`, &xss),
		chromedp.Evaluate(`document.querySelectorAll("main img, main script").length`, &imgs),
	))
	require.False(t, xss, "the event's markup ran")
	require.Zero(t, imgs)
	require.Contains(t, text, "<script>window.__xss=2</script>")

	// Pauses: pause f1 with the form, see its waiting tasks paused on the
	// tasks page, resume with the button, see them queued again and, once
	// run (the test plays the dispatcher), succeeded.
	stateIn := func(task string) string {
		var s string
		require.NoError(t, chromedp.Run(ctx, chromedp.Evaluate(
			`(document.querySelector('#tasks a[href^="/ui/tasks/`+task+`"]')?.closest("tr").querySelector(".state")?.textContent ?? "")`, &s)))
		return s
	}
	var pauses string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Navigate(srv.URL+"/ui/pauses"),
		chromedp.WaitVisible(`#pause-form`, chromedp.ByID),
		chromedp.SetValue(`#pause-form select[name="function"]`, "f1", chromedp.ByQuery),
		chromedp.Click(`#pause-form button[type="submit"]`, chromedp.ByQuery),
		chromedp.WaitVisible(`.flash`, chromedp.ByQuery),
		chromedp.Text(`#pauses`, &pauses, chromedp.ByID),
		shot("pauses.png"),
		chromedp.Navigate(srv.URL+"/ui/tasks?function=f1"),
		chromedp.WaitVisible(`#tasks`, chromedp.ByID),
	))
	require.Contains(t, pauses, "function f1")
	require.Equal(t, "paused", stateIn(queued), "f1's waiting task is paused")
	require.Equal(t, "paused", stateIn(dead), "and the redriven one")
	require.Equal(t, "succeeded", stateIn(ok), "a finished task is not")
	require.NoError(t, chromedp.Run(ctx,
		shot("tasks-paused.png"),
		chromedp.Navigate(srv.URL+"/ui/pauses"),
		chromedp.Click(`#pauses form[action$="/resume"] button`, chromedp.ByQuery),
		chromedp.WaitVisible(`.flash`, chromedp.ByQuery),
		chromedp.Text(`#pauses`, &pauses, chromedp.ByID),
		chromedp.Navigate(srv.URL+"/ui/tasks?function=f1"),
		chromedp.WaitVisible(`#tasks`, chromedp.ByID),
	))
	require.Contains(t, pauses, "No pauses in force.")
	require.Equal(t, "queued", stateIn(queued), "resumed: waiting to run again")
	b.finish(t, "acme", queued, "f1", contracts.StateSucceeded)
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Navigate(srv.URL+"/ui/tasks?function=f1"),
		chromedp.WaitVisible(`#tasks`, chromedp.ByID),
	))
	require.Equal(t, "succeeded", stateIn(queued), "and it ran")
	var logKinds string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Navigate(srv.URL+"/ui/tasks/"+queued),
		chromedp.Text(`#task-log`, &logKinds, chromedp.ByID),
		shot("task-log.png"),
	))
	require.Contains(t, logKinds, "accepted")
	require.Contains(t, logKinds, "admitted", "the resume admitted it")
	require.Contains(t, logKinds, "succeeded")

	// Sign out, sign in as an admin: the lanes page and every tenant's
	// triggers.
	var lanes, trig string
	require.NoError(t, chromedp.Run(ctx,
		chromedp.Click(`form[action="/ui/logout"] button`, chromedp.ByQuery),
		chromedp.WaitVisible(`#key`, chromedp.ByID),
		chromedp.SendKeys(`#key`, keyAdmin, chromedp.ByID),
		chromedp.Submit(`#key`, chromedp.ByID),
		chromedp.WaitVisible(`#functions`, chromedp.ByID),
		chromedp.Navigate(srv.URL+"/ui/lanes"),
		chromedp.Text(`#lanes`, &lanes, chromedp.ByID),
		shot("lanes.png"),
		chromedp.Navigate(srv.URL+"/ui/triggers"),
		chromedp.Text(`#triggers`, &trig, chromedp.ByID),
		shot("triggers.png"),
	))
	require.Contains(t, lanes, "tasklane.lane.shared.00")
	require.Contains(t, trig, "nightly-acme")
	require.Contains(t, trig, "nightly-other")

	// Readable on a phone.
	require.NoError(t, chromedp.Run(ctx,
		chromedp.EmulateViewport(390, 844),
		chromedp.Navigate(srv.URL+"/ui/"),
		chromedp.WaitVisible(`#functions`, chromedp.ByID),
		shot("overview-phone.png"),
	))
}
