package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestKeyring(t *testing.T) {
	t.Parallel()
	sum := sha256.Sum256([]byte("hashed-secret"))
	k, err := NewKeyring(map[string][]string{
		"acme":  {"plain-secret", "sha256:" + hex.EncodeToString(sum[:])},
		"other": {"other-secret"},
	})
	require.NoError(t, err)
	for key, want := range map[string]string{"plain-secret": "acme", "hashed-secret": "acme", "other-secret": "other"} {
		got, err := k.Tenant(key)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err = k.Tenant("nope")
	require.ErrorIs(t, err, ErrBadKey)
	_, err = k.Tenant("")
	require.ErrorIs(t, err, ErrNoKey)
	_, err = k.Tenant("sha256:" + hex.EncodeToString(sum[:]))
	require.ErrorIs(t, err, ErrBadKey, "the digest itself is not a key")

	for header, want := range map[string]error{"": ErrNoKey, "Basic abc": ErrBadShape, "Bearer ": ErrBadShape, "Bearer wrong": ErrBadKey} {
		r := httptest.NewRequest("GET", "/", nil)
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		_, err := k.Authenticate(r)
		require.ErrorIs(t, err, want, header)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "bearer plain-secret")
	tenant, err := k.Authenticate(r)
	require.NoError(t, err)
	require.Equal(t, "acme", tenant)
}

func TestBadConfiguredKeys(t *testing.T) {
	t.Parallel()
	_, err := NewKeyring(map[string][]string{"a": {"sha256:zz"}})
	require.ErrorContains(t, err, "64 hex digits")
	_, err = NewKeyring(map[string][]string{"a": {""}})
	require.ErrorContains(t, err, "empty API key")
}

func TestOpen(t *testing.T) {
	t.Parallel()
	k := Open("default")
	tenant, err := k.Authenticate(httptest.NewRequest("GET", "/", nil))
	require.NoError(t, err)
	require.Equal(t, "default", tenant)
}
