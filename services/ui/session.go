package ui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// cookieName is the session cookie: an opaque random id, never the key.
const cookieName = "tasklane_ui"

// maxSessions bounds the sessions a process keeps: at it, starting one
// drops the expired ones, else another (open mode starts one per
// cookieless visitor).
const maxSessions = 10000

// session is a signed-in browser: who it is, not the key it showed.
type session struct {
	// Tenant is the tenant of a tenant key ("" for an admin).
	Tenant string
	// Admin says an admin key signed in (or the admin API is open).
	Admin bool
	// Open says nobody signed in: the dashboard is open (dev).
	Open bool
	// CSRF is the token every POST of this session carries.
	CSRF    string
	expires time.Time
}

func (s *session) checkCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.CSRF)) == 1
}

// sessions is the in-memory session store of one process, keyed by the
// SHA-256 of the session id.
type sessions struct {
	mu  sync.Mutex
	m   map[[sha256.Size]byte]*session
	ttl time.Duration
	now func() time.Time
	max int // maxSessions; tests lower it
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{m: map[[sha256.Size]byte]*session{}, ttl: ttl, now: now, max: maxSessions}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// start makes a session and sets its cookie.
func (ss *sessions) start(w http.ResponseWriter, r *http.Request, tenant string, admin, open bool) *session {
	id := randomToken()
	s := &session{Tenant: tenant, Admin: admin, Open: open, CSRF: randomToken(), expires: ss.now().Add(ss.ttl)}
	ss.mu.Lock()
	if len(ss.m) >= ss.max {
		ss.sweep()
		for k := range ss.m {
			if len(ss.m) < ss.max {
				break
			}
			delete(ss.m, k) // any one: map order is random
		}
	}
	ss.m[sha256.Sum256([]byte(id))] = s
	ss.mu.Unlock()
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: id, Path: Prefix, HttpOnly: true, Secure: secure(r),
		SameSite: http.SameSiteStrictMode,
	})
	return s
}

// fromRequest returns the live session of r's cookie, extending it.
func (ss *sessions) fromRequest(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return nil
	}
	k := sha256.Sum256([]byte(c.Value))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[k]
	if s == nil {
		return nil
	}
	now := ss.now()
	if now.After(s.expires) {
		delete(ss.m, k)
		return nil
	}
	s.expires = now.Add(ss.ttl)
	return s
}

// end forgets r's session and clears its cookie.
func (ss *sessions) end(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil {
		ss.mu.Lock()
		delete(ss.m, sha256.Sum256([]byte(c.Value)))
		ss.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix, MaxAge: -1, HttpOnly: true,
		Secure: secure(r), SameSite: http.SameSiteStrictMode})
}

// sweep drops expired sessions; callers hold mu.
func (ss *sessions) sweep() {
	now := ss.now()
	for k, s := range ss.m {
		if now.After(s.expires) {
			delete(ss.m, k)
		}
	}
}

// secure says the browser reached us over TLS, here or at a proxy that says
// so (X-Forwarded-Proto): the cookie is then sent over TLS only.
func secure(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}
