// Package tasktoken signs and verifies task tokens: the credential an HTTP
// function gets with each attempt (header Tasklane-Task-Token) to write
// lines to that task's log. A token names a tenant, a task, an attempt and
// an expiry (the attempt's deadline), and carries an HMAC-SHA256 of them
// under a server secret; it grants nothing else.
//
// The format is base64url(tenant "\n" task "\n" attempt "\n" expiry ms)
// "." base64url(mac). The secret is shared by every process of a
// deployment (the ledger keeps it in Redis: see ledger.TokenSecret).
package tasktoken

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Errors of Verify.
var (
	// ErrMalformed: not a token this package signed.
	ErrMalformed = errors.New("malformed task token")
	// ErrBadSignature: the MAC does not match (another secret, or altered).
	ErrBadSignature = errors.New("task token signature does not match")
	// ErrExpired: the attempt's deadline passed.
	ErrExpired = errors.New("task token expired")
)

// Claims is what a token grants: writing to one task's log, as one
// attempt, until Expires.
type Claims struct {
	Tenant, Task string
	Attempt      int
	Expires      time.Time
}

const domain = "tasklane task token v1\n"

func payload(c Claims) string {
	return c.Tenant + "\n" + c.Task + "\n" + strconv.Itoa(c.Attempt) + "\n" + strconv.FormatInt(c.Expires.UnixMilli(), 10)
}

func mac(secret []byte, p string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(domain))
	m.Write([]byte(p))
	return m.Sum(nil)
}

// Sign returns the token for c under secret.
func Sign(secret []byte, c Claims) string {
	p := payload(c)
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(p)) + "." + enc.EncodeToString(mac(secret, p))
}

// Verify checks token's MAC under secret and its expiry at now, and
// returns its claims.
func Verify(secret []byte, token string, now time.Time) (Claims, error) {
	enc := base64.RawURLEncoding
	ps, ms, ok := strings.Cut(token, ".")
	if !ok {
		return Claims{}, ErrMalformed
	}
	p, err := enc.DecodeString(ps)
	if err != nil {
		return Claims{}, ErrMalformed
	}
	sig, err := enc.DecodeString(ms)
	if err != nil {
		return Claims{}, ErrMalformed
	}
	if !hmac.Equal(sig, mac(secret, string(p))) {
		return Claims{}, ErrBadSignature
	}
	f := strings.Split(string(p), "\n")
	if len(f) != 4 {
		return Claims{}, ErrMalformed
	}
	attempt, err1 := strconv.Atoi(f[2])
	exp, err2 := strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil {
		return Claims{}, ErrMalformed
	}
	c := Claims{Tenant: f[0], Task: f[1], Attempt: attempt, Expires: time.UnixMilli(exp)}
	if !now.Before(c.Expires) {
		return c, ErrExpired
	}
	return c, nil
}

// Keys loads the secret once (retrying after a failure) and signs and
// verifies with it.
type Keys struct {
	load   func(context.Context) ([]byte, error)
	mu     sync.Mutex
	secret []byte
}

// NewKeys returns Keys whose secret comes from load, called until it
// succeeds once.
func NewKeys(load func(context.Context) ([]byte, error)) *Keys { return &Keys{load: load} }

func (k *Keys) get(ctx context.Context) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.secret != nil {
		return k.secret, nil
	}
	s, err := k.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading the task token secret: %w", err)
	}
	k.secret = s
	return s, nil
}

// Sign is Sign with the loaded secret.
func (k *Keys) Sign(ctx context.Context, c Claims) (string, error) {
	s, err := k.get(ctx)
	if err != nil {
		return "", err
	}
	return Sign(s, c), nil
}

// Verify is Verify with the loaded secret.
func (k *Keys) Verify(ctx context.Context, token string, now time.Time) (Claims, error) {
	s, err := k.get(ctx)
	if err != nil {
		return Claims{}, err
	}
	return Verify(s, token, now)
}
