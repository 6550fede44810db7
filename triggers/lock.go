package triggers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// LockTTLDefault is how long a lock outlives its holder's last renewal: a
// replica that dies holding it is replaced after at most this long (a
// replica that stops cleanly releases it at once).
const LockTTLDefault = 10 * time.Second

// ErrLockLost is returned by guarded writes when the lock is no longer
// held by this token.
var ErrLockLost = errors.New("lock lost")

// acquireScript takes the lock if it is free, with the next fencing number:
// KEYS[1] lock, KEYS[2] fence counter; ARGV[1] owner, ARGV[2] ttl ms.
// Returns the fencing number, or 0 when another holder has it.
var acquireScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local f = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. f, 'PX', ARGV[2])
return f
`)

// renewScript extends the lock if the token still holds it.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript deletes the lock if the token still holds it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// guardedHashScript updates a hash only while the token holds the lock:
// KEYS[1] lock, KEYS[2] hash; ARGV[1] token, ARGV[2] n, then n field/value
// pairs to set, then fields to delete. Returns 1 when applied, 0 when the
// lock is held by another token (or nobody).
var guardedHashScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[2])
if n > 0 then
  local args = {}
  for j = 1, 2 * n do args[j] = ARGV[2 + j] end
  redis.call('HSET', KEYS[2], unpack(args))
end
local first = 3 + 2 * n
if #ARGV >= first then
  local dels = {}
  for j = first, #ARGV do dels[#dels + 1] = ARGV[j] end
  redis.call('HDEL', KEYS[2], unpack(dels))
end
return 1
`)

// Lock elects the one replica that evaluates a trigger: a Redis key set
// with SET NX PX semantics to "<owner>#<fence>", where fence increases with
// every acquisition. The holder renews it (every third of its TTL); writes
// made under it (cursor, checkpoint) go through [Lock.HashUpdate], which
// applies them only while the token still holds the lock, so a holder that
// stalled past its TTL cannot overwrite its successor's progress.
//
// A Lock is used by one goroutine at a time.
type Lock struct {
	rdb      redis.UniversalClient
	key      string
	fenceKey string
	owner    string
	ttl      time.Duration

	mu      sync.Mutex
	token   string
	renewed time.Time
}

// Lock returns the lock of trigger name for owner; ttl <= 0 means
// LockTTLDefault.
func (s *Store) Lock(name, owner string, ttl time.Duration) *Lock {
	if ttl <= 0 {
		ttl = LockTTLDefault
	}
	return &Lock{rdb: s.rdb, key: s.Key(name, "lock"), fenceKey: s.Key(name, "fence"), owner: owner, ttl: ttl}
}

// TTL is the lock's time to live.
func (l *Lock) TTL() time.Duration { return l.ttl }

// Key is the lock's Redis key.
func (l *Lock) Key() string { return l.key }

// Token is "<owner>#<fence>" while held, else "".
func (l *Lock) Token() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.token
}

// Held reports whether this Lock believes it holds the lock: it acquired or
// renewed it less than a TTL ago (measured from before the call).
func (l *Lock) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.token != "" && time.Since(l.renewed) < l.ttl
}

// RenewAt is when the holder should renew the lock: a third of its TTL
// after the last acquisition or renewal.
func (l *Lock) RenewAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.renewed.Add(l.ttl / 3)
}

// Acquire takes the lock if nobody holds it. It reports whether this Lock
// holds it now.
func (l *Lock) Acquire(ctx context.Context) (bool, error) {
	start := time.Now()
	fence, err := acquireScript.Run(ctx, l.rdb, []string{l.key, l.fenceKey}, l.owner, l.ttl.Milliseconds()).Int64()
	if err != nil {
		return false, fmt.Errorf("acquiring lock %s: %w", l.key, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if fence == 0 {
		l.token = ""
		return false, nil
	}
	l.token, l.renewed = l.owner+"#"+strconv.FormatInt(fence, 10), start
	return true, nil
}

// Renew extends a held lock. It reports false (and forgets the token) when
// the lock was lost; on an error the lock is kept until its TTL passes.
func (l *Lock) Renew(ctx context.Context) (bool, error) {
	token := l.Token()
	if token == "" {
		return false, nil
	}
	start := time.Now()
	n, err := renewScript.Run(ctx, l.rdb, []string{l.key}, token, l.ttl.Milliseconds()).Int()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err != nil:
		if time.Since(l.renewed) >= l.ttl {
			l.token = ""
		}
		return l.token != "", fmt.Errorf("renewing lock %s: %w", l.key, err)
	case n == 0:
		l.token = ""
		return false, nil
	}
	l.renewed = start
	return true, nil
}

// Release gives the lock up if this Lock holds it.
func (l *Lock) Release(ctx context.Context) error {
	token := l.Token()
	if token == "" {
		return nil
	}
	l.mu.Lock()
	l.token = ""
	l.mu.Unlock()
	if err := releaseScript.Run(ctx, l.rdb, []string{l.key}, token).Err(); err != nil {
		return fmt.Errorf("releasing lock %s: %w", l.key, err)
	}
	return nil
}

// HashUpdate sets the field/value pairs in set and deletes the fields in del
// of the hash key, atomically and only while this Lock's token holds the
// lock (key must share the lock's hash tag). It returns ErrLockLost, and
// forgets the token, when it does not.
func (l *Lock) HashUpdate(ctx context.Context, key string, set []string, del []string) error {
	if len(set)%2 != 0 {
		panic("triggers: HashUpdate needs field/value pairs") // programmer error
	}
	token := l.Token()
	if token == "" {
		return ErrLockLost
	}
	if len(set) == 0 && len(del) == 0 {
		return nil
	}
	args := make([]any, 0, 2+len(set)+len(del))
	args = append(args, token, len(set)/2)
	for _, s := range set {
		args = append(args, s)
	}
	for _, d := range del {
		args = append(args, d)
	}
	n, err := guardedHashScript.Run(ctx, l.rdb, []string{l.key, key}, args...).Int()
	if err != nil {
		return fmt.Errorf("writing %s under lock: %w", key, err)
	}
	if n == 0 {
		l.mu.Lock()
		if l.token == token {
			l.token = ""
		}
		l.mu.Unlock()
		return ErrLockLost
	}
	return nil
}
