package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/triggers/webhook"
)

func hmacHex(secret, msg string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

func TestSignatureVerify(t *testing.T) {
	t.Parallel()

	now := time.Unix(1_800_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	old := strconv.FormatInt(now.Add(-6*time.Minute).Unix(), 10)
	future := strconv.FormatInt(now.Add(6*time.Minute).Unix(), 10)
	body := `{"id":"evt_1","type":"payment_intent.succeeded"}`
	const secret = "whsec_test"

	github := &webhook.Signature{Scheme: webhook.SchemeSHA256, Header: "X-Hub-Signature-256", Secret: []byte(secret), Tolerance: 5 * time.Minute}
	timed := &webhook.Signature{Scheme: webhook.SchemeSHA256, Header: "X-Signature", TimestampHeader: "X-Timestamp", Secret: []byte(secret), Tolerance: 5 * time.Minute}
	stripe := &webhook.Signature{Scheme: webhook.SchemeStripe, Header: "Stripe-Signature", Secret: []byte(secret), Tolerance: 5 * time.Minute}

	tests := []struct {
		name    string
		sig     *webhook.Signature
		headers map[string]string
		body    string
		wantErr error
	}{
		{"GitHubValid", github, map[string]string{"X-Hub-Signature-256": "sha256=" + hmacHex(secret, body)}, body, nil},
		{"GitHubBareHex", github, map[string]string{"X-Hub-Signature-256": hmacHex(secret, body)}, body, nil},
		{"GitHubUpperHex", github, map[string]string{"X-Hub-Signature-256": "sha256=" + upper(hmacHex(secret, body))}, body, nil},
		{"GitHubMissing", github, nil, body, webhook.ErrMissingSignature},
		{"GitHubWrongSecret", github, map[string]string{"X-Hub-Signature-256": "sha256=" + hmacHex("other", body)}, body, webhook.ErrBadSignature},
		{"GitHubBodyChanged", github, map[string]string{"X-Hub-Signature-256": "sha256=" + hmacHex(secret, body)}, body + " ", webhook.ErrBadSignature},
		{"GitHubNotHex", github, map[string]string{"X-Hub-Signature-256": "sha256=zz"}, body, webhook.ErrBadSignature},
		{"GitHubSHA1Header", github, map[string]string{"X-Hub-Signature": "sha1=" + hmacHex(secret, body)}, body, webhook.ErrMissingSignature},
		{"TimedValid", timed, map[string]string{"X-Timestamp": ts, "X-Signature": "sha256=" + hmacHex(secret, ts+"."+body)}, body, nil},
		{"TimedMissingTimestamp", timed, map[string]string{"X-Signature": "sha256=" + hmacHex(secret, ts+"."+body)}, body, webhook.ErrMissingSignature},
		{"TimedOld", timed, map[string]string{"X-Timestamp": old, "X-Signature": "sha256=" + hmacHex(secret, old+"."+body)}, body, webhook.ErrStaleTimestamp},
		{"TimedFuture", timed, map[string]string{"X-Timestamp": future, "X-Signature": "sha256=" + hmacHex(secret, future+"."+body)}, body, webhook.ErrStaleTimestamp},
		{"TimedTimestampNotSigned", timed, map[string]string{"X-Timestamp": ts, "X-Signature": "sha256=" + hmacHex(secret, body)}, body, webhook.ErrBadSignature},
		{"TimedBadTimestamp", timed, map[string]string{"X-Timestamp": "yesterday", "X-Signature": "sha256=" + hmacHex(secret, body)}, body, webhook.ErrBadSignature},
		{"StripeValid", stripe, map[string]string{"Stripe-Signature": "t=" + ts + ",v1=" + hmacHex(secret, ts+"."+body)}, body, nil},
		{"StripeRotation", stripe, map[string]string{"Stripe-Signature": "t=" + ts + ",v1=" + hmacHex("old-secret", ts+"."+body) + ",v1=" + hmacHex(secret, ts+"."+body) + ",v0=abc"}, body, nil},
		{"StripeOld", stripe, map[string]string{"Stripe-Signature": "t=" + old + ",v1=" + hmacHex(secret, old+"."+body)}, body, webhook.ErrStaleTimestamp},
		{"StripeTimestampTampered", stripe, map[string]string{"Stripe-Signature": "t=" + ts + ",v1=" + hmacHex(secret, old+"."+body)}, body, webhook.ErrBadSignature},
		{"StripeNoV1", stripe, map[string]string{"Stripe-Signature": "t=" + ts}, body, webhook.ErrBadSignature},
		{"StripeNoT", stripe, map[string]string{"Stripe-Signature": "v1=" + hmacHex(secret, body)}, body, webhook.ErrBadSignature},
		{"StripeMissing", stripe, nil, body, webhook.ErrMissingSignature},
		{"EmptyBodyValid", github, map[string]string{"X-Hub-Signature-256": "sha256=" + hmacHex(secret, "")}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			for k, v := range tt.headers {
				h.Set(k, v)
			}
			mac, err := tt.sig.Verify(h, []byte(tt.body), now)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				require.Empty(t, mac)
				return
			}
			require.NoError(t, err)
			require.Len(t, mac, 64)
		})
	}

	// Sign produces what Verify accepts.
	for _, s := range []*webhook.Signature{github, timed, stripe} {
		h := http.Header{}
		h.Set(s.Header, s.Sign([]byte(body), now))
		if s.TimestampHeader != "" {
			h.Set(s.TimestampHeader, ts)
		}
		_, err := s.Verify(h, []byte(body), now)
		require.NoError(t, err, s.Scheme)
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
