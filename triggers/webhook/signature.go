package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Signature schemes.
const (
	// SchemeSHA256 is a hex HMAC-SHA256 in one header, "sha256=<hex>" (the
	// "sha256=" is optional), GitHub style: over the raw body, or over
	// "<timestamp>.<body>" when a timestamp header is configured.
	SchemeSHA256 = "sha256"
	// SchemeStripe is Stripe's "t=<unix>,v1=<hex>[,v1=<hex>...]": an
	// HMAC-SHA256 over "<t>.<body>"; any v1 may match (secret rotation).
	SchemeStripe = "stripe"
)

// Signature checks requests signed with a shared secret.
type Signature struct {
	// Scheme is SchemeSHA256 or SchemeStripe. Required.
	Scheme string
	// Header carries the signature. Required.
	Header string
	// TimestampHeader (SchemeSHA256 only) carries the request's Unix time,
	// signed with the body. Default none.
	TimestampHeader string
	// Secret is the shared secret. Required, not empty.
	Secret []byte
	// Tolerance bounds the distance between a signed timestamp and the
	// clock; replays are remembered for twice this long. Required.
	Tolerance time.Duration
}

// UntimedReplayWindow is how long an accepted request is remembered when
// its scheme signs no timestamp (SchemeSHA256 without TimestampHeader):
// nothing else dates such a request, so its replay record is what refuses
// it, under any delivery id. As long as the default deduplication window.
const UntimedReplayWindow = 72 * time.Hour

// ReplayWindow is how long an accepted request is remembered to refuse
// its replays: twice the tolerance when a timestamp is signed (an older
// request fails the timestamp check anyway), else UntimedReplayWindow.
func (s *Signature) ReplayWindow() time.Duration {
	if s.Scheme == SchemeStripe || s.TimestampHeader != "" {
		return 2 * s.Tolerance
	}
	return UntimedReplayWindow
}

// Reasons a signature is refused; every one is answered 401.
var (
	ErrMissingSignature = errors.New("missing signature")
	ErrBadSignature     = errors.New("signature does not match")
	ErrStaleTimestamp   = errors.New("timestamp outside the tolerance")
	ErrReplayed         = errors.New("replayed request")
)

// validate checks s.
func (s *Signature) validate() error {
	var errs []error
	if s.Scheme != SchemeSHA256 && s.Scheme != SchemeStripe {
		errs = append(errs, fmt.Errorf("signature scheme %q (want %s or %s)", s.Scheme, SchemeSHA256, SchemeStripe))
	}
	if s.Header == "" {
		errs = append(errs, errors.New("signature header: missing"))
	}
	if s.Scheme == SchemeStripe && s.TimestampHeader != "" {
		errs = append(errs, errors.New("signature timestamp header: not used with the stripe scheme"))
	}
	if len(s.Secret) == 0 {
		errs = append(errs, errors.New("signature secret: empty"))
	}
	if s.Tolerance <= 0 {
		errs = append(errs, errors.New("signature tolerance: must be positive"))
	}
	return errors.Join(errs...)
}

// Verify checks the signature of a request with header h and raw body at
// now. It returns the matching MAC (hex), which identifies the signed
// request for replay detection, or why the request is refused.
func (s *Signature) Verify(h http.Header, body []byte, now time.Time) (string, error) {
	raw := strings.TrimSpace(h.Get(s.Header))
	if raw == "" {
		return "", fmt.Errorf("%w: no %s header", ErrMissingSignature, s.Header)
	}
	var ts string
	var candidates []string
	switch s.Scheme {
	case SchemeStripe:
		for part := range strings.SplitSeq(raw, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			switch k {
			case "t":
				ts = v
			case "v1":
				candidates = append(candidates, v)
			}
		}
		if ts == "" || len(candidates) == 0 {
			return "", fmt.Errorf("%w: %s header is not t=<unix>,v1=<hex>", ErrBadSignature, s.Header)
		}
	default:
		candidates = []string{strings.TrimPrefix(raw, "sha256=")}
		if s.TimestampHeader != "" {
			ts = strings.TrimSpace(h.Get(s.TimestampHeader))
			if ts == "" {
				return "", fmt.Errorf("%w: no %s header", ErrMissingSignature, s.TimestampHeader)
			}
		}
	}
	if ts != "" {
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return "", fmt.Errorf("%w: timestamp %q is not Unix seconds", ErrBadSignature, ts)
		}
		if d := now.Sub(time.Unix(sec, 0)); d > s.Tolerance || d < -s.Tolerance {
			return "", fmt.Errorf("%w of %s", ErrStaleTimestamp, s.Tolerance)
		}
	}
	mac := hmac.New(sha256.New, s.Secret)
	if ts != "" {
		mac.Write([]byte(ts))
		mac.Write([]byte{'.'})
	}
	mac.Write(body)
	want := mac.Sum(nil)
	for _, c := range candidates {
		got, err := hex.DecodeString(strings.TrimSpace(c))
		if err == nil && hmac.Equal(got, want) {
			return hex.EncodeToString(want), nil
		}
	}
	return "", ErrBadSignature
}

// Sign returns the header value s expects for body at ts (tests, clients).
// With SchemeSHA256 and a timestamp header, the timestamp goes in that
// header: pass the same ts.
func (s *Signature) Sign(body []byte, ts time.Time) string {
	mac := hmac.New(sha256.New, s.Secret)
	unix := strconv.FormatInt(ts.Unix(), 10)
	if s.Scheme == SchemeStripe || s.TimestampHeader != "" {
		mac.Write([]byte(unix + "."))
	}
	mac.Write(body)
	sum := hex.EncodeToString(mac.Sum(nil))
	if s.Scheme == SchemeStripe {
		return "t=" + unix + ",v1=" + sum
	}
	return "sha256=" + sum
}
