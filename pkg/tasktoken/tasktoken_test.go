package tasktoken

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.UnixMilli(1_800_000_000_000)
	c := Claims{Tenant: "acme", Task: "t1", Attempt: 2, Expires: now.Add(time.Minute)}
	tok := Sign(secret, c)
	got, err := Verify(secret, tok, now)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if got != c {
		t.Fatalf("claims = %+v, want %+v", got, c)
	}

	if _, err := Verify(secret, tok, now.Add(time.Minute)); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: err = %v, want ErrExpired", err)
	}
	if _, err := Verify([]byte("another secret"), tok, now); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other secret: err = %v, want ErrBadSignature", err)
	}
	// Another task's claims with this token's MAC.
	p, m, _ := strings.Cut(tok, ".")
	other := strings.Split(Sign(secret, Claims{Tenant: "acme", Task: "t2", Attempt: 2, Expires: c.Expires}), ".")[0]
	if other == p {
		t.Fatal("two tasks gave one payload")
	}
	if _, err := Verify(secret, other+"."+m, now); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("swapped payload: err = %v, want ErrBadSignature", err)
	}
	// A tenant/task split moved across the separator is another payload.
	if Sign(secret, Claims{Tenant: "acm", Task: "e\nt1", Attempt: 2, Expires: c.Expires}) == tok {
		t.Fatal("moved separator signs the same")
	}
	for _, bad := range []string{"", "abc", "!!.!!", p + ".", "." + m, "YQ." + m} {
		if _, err := Verify(secret, bad, now); err == nil {
			t.Fatalf("Verify(%q) accepted", bad)
		}
	}
}

func TestKeysLoadOnceAndRetry(t *testing.T) {
	calls := 0
	k := NewKeys(func(context.Context) ([]byte, error) {
		calls++
		if calls == 1 {
			return nil, errors.New("redis down")
		}
		return []byte("s"), nil
	})
	ctx := context.Background()
	c := Claims{Tenant: "a", Task: "b", Attempt: 1, Expires: time.Now().Add(time.Minute)}
	if _, err := k.Sign(ctx, c); err == nil {
		t.Fatal("sign with the secret unavailable succeeded")
	}
	tok, err := k.Sign(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Verify(ctx, tok, time.Now()); err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Fatalf("load called %d times, want 2", calls)
	}
}
