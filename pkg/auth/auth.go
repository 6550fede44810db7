// Package auth maps API keys to tenants.
//
// Keys are configured either in plain text or as "sha256:<hex>" of the key.
// Both are kept only as SHA-256 digests, and a presented key is compared
// against every configured digest in constant time, so neither the answer
// time nor an early exit tells which key (or how much of one) matched.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Errors Authenticate returns.
var (
	ErrNoKey    = errors.New("missing API key: send Authorization: Bearer <key>")
	ErrBadKey   = errors.New("invalid API key")
	ErrBadShape = errors.New("malformed Authorization header: want Bearer <key>")
)

// HashPrefix marks a configured key given as its SHA-256 digest.
const HashPrefix = "sha256:"

type entry struct {
	digest [sha256.Size]byte
	tenant string
}

// Keyring resolves API keys to tenants.
type Keyring struct {
	entries []entry
	// open is the tenant every request gets when no keys are configured.
	open string
}

// NewKeyring builds a keyring from tenant id -> configured keys.
func NewKeyring(keys map[string][]string) (*Keyring, error) {
	k := &Keyring{}
	for tenant, list := range keys {
		for _, key := range list {
			d, err := Digest(key)
			if err != nil {
				return nil, fmt.Errorf("tenant %s: %w", tenant, err)
			}
			k.entries = append(k.entries, entry{digest: d, tenant: tenant})
		}
	}
	return k, nil
}

// Open returns a keyring that gives every request, with or without a key,
// the tenant named: for a config that lists no tenants (dev mode).
func Open(tenant string) *Keyring { return &Keyring{open: tenant} }

// IsOpen reports whether the keyring accepts requests without a key.
func (k *Keyring) IsOpen() bool { return k.open != "" }

// Digest returns the SHA-256 digest a configured key stands for.
func Digest(configured string) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	if hexd, ok := strings.CutPrefix(configured, HashPrefix); ok {
		b, err := hex.DecodeString(hexd)
		if err != nil || len(b) != sha256.Size {
			return d, fmt.Errorf("key %q: want sha256: followed by 64 hex digits", redact(configured))
		}
		copy(d[:], b)
		return d, nil
	}
	if configured == "" {
		return d, errors.New("empty API key")
	}
	return sha256.Sum256([]byte(configured)), nil
}

func redact(s string) string {
	if len(s) <= 12 {
		return s
	}
	return s[:12] + "..."
}

// Tenant returns the tenant of a presented key.
func (k *Keyring) Tenant(key string) (string, error) {
	if k.open != "" {
		return k.open, nil
	}
	if key == "" {
		return "", ErrNoKey
	}
	d := sha256.Sum256([]byte(key))
	found := -1
	for i := range k.entries {
		// No early exit: every entry is compared.
		if subtle.ConstantTimeCompare(d[:], k.entries[i].digest[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", ErrBadKey
	}
	return k.entries[found].tenant, nil
}

// Authenticate returns the tenant of an HTTP request's bearer key.
func (k *Keyring) Authenticate(r *http.Request) (string, error) {
	if k.open != "" {
		return k.open, nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", ErrNoKey
	}
	scheme, key, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(key) == "" {
		return "", ErrBadShape
	}
	return k.Tenant(strings.TrimSpace(key))
}
