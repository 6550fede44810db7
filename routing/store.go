package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
)

// ErrConflict is returned when the table changed since the version a
// change was based on: the caller reloads and decides again. Two
// controllers therefore never both apply a decision to the same version.
var ErrConflict = errors.New("routing table changed meanwhile")

// Change is one entry of the routing log, as the admin API shows it
// (contracts.RoutingChange): Action is "split" (to a dedicated lane),
// "merge" (back to the shared shard; the lane retires) or "delete" (a
// retired lane, empty, was deleted).
type Change = contracts.RoutingChange

// Store keeps the routing table in Redis, versioned.
type Store struct {
	rdb redis.UniversalClient
	key string
}

// NewStore keeps the table under prefix, at "<prefix>:routing" (the
// ledger's legacy layout).
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	return NewStoreAt(rdb, prefix+":routing")
}

// NewStoreAt keeps the table at key and its log at key + ":log": the
// ledger's RoutingKey, which in the partitioned layout is hash-tagged so
// that both share a cluster slot.
func NewStoreAt(rdb redis.UniversalClient, key string) *Store {
	return &Store{rdb: rdb, key: key}
}

func (s *Store) logKey() string { return s.key + ":log" }

// Load reads the current table.
func (s *Store) Load(ctx context.Context) (Snapshot, error) {
	h, err := s.rdb.HGetAll(ctx, s.key).Result()
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading routing table: %w", err)
	}
	snap := Snapshot{Dedicated: map[string]string{}, Pinned: map[string]bool{}, Retiring: map[string]time.Time{}}
	for k, v := range h {
		switch {
		case k == "version":
			snap.Version, _ = strconv.ParseInt(v, 10, 64)
		case strings.HasPrefix(k, "d:"):
			snap.Dedicated[k[2:]] = v
		case strings.HasPrefix(k, "p:"):
			snap.Pinned[k[2:]] = v == "1"
		case strings.HasPrefix(k, "r:"):
			ms, _ := strconv.ParseInt(v, 10, 64)
			snap.Retiring[k[2:]] = time.UnixMilli(ms).UTC()
		}
	}
	return snap, nil
}

// applyScript applies one change if the table is still at ARGV[1].
// KEYS: 1 table, 2 log. ARGV: 1 expected version, 2 tenant, 3 action
// (split, merge, delete), 4 lane, 5 pinned ("1"/"0"/"" unchanged), 6 log
// entry JSON (version is filled in), 7 now (Unix ms).
//
// A split sets the tenant's dedicated lane (and takes it out of
// retirement). A merge removes it and leaves the lane retiring (r:<lane> =
// when): dispatchers, even ones that start later, consume it until the
// controller deletes it empty; a delete forgets the retired lane.
var applyScript = redis.NewScript(`
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if v ~= tonumber(ARGV[1]) then return -1 end
if ARGV[3] == 'split' then
  redis.call('HSET', KEYS[1], 'd:' .. ARGV[2], ARGV[4])
  redis.call('HDEL', KEYS[1], 'r:' .. ARGV[4])
elseif ARGV[3] == 'merge' then
  local old = redis.call('HGET', KEYS[1], 'd:' .. ARGV[2])
  if old then redis.call('HSET', KEYS[1], 'r:' .. old, ARGV[7]) end
  redis.call('HDEL', KEYS[1], 'd:' .. ARGV[2])
elseif ARGV[3] == 'delete' then
  redis.call('HDEL', KEYS[1], 'r:' .. ARGV[4])
end
if ARGV[5] == '1' then redis.call('HSET', KEYS[1], 'p:' .. ARGV[2], '1')
elseif ARGV[5] == '0' then redis.call('HDEL', KEYS[1], 'p:' .. ARGV[2]) end
local nv = redis.call('HINCRBY', KEYS[1], 'version', 1)
local entry = string.gsub(ARGV[6], '"version":0', '"version":' .. nv, 1)
redis.call('LPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], 0, 199)
return nv
`)

// Apply records c against version from: a split sets c.Tenant's dedicated
// lane c.Lane, a merge removes it (the lane retires), a delete forgets the
// retired c.Lane the controller deleted. pin, when not nil, sets the
// tenant's pinned flag. It returns the new version, or ErrConflict.
func (s *Store) Apply(ctx context.Context, from int64, c Change, pin *bool) (int64, error) {
	c.Version = 0
	if c.At.IsZero() {
		c.At = time.Now().UTC()
	}
	entry, err := json.Marshal(c)
	if err != nil {
		return 0, err
	}
	p := ""
	if pin != nil {
		p = "0"
		if *pin {
			p = "1"
		}
	}
	v, err := applyScript.Run(ctx, s.rdb, []string{s.key, s.logKey()}, from, c.Tenant, c.Action, c.Lane, p, string(entry), c.At.UnixMilli()).Int64()
	if err != nil {
		return 0, fmt.Errorf("changing routing table: %w", err)
	}
	if v < 0 {
		return 0, ErrConflict
	}
	return v, nil
}

// Log returns the most recent changes, newest first.
func (s *Store) Log(ctx context.Context, n int) ([]Change, error) {
	raw, err := s.rdb.LRange(ctx, s.logKey(), 0, int64(n-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading routing log: %w", err)
	}
	out := make([]Change, 0, len(raw))
	for _, r := range raw {
		var c Change
		if json.Unmarshal([]byte(r), &c) == nil {
			out = append(out, c)
		}
	}
	return out, nil
}
