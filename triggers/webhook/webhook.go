// Package webhook is the HTTP webhook trigger: it takes any body POSTed to
// /hooks/<path> by a system that does not speak CloudEvents (payment
// providers, Git hosting, form services) and submits it as the data of a
// CloudEvent of the configured type and source, for the trigger's tenant.
//
// # Answers
//
//   - 202 {"tasks": [...]}: the event was submitted (the same answer as
//     POST /v1/events); for a retry of an accepted delivery, the tasks it
//     made, with "duplicate": true;
//   - 401 {"error": ...}: a signature is configured and the request has none,
//     a wrong one, a timestamp outside the tolerance, or is an accepted
//     signed request replayed under another delivery id; nothing is queued;
//   - 409 {"error": ...}: a validly signed request whose delivery id was
//     accepted with another body; nothing is queued;
//   - 405 for a method other than POST, 413 for a body over the limit;
//   - the ingest path's own errors (400, 422, 503) otherwise.
//
// # Signatures
//
// With a [Signature], the HMAC-SHA256 is computed over the raw body bytes
// (with the timestamp in front when the scheme has one) and compared with
// hmac.Equal before anything is parsed. An accepted request is remembered
// in Redis for twice the tolerance, by its MAC (with its delivery id) and
// by its delivery id (with its body hash), in one script that sets only
// what is missing. A delivery is identical to an accepted one when its
// delivery id and body hash match (a provider retrying after a lost
// answer, signing again or not): it is submitted again under the same
// event id, and the ingest path answers it as a duplicate of the task
// made, also while the first is still being submitted (its dedup is
// atomic). The same signed request under another delivery id is a replay
// (that header is not signed: an attacker could change it, and make
// another event) and refused with 401; another body under an accepted
// delivery id is refused with 409: the signature is valid, so it is no
// authentication failure, but it conflicts with what the id already
// names (the ingest path would answer it as a duplicate and drop the new
// body unseen). When the submission of a new request fails, its records
// are deleted again (nothing was queued, or it is unknown and the retry
// carries the same event id).
//
// A scheme without a timestamp (SchemeSHA256 without TimestampHeader)
// accepts a captured request for ever as far as the signature goes, so its
// replay record is kept for UntimedReplayWindow (72h) rather than twice the
// tolerance; after that a replay under a new delivery id is accepted again.
// An identical retry relies on the ingest path's dedup window
// (ledger.dedup_window, 24h by default) to be answered as a duplicate.
// Prefer a scheme that signs a timestamp (stripe, or TimestampHeader).
//
// # Event ids
//
// When IDHeader is set and the request carries it (GitHub's
// X-GitHub-Delivery, for instance), its value is the event id, so a
// provider's retry of a delivery is deduplicated. Otherwise a signed
// request's event id is "mac-" and the first 32 hex digits of its MAC (the
// same signed request is the same event), and an unsigned one gets a new
// ULID.
package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/triggers"
)

// MaxBodyBytesDefault is the default Config.MaxBodyBytes.
const MaxBodyBytesDefault = 64 << 10

// Config configures a webhook trigger.
type Config struct {
	// Name is the trigger's name. Required.
	Name string
	// Tenant owns the events. Required.
	Tenant string
	// Path is the hook path under /hooks/, without surrounding slashes.
	// Required.
	Path string
	// EventType and EventSource are the events' type and source. Required.
	EventType string
	// EventSource: see EventType.
	EventSource string
	// IDHeader names a header whose value, when present, is the event id.
	// Default none.
	IDHeader string
	// Signature, when set, is required on every request. Default nil.
	Signature *Signature
	// MaxBodyBytes bounds the body. Default 64 KiB.
	MaxBodyBytes int64
}

// Webhook is a webhook trigger; it is an http.Handler.
type Webhook struct {
	cfg Config
	env triggers.Env
	rep *triggers.Reporter
	triggers.HookLife
}

// New returns a webhook trigger.
func New(cfg Config, env triggers.Env) (*Webhook, error) {
	env = env.WithDefaults()
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = MaxBodyBytesDefault
	}
	cfg.Path = strings.Trim(cfg.Path, "/")
	var errs []error
	if cfg.Name == "" || cfg.Tenant == "" || cfg.Path == "" || cfg.EventType == "" || cfg.EventSource == "" {
		errs = append(errs, errors.New("webhook trigger: Name, Tenant, Path, EventType and EventSource are required"))
	}
	if cfg.Signature != nil {
		if err := cfg.Signature.validate(); err != nil {
			errs = append(errs, fmt.Errorf("webhook trigger %s: %w", cfg.Name, err))
		}
	}
	errs = append(errs, env.Validate())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	env.Logger = env.Logger.With("component", "trigger", "trigger", cfg.Name, "kind", config.TriggerKindHTTP)
	rep := triggers.NewReporter(env, cfg.Name, config.TriggerKindHTTP)
	return &Webhook{cfg: cfg, env: env, rep: rep, HookLife: triggers.HookLife{Rep: rep, Background: triggers.Background{What: "webhook trigger " + cfg.Name}}}, nil
}

// Name is the trigger's name.
func (w *Webhook) Name() string { return w.cfg.Name }

// Kind is "http".
func (w *Webhook) Kind() string { return config.TriggerKindHTTP }

// Path is the hook path.
func (w *Webhook) Path() string { return w.cfg.Path }

// Status is the trigger's state in this process.
func (w *Webhook) Status() triggers.Status { return w.rep.Status() }

// ServeHTTP takes one webhook request.
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		triggers.WriteError(rw, http.StatusMethodNotAllowed, "method: use POST")
		return
	}
	if w.Stopped() {
		rw.Header().Set("Retry-After", "1")
		triggers.WriteError(rw, http.StatusServiceUnavailable, "trigger "+w.cfg.Name+" is stopped")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, w.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			triggers.WriteError(rw, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than %d bytes", w.cfg.MaxBodyBytes))
			return
		}
		triggers.WriteError(rw, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	ctx := r.Context()
	deliveryID := ""
	if w.cfg.IDHeader != "" {
		deliveryID = strings.TrimSpace(r.Header.Get(w.cfg.IDHeader))
	}

	var mac string
	var seenKeys []string // set by this request: forgotten when it fails
	if s := w.cfg.Signature; s != nil {
		var err error
		mac, err = s.Verify(r.Header, body, w.env.Now())
		if err != nil {
			w.env.Logger.InfoContext(ctx, "refusing webhook request", "reason", err.Error(), "remote", r.RemoteAddr)
			triggers.WriteError(rw, http.StatusUnauthorized, "signature: "+err.Error())
			return
		}
		seen, keys, err := w.remember(ctx, mac, deliveryID, body, s.ReplayWindow())
		switch {
		case err != nil:
			w.rep.Failed(ctx, "checking for a replay", err)
			rw.Header().Set("Retry-After", "1")
			triggers.WriteError(rw, http.StatusServiceUnavailable, "the replay check did not answer; retry")
			return
		case seen == seenReplay:
			w.env.Logger.InfoContext(ctx, "refusing replayed webhook request", "delivery_id", shown(deliveryID), "remote", r.RemoteAddr)
			triggers.WriteError(rw, http.StatusUnauthorized, "signature: "+ErrReplayed.Error()+" (this signed request was accepted under another delivery id)")
			return
		case seen == seenConflict:
			w.env.Logger.InfoContext(ctx, "refusing a delivery id already accepted with another body", "delivery_id", shown(deliveryID), "remote", r.RemoteAddr)
			triggers.WriteError(rw, http.StatusConflict, "delivery id: "+shown(deliveryID)+" was already accepted with another body")
			return
		case seen == seenIdentical:
			// A retry of an accepted delivery (its answer was lost, or
			// the first is still being submitted): submitted again with
			// the same event id, the ingest path answers it as a
			// duplicate of the task made by the first.
			w.env.Logger.InfoContext(ctx, "webhook delivery retried", "delivery_id", shown(deliveryID))
		default:
			seenKeys = keys
		}
	}

	e := w.event(r, body, eventID(deliveryID, mac))
	tasks, err := w.env.Submit(ctx, w.cfg.Tenant, []*event.Event{e})
	if err != nil {
		if len(seenKeys) > 0 {
			// Nothing was queued (or it is unknown): forget the request,
			// so that its signed body is not held to this delivery id.
			// The retry carries the same event id. Records of an earlier
			// delivery stay.
			if derr := w.env.Store.Redis().Del(context.WithoutCancel(ctx), seenKeys...).Err(); derr != nil {
				w.env.Logger.WarnContext(ctx, "forgetting a failed delivery for its retry", "error", derr)
			}
		}
		w.rep.Failed(ctx, "submitting a webhook event", err)
		if refused, ok := triggers.Refused(err); ok {
			triggers.WriteRefused(rw, refused)
			return
		}
		var ie *ingest.Error
		if errors.As(err, &ie) {
			if ie.Status == http.StatusServiceUnavailable {
				rw.Header().Set("Retry-After", "1")
			}
			triggers.WriteError(rw, ie.Status, ie.Msg)
			return
		}
		rw.Header().Set("Retry-After", "1")
		triggers.WriteError(rw, http.StatusServiceUnavailable, "the event could not be recorded; retry")
		return
	}
	w.rep.Fired(ctx, e.ID(), 1)
	triggers.WriteJSON(rw, http.StatusAccepted, contracts.SubmitResponse{Tasks: tasks})
}

// What remember found.
const (
	seenFresh     = "fresh"     // neither the request nor its delivery id
	seenIdentical = "identical" // the same delivery id and body again
	seenReplay    = "replay"    // the same signed request under another delivery id
	seenConflict  = "conflict"  // the delivery id, with another body
)

// rememberScript records an accepted signed request and classifies a
// request seen before. KEYS[1] the MAC's record, KEYS[2] (with a delivery
// id) the delivery id's record; ARGV[1] the body hash, ARGV[2] the
// delivery id's hash (empty without one), ARGV[3] the ttl ms. The MAC's
// record holds "<body hash>:<delivery id hash>", the delivery id's the
// body hash; a record missing is set (NX semantics), a present one is
// never changed or extended. A value of another shape (a record written by
// an earlier version) matches nothing: a replay.
var rememberScript = redis.NewScript(`
local want = ARGV[1] .. ':' .. ARGV[2]
local m = redis.call('GET', KEYS[1])
if m and m ~= want then return 'replay' end
local d = false
if #KEYS > 1 then
  d = redis.call('GET', KEYS[2])
  if d and d ~= ARGV[1] then return 'conflict' end
  if not d then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3]) end
end
if not m then redis.call('SET', KEYS[1], want, 'PX', ARGV[3]) end
if m or d then return 'identical' end
return 'fresh'
`)

// remember records an accepted signed request for ttl, by its MAC (the
// delivery id is not signed: a captured request replayed under a new id is
// the same request) and by its delivery id with its body hash (a delivery
// is identical when both match), and says whether it was seen before.
// It returns the keys of the records too.
func (w *Webhook) remember(ctx context.Context, mac, deliveryID string, body []byte, ttl time.Duration) (string, []string, error) {
	bodySum := sha256.Sum256(body)
	keys := []string{w.replayKey(mac)}
	idHash := ""
	if deliveryID != "" {
		sum := sha256.Sum256([]byte(deliveryID))
		idHash = hex.EncodeToString(sum[:16])
		keys = append(keys, w.env.Store.Key(w.cfg.Name, "delivery:"+idHash))
	}
	seen, err := rememberScript.Run(ctx, w.env.Store.Redis(), keys, hex.EncodeToString(bodySum[:]), idHash, ttl.Milliseconds()).Text()
	if err != nil {
		return "", nil, err
	}
	switch seen {
	case seenFresh, seenIdentical, seenReplay, seenConflict:
		return seen, keys, nil
	}
	return "", nil, fmt.Errorf("replay check: unexpected answer %q", seen)
}

// shownIDBytes bounds a delivery id in answers and logs (the header is
// bounded only by the server's header limit).
const shownIDBytes = 128

// shown is id for an answer or a log line, cut to shownIDBytes.
func shown(id string) string {
	if len(id) <= shownIDBytes {
		return id
	}
	return strings.ToValidUTF8(id[:shownIDBytes], "") + "..."
}

// replayKey is where an accepted request (by its MAC) is remembered.
func (w *Webhook) replayKey(mac string) string {
	sum := sha256.Sum256([]byte(mac))
	return w.env.Store.Key(w.cfg.Name, "seen:"+hex.EncodeToString(sum[:16]))
}

// eventID is the event id of a request: its delivery id when it has one,
// else "mac-<first 32 hex digits of the MAC>" when it is signed (so the
// same signed request again, after the replay memory expired, is the same
// event and the ingest path deduplicates it), else a new ULID.
func eventID(deliveryID, mac string) string {
	switch {
	case deliveryID != "":
		return deliveryID
	case mac != "":
		return "mac-" + mac[:min(len(mac), 32)]
	default:
		return ulid.Make().String()
	}
}

func (w *Webhook) event(r *http.Request, body []byte, id string) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource(w.cfg.EventSource)
	e.SetType(w.cfg.EventType)
	e.SetTime(w.env.Now())
	if len(body) > 0 {
		ct := r.Header.Get("Content-Type")
		if ct == "" {
			ct = "application/octet-stream"
		}
		e.SetDataContentType(ct)
		e.DataEncoded = body
	}
	return &e
}
