package webhook_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/admission"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/triggers"
	"github.com/tasklane/tasklane/triggers/triggerstest"
	"github.com/tasklane/tasklane/triggers/webhook"
)

type bundle struct {
	srv   *httptest.Server
	sub   *triggerstest.Submitter
	store *triggers.Store
	hook  *webhook.Webhook
	sig   *webhook.Signature
}

func setup(t *testing.T, sig *webhook.Signature, idHeader string) *bundle {
	t.Helper()
	b := &bundle{sub: triggerstest.NewSubmitter(), store: triggerstest.Store(t), sig: sig}
	var err error
	b.hook, err = webhook.New(webhook.Config{
		Name: "signup", Tenant: "acme", Path: "/signup/", EventType: "com.example.user.signedup",
		EventSource: "/hooks/signup", IDHeader: idHeader, Signature: sig, MaxBodyBytes: 1024,
	}, triggers.Env{Submitter: b.sub, Store: b.store, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.Equal(t, "signup", b.hook.Path())
	require.NoError(t, b.hook.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, b.hook.Stop(context.Background())) })
	b.srv = httptest.NewServer(b.hook)
	t.Cleanup(b.srv.Close)
	return b
}

func (b *bundle) post(t *testing.T, body string, headers map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.srv.URL, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	return resp.StatusCode, string(out)
}

func (b *bundle) signed(body string, extra map[string]string) map[string]string {
	h := map[string]string{b.sig.Header: b.sig.Sign([]byte(body), time.Now()), "Content-Type": "application/json"}
	for k, v := range extra {
		h[k] = v
	}
	return h
}

// TestWebhookSignatures: only a validly signed, fresh request is queued.
func TestWebhookSignatures(t *testing.T) {
	t.Parallel()
	sig := &webhook.Signature{Scheme: webhook.SchemeSHA256, Header: "X-Hub-Signature-256", Secret: []byte("s3cret"), Tolerance: time.Minute}
	b := setup(t, sig, "X-GitHub-Delivery")
	body := `{"user":"ada"}`

	status, out := b.post(t, body, b.signed(body, map[string]string{"X-GitHub-Delivery": "d-1"}))
	require.Equal(t, http.StatusAccepted, status, out)
	var sr contracts.SubmitResponse
	require.NoError(t, json.Unmarshal([]byte(out), &sr))
	require.Equal(t, "d-1", sr.Tasks[0].EventID)

	for _, tt := range []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"Missing", map[string]string{"X-GitHub-Delivery": "d-2"}, `{"error":"signature: missing signature: no X-Hub-Signature-256 header"}`},
		{"Wrong", map[string]string{"X-GitHub-Delivery": "d-3", "X-Hub-Signature-256": "sha256=" + hmacHex("guess", body)}, `{"error":"signature: signature does not match"}`},
		// The delivery id is not signed: a captured request replayed under
		// a new one is still the same signed request.
		{"ReplayedWithNewDeliveryID", b.signed(body, map[string]string{"X-GitHub-Delivery": "d-forged"}), `{"error":"signature: replayed request (this signed request was accepted under another delivery id)"}`},
	} {
		status, out := b.post(t, body, tt.headers)
		require.Equal(t, http.StatusUnauthorized, status, tt.name)
		require.JSONEq(t, tt.want, out, tt.name)
	}
	// The identical delivery again (the provider lost the answer) is
	// answered as a duplicate of the task made.
	status, out = b.post(t, body, b.signed(body, map[string]string{"X-GitHub-Delivery": "d-1"}))
	require.Equal(t, http.StatusAccepted, status, out)
	require.Contains(t, out, `"duplicate":true`)
	require.Equal(t, []string{"d-1"}, b.sub.IDs(), "only the valid request was queued")
	require.Equal(t, 2, b.sub.Calls(), "the refused requests never reached the ingest path")

	e := b.sub.Events()[0]
	require.Equal(t, "acme", e.Tenant)
	require.Equal(t, "com.example.user.signedup", e.Event.Type())
	require.Equal(t, "/hooks/signup", e.Event.Source())
	require.Equal(t, "application/json", e.Event.DataContentType())
	require.Equal(t, body, string(e.Event.Data()))
	require.Equal(t, int64(2), b.hook.Status().Fires)
	require.Equal(t, "d-1", b.hook.Status().LastEventID)
}

// TestWebhookReplayWithoutDeliveryID: the MAC identifies the request.
func TestWebhookReplayWithoutDeliveryID(t *testing.T) {
	t.Parallel()
	sig := &webhook.Signature{Scheme: webhook.SchemeStripe, Header: "Stripe-Signature", Secret: []byte("whsec"), Tolerance: time.Minute}
	b := setup(t, sig, "")
	body := `{"id":"evt_1"}`
	h := b.signed(body, nil)
	status, out := b.post(t, body, h)
	require.Equal(t, http.StatusAccepted, status, out)
	status, out = b.post(t, body, h)
	require.Equal(t, http.StatusAccepted, status, out)
	require.Contains(t, out, `"duplicate":true`, "the same signed request again is a duplicate")

	// Another body (or another timestamp) is another request.
	status, out = b.post(t, `{"id":"evt_2"}`, b.signed(`{"id":"evt_2"}`, nil))
	require.Equal(t, http.StatusAccepted, status, out)
	require.Equal(t, 2, b.sub.Len())
	ids := b.sub.IDs()
	require.NotEqual(t, ids[0], ids[1], "without a delivery id every request gets a new event id")

	// The replay memory lasts twice the tolerance.
	keys, err := b.store.Redis().Keys(context.Background(), b.store.Key("signup", "seen:*")).Result()
	require.NoError(t, err)
	require.Len(t, keys, 2)
	ttl := b.store.Redis().PTTL(context.Background(), keys[0]).Val()
	require.Greater(t, ttl, time.Minute)
	require.LessOrEqual(t, ttl, 2*time.Minute)
}

// TestWebhookReplayAfterReplayWindow: without a timestamp in the scheme
// and without a delivery id, the same signed request is the same event
// (its id comes from the MAC), so once the replay record has expired the
// ingest path's deduplication still refuses to queue it again.
func TestWebhookReplayAfterReplayWindow(t *testing.T) {
	t.Parallel()
	sig := &webhook.Signature{Scheme: webhook.SchemeSHA256, Header: "X-Hub-Signature-256", Secret: []byte("s3cret"), Tolerance: time.Minute}
	b := setup(t, sig, "")
	ctx := context.Background()
	body := `{"user":"ada"}`
	h := b.signed(body, nil)

	status, out := b.post(t, body, h)
	require.Equal(t, http.StatusAccepted, status, out)
	var sr contracts.SubmitResponse
	require.NoError(t, json.Unmarshal([]byte(out), &sr))
	id := sr.Tasks[0].EventID
	require.Regexp(t, `^mac-[0-9a-f]{32}$`, id)
	status, out = b.post(t, body, h)
	require.Equal(t, http.StatusAccepted, status, out)
	require.NoError(t, json.Unmarshal([]byte(out), &sr))
	require.True(t, sr.Tasks[0].Duplicate, "a replay within the window is a duplicate")

	// The replay record expires (twice the tolerance later).
	keys, err := b.store.Redis().Keys(ctx, b.store.Key("signup", "seen:*")).Result()
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.NoError(t, b.store.Redis().Del(ctx, keys...).Err())

	status, out = b.post(t, body, h)
	require.Equal(t, http.StatusAccepted, status, out)
	require.NoError(t, json.Unmarshal([]byte(out), &sr))
	require.Equal(t, id, sr.Tasks[0].EventID, "the same signed request is the same event")
	require.True(t, sr.Tasks[0].Duplicate, "the ingest path deduplicates it")
	require.Equal(t, []string{id}, b.sub.IDs(), "queued once")
}

// TestWebhookUntimedReplayWindow: without a signed timestamp the replay
// record is what refuses a captured request under a new delivery id, so it
// lasts the untimed window, not twice the tolerance.
func TestWebhookUntimedReplayWindow(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		sig  *webhook.Signature
		want time.Duration
	}{
		{"untimed", &webhook.Signature{Scheme: webhook.SchemeSHA256, Header: "X-Sig", Secret: []byte("s"), Tolerance: time.Minute}, webhook.UntimedReplayWindow},
		{"timestamp header", &webhook.Signature{Scheme: webhook.SchemeSHA256, Header: "X-Sig", TimestampHeader: "X-Ts", Secret: []byte("s"), Tolerance: time.Minute}, 2 * time.Minute},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, c.sig.ReplayWindow())
			b := setup(t, c.sig, "X-Delivery")
			body := `{"n":1}`
			status, out := b.post(t, body, b.signed(body, map[string]string{"X-Delivery": "d-1", "X-Ts": strconv.FormatInt(time.Now().Unix(), 10)}))
			require.Equal(t, http.StatusAccepted, status, out)
			ctx := context.Background()
			keys, err := b.store.Redis().Keys(ctx, b.store.Key("signup", "seen:*")).Result()
			require.NoError(t, err)
			require.Len(t, keys, 1)
			ttl, err := b.store.Redis().PTTL(ctx, keys[0]).Result()
			require.NoError(t, err)
			require.InDelta(t, c.want.Seconds(), ttl.Seconds(), 5, "the replay record lasts the replay window")
			keys, err = b.store.Redis().Keys(ctx, b.store.Key("signup", "delivery:*")).Result()
			require.NoError(t, err)
			require.Len(t, keys, 1)
			ttl, err = b.store.Redis().PTTL(ctx, keys[0]).Result()
			require.NoError(t, err)
			require.InDelta(t, c.want.Seconds(), ttl.Seconds(), 5, "the delivery id's body hash is kept as long")
		})
	}
}

// TestWebhookFailedSubmitIsRetryable: when the ingest path fails, the
// provider's retry of the same delivery is not taken for a replay, and
// carries the same event id.
func TestWebhookFailedSubmitIsRetryable(t *testing.T) {
	t.Parallel()
	sig := &webhook.Signature{Scheme: webhook.SchemeSHA256, Header: "X-Sig", Secret: []byte("s"), Tolerance: time.Minute}
	b := setup(t, sig, "X-Delivery")
	var fail atomic.Bool
	fail.Store(true)
	b.sub.FailFunc = func(string, []*event.Event) error {
		if fail.Load() {
			return &ingest.Error{Status: http.StatusServiceUnavailable, Msg: "the task ledger did not answer"}
		}
		return nil
	}
	body := `{}`
	h := b.signed(body, map[string]string{"X-Delivery": "d-9"})
	status, out := b.post(t, body, h)
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.JSONEq(t, `{"error":"the task ledger did not answer"}`, out)
	require.Equal(t, triggers.StateFailing, b.hook.Status().State)

	fail.Store(false)
	status, out = b.post(t, body, h)
	require.Equal(t, http.StatusAccepted, status, out)
	require.Equal(t, []string{"d-9"}, b.sub.IDs())
	require.Equal(t, triggers.StateRunning, b.hook.Status().State)

	// A refusal by the ingest path (no function takes the type) is passed on.
	b.sub.FailFunc = func(string, []*event.Event) error {
		return &ingest.Error{Status: http.StatusUnprocessableEntity, Msg: `type: no function subscribes to type "x"`}
	}
	other := `{"n":10}`
	status, out = b.post(t, other, b.signed(other, map[string]string{"X-Delivery": "d-10"}))
	require.Equal(t, http.StatusUnprocessableEntity, status)
	require.JSONEq(t, `{"error":"type: no function subscribes to type \"x\""}`, out)

	// Nothing was queued, so the refused request is forgotten: its signed
	// body is not held to that delivery id.
	b.sub.FailFunc = nil
	status, out = b.post(t, other, b.signed(other, map[string]string{"X-Delivery": "d-11"}))
	require.Equal(t, http.StatusAccepted, status, out)
	require.Equal(t, []string{"d-9", "d-11"}, b.sub.IDs())
}

// TestWebhookBackpressure: a delivery refused by backpressure answers its
// caller 429 with Retry-After and the backlog, is forgotten (nothing was
// queued), and its retry is accepted once the refusals stop.
func TestWebhookBackpressure(t *testing.T) {
	t.Parallel()
	sig := &webhook.Signature{Scheme: webhook.SchemeSHA256, Header: "X-Sig", Secret: []byte("s"), Tolerance: time.Minute}
	b := setup(t, sig, "X-Delivery")
	var refusing atomic.Bool
	refusing.Store(true)
	b.sub.FailFunc = func(string, []*event.Event) error {
		if refusing.Load() {
			return &admission.RefusedError{Tenant: "acme", Reason: contracts.RefusedTenantBacklog, Backlog: 120, Limit: 100, RetryAfter: 7 * time.Second}
		}
		return nil
	}
	body := `{"n":1}`
	h := b.signed(body, map[string]string{"X-Delivery": "d-1"})
	req, err := http.NewRequest(http.MethodPost, b.srv.URL, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	out, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Equal(t, "7", resp.Header.Get("Retry-After"))
	var er contracts.ErrorResponse
	require.NoError(t, json.Unmarshal(out, &er))
	require.Contains(t, er.Error, "backlog")
	require.Equal(t, contracts.ErrorResponse{Error: er.Error, Tenant: "acme", Backlog: 120, Limit: 100, Reason: contracts.RefusedTenantBacklog}, er)

	refusing.Store(false)
	status, got := b.post(t, body, h)
	require.Equal(t, http.StatusAccepted, status, got)
	require.Equal(t, []string{"d-1"}, b.sub.IDs())
}

func TestWebhookUnsigned(t *testing.T) {
	t.Parallel()
	b := setup(t, nil, "X-Delivery")

	status, out := b.post(t, "name=ada", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "X-Delivery": "form-1"})
	require.Equal(t, http.StatusAccepted, status, out)
	// The same delivery again is deduplicated by the ingest path, not refused.
	status, out = b.post(t, "name=ada", map[string]string{"Content-Type": "application/x-www-form-urlencoded", "X-Delivery": "form-1"})
	require.Equal(t, http.StatusAccepted, status, out)
	require.Contains(t, out, `"duplicate":true`)
	status, out = b.post(t, "", nil)
	require.Equal(t, http.StatusAccepted, status, out)
	require.Equal(t, 2, b.sub.Len())
	e := b.sub.Events()[0].Event
	require.Equal(t, "application/x-www-form-urlencoded", e.DataContentType())
	require.Equal(t, "name=ada", string(e.Data()))
	require.Empty(t, b.sub.Events()[1].Event.Data())

	status, out = b.post(t, strings.Repeat("x", 1025), nil)
	require.Equal(t, http.StatusRequestEntityTooLarge, status)
	require.JSONEq(t, `{"error":"body: larger than 1024 bytes"}`, out)

	resp, err := http.Get(b.srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "POST", resp.Header.Get("Allow"))

	// A stopped trigger takes nothing.
	require.NoError(t, b.hook.Stop(context.Background()))
	status, _ = b.post(t, "x", nil)
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Equal(t, 2, b.sub.Len())
	require.Equal(t, triggers.StateStopped, b.hook.Status().State)
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := webhook.New(webhook.Config{Name: "x", Signature: &webhook.Signature{Scheme: "md5"}}, triggers.Env{})
	require.ErrorContains(t, err, "Name, Tenant, Path, EventType and EventSource are required")
	require.ErrorContains(t, err, `signature scheme "md5"`)
	require.ErrorContains(t, err, "signature secret: empty")
	require.ErrorContains(t, err, "triggers.Env.Store: missing")
}

func decode(t *testing.T, out string) contracts.SubmitResponse {
	t.Helper()
	var sr contracts.SubmitResponse
	require.NoError(t, json.Unmarshal([]byte(out), &sr), out)
	return sr
}

// TestWebhookIdenticalRetryIsDuplicate: a provider that retries an
// identical delivery (same delivery id, same body) after losing the answer
// gets 2xx with the task marked duplicate, also when the retry is signed
// again with a new timestamp; nothing is queued twice.
func TestWebhookIdenticalRetryIsDuplicate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		sig  *webhook.Signature
		// resign: the provider signs its retry again (new timestamp).
		resign bool
	}{
		{"same signature", &webhook.Signature{Scheme: webhook.SchemeSHA256, Header: "X-Hub-Signature-256", Secret: []byte("s3cret"), Tolerance: time.Minute}, false},
		{"signed again", &webhook.Signature{Scheme: webhook.SchemeStripe, Header: "Stripe-Signature", Secret: []byte("whsec"), Tolerance: time.Minute}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, c.sig, "X-Delivery")
			body := `{"user":"ada"}`
			first := map[string]string{c.sig.Header: c.sig.Sign([]byte(body), time.Now().Add(-2*time.Second)), "X-Delivery": "d-1", "Content-Type": "application/json"}
			status, out := b.post(t, body, first)
			require.Equal(t, http.StatusAccepted, status, out)
			sr := decode(t, out)
			require.Len(t, sr.Tasks, 1)
			require.False(t, sr.Tasks[0].Duplicate)

			retry := first
			if c.resign {
				retry = b.signed(body, map[string]string{"X-Delivery": "d-1"})
				require.NotEqual(t, first[c.sig.Header], retry[c.sig.Header])
			}
			for range 2 {
				status, out = b.post(t, body, retry)
				require.Equal(t, http.StatusAccepted, status, out)
				again := decode(t, out)
				require.Len(t, again.Tasks, 1)
				require.True(t, again.Tasks[0].Duplicate, out)
				require.Equal(t, sr.Tasks[0].ID, again.Tasks[0].ID, "the task made by the first delivery")
			}
			require.Equal(t, []string{"d-1"}, b.sub.IDs(), "queued once")

			// The captured request under another delivery id is still a
			// replay: that would be another event.
			forged := map[string]string{c.sig.Header: retry[c.sig.Header], "X-Delivery": "d-forged", "Content-Type": "application/json"}
			status, out = b.post(t, body, forged)
			require.Equal(t, http.StatusUnauthorized, status, out)
			require.JSONEq(t, `{"error":"signature: replayed request (this signed request was accepted under another delivery id)"}`, out)
			require.Equal(t, []string{"d-1"}, b.sub.IDs())
		})
	}
}

// TestWebhookDifferentBodyUnderUsedDeliveryID: a validly signed delivery
// whose id was accepted with another body is refused with 409 and queues
// nothing (the ingest path would have answered it as a duplicate of the
// first body and dropped this one unseen).
func TestWebhookDifferentBodyUnderUsedDeliveryID(t *testing.T) {
	t.Parallel()
	sig := &webhook.Signature{Scheme: webhook.SchemeSHA256, Header: "X-Hub-Signature-256", Secret: []byte("s3cret"), Tolerance: time.Minute}
	b := setup(t, sig, "X-Delivery")
	body := `{"user":"ada"}`
	status, out := b.post(t, body, b.signed(body, map[string]string{"X-Delivery": "d-1"}))
	require.Equal(t, http.StatusAccepted, status, out)

	other := `{"user":"eve"}`
	for range 2 {
		status, out = b.post(t, other, b.signed(other, map[string]string{"X-Delivery": "d-1"}))
		require.Equal(t, http.StatusConflict, status, out)
		require.JSONEq(t, `{"error":"delivery id: d-1 was already accepted with another body"}`, out)
	}
	require.Equal(t, 1, b.sub.Calls(), "the conflicting delivery never reached the ingest path")
	require.Equal(t, body, string(b.sub.Events()[0].Event.Data()))

	// The original delivery's retry is still answered as a duplicate.
	status, out = b.post(t, body, b.signed(body, map[string]string{"X-Delivery": "d-1"}))
	require.Equal(t, http.StatusAccepted, status, out)
	require.True(t, decode(t, out).Tasks[0].Duplicate)
	require.Equal(t, 1, b.sub.Len())
}

// TestWebhookConcurrentIdenticalDeliveries: a retry that arrives while the
// first delivery is still being submitted is answered as a duplicate too:
// both reach the ingest path with the same event id and exactly one task
// is made.
func TestWebhookConcurrentIdenticalDeliveries(t *testing.T) {
	t.Parallel()
	sig := &webhook.Signature{Scheme: webhook.SchemeSHA256, Header: "X-Hub-Signature-256", Secret: []byte("s3cret"), Tolerance: time.Minute}
	b := setup(t, sig, "X-Delivery")
	const n = 4
	// Hold every submission until all n are inside the ingest path, so
	// the later ones arrive while the first is still being submitted.
	b.sub.FailFunc = func(string, []*event.Event) error {
		deadline := time.Now().Add(5 * time.Second)
		for b.sub.Calls() < n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	}
	body := `{"user":"ada"}`
	h := b.signed(body, map[string]string{"X-Delivery": "d-1"})
	type answer struct {
		status int
		out    string
	}
	answers := make(chan answer, n)
	for range n {
		go func() {
			req, err := http.NewRequest(http.MethodPost, b.srv.URL, strings.NewReader(body))
			if err != nil {
				answers <- answer{out: err.Error()}
				return
			}
			for k, v := range h {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				answers <- answer{out: err.Error()}
				return
			}
			defer resp.Body.Close()
			out, _ := io.ReadAll(resp.Body)
			answers <- answer{resp.StatusCode, string(out)}
		}()
	}
	made := 0
	for range n {
		a := <-answers
		require.Equal(t, http.StatusAccepted, a.status, a.out)
		sr := decode(t, a.out)
		require.Len(t, sr.Tasks, 1)
		if !sr.Tasks[0].Duplicate {
			made++
		}
	}
	require.Equal(t, 1, made, "one delivery made the task, the others were told it is a duplicate")
	require.Equal(t, n, b.sub.Calls())
	require.Equal(t, []string{"d-1"}, b.sub.IDs())
}
