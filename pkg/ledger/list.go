package ledger

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
)

// Listing bounds.
const (
	ListLimitDefault = 50
	ListLimitMax     = 500
	// listScanMax bounds how many index entries one List call reads when a
	// function filter skips most of them; the cursor continues from there.
	listScanMax = 5000
)

// ListFilter selects tasks for List.
type ListFilter struct {
	// State, when set, lists only tasks in that state.
	State contracts.State
	// Function, when set, lists only that function's tasks.
	Function string
	// Batch, when set, lists only tasks whose event had that batch
	// extension attribute.
	Batch string
	// Reason, when set, lists only tasks that ended for that reason.
	Reason contracts.Reason
	// FinishedSince and FinishedUntil, when set, bound finished_at.
	FinishedSince, FinishedUntil time.Time
	// Limit caps the page (default ListLimitDefault, max ListLimitMax).
	Limit int
	// EventID, when set, lists only the tasks made from events with that id
	// (any source unless EventSource is set too).
	EventID, EventSource string
	// Cursor continues a previous listing.
	Cursor string
}

// ErrBadCursor is returned for a cursor List did not produce.
var ErrBadCursor = errors.New("invalid cursor")

// List returns one page of tenant's tasks, newest first: in descending
// (created-µs score, id) order, the order of the index's sorted set read
// backwards. The cursor is opaque to clients (see listPos): the place of
// the last entry a page passed, so the next page goes on strictly after
// it, whatever entered or left the index meanwhile (a task redriven by a
// stepped DLQ walk that dies again comes back at its old place, behind the
// cursor, and is not met twice; a task that left does not make the walk
// skip one).
func (l *Ledger) List(ctx context.Context, tenant string, f ListFilter) (contracts.TaskList, error) {
	if f.Limit <= 0 {
		f.Limit = ListLimitDefault
	}
	f.Limit = min(f.Limit, ListLimitMax)
	key := l.allKey(tenant)
	switch {
	case f.EventID != "" && f.EventSource != "":
		return l.listDedup(ctx, tenant, f)
	case f.EventID != "":
		key = l.eventKey(tenant, f.EventID)
		// An id seen only before the upgrade is in the previous release's
		// index until its window ends.
		if legacy := l.legacyEventKey(tenant, f.EventID); legacy == key {
			// Nothing older to fall back to.
		} else if n, err := l.rdb.Exists(ctx, key).Result(); err == nil && n == 0 {
			key = legacy
		}
	case f.State != "":
		key = l.stateKey(tenant, f.State)
	}
	pos, err := l.parseCursor(ctx, key, f.Cursor)
	if err != nil {
		return contracts.TaskList{}, err
	}
	batch := f.Limit + 1
	var out contracts.TaskList
	for scanned := 0; scanned < listScanMax; {
		zs, err := l.listPage(ctx, key, pos, batch)
		if err != nil {
			return contracts.TaskList{}, err
		}
		if len(zs) == 0 {
			return out, nil
		}
		ids := make([]string, len(zs))
		for i, z := range zs {
			ids[i] = z.id
		}
		recs, err := l.records(ctx, tenant, ids)
		if err != nil {
			return contracts.TaskList{}, err
		}
		for i, r := range recs {
			scanned++
			pos = zs[i]
			if r == nil || !f.match(r) {
				continue
			}
			out.Tasks = append(out.Tasks, *r)
			if len(out.Tasks) == f.Limit {
				if i < len(recs)-1 || len(zs) == batch {
					out.NextCursor = pos.cursor()
				}
				return out, nil
			}
		}
		if len(zs) < batch {
			return out, nil
		}
	}
	out.NextCursor = pos.cursor()
	return out, nil
}

// listPos is a place in an index read newest first: the entry (score, id)
// a walk last passed. id "" is the place after every entry at score (and
// the start of a walk is ("+inf", "")).
//
// Its cursor is base64url("<score>:<id>"), so clients treat it as opaque
// and it needs no escaping in a query string. The cursors of earlier
// releases, "<score>:<n>" (n: the entries at that score already passed),
// are still accepted, converted to the place they name (parseCursor), so a
// walk or a bulk job in progress across an upgrade goes on.
type listPos struct {
	score, id string
}

func (p listPos) cursor() string {
	return base64.RawURLEncoding.EncodeToString([]byte(p.score + ":" + p.id))
}

// parseCursor returns the place a cursor names ("" is the start).
func (l *Ledger) parseCursor(ctx context.Context, key, cursor string) (listPos, error) {
	if cursor == "" {
		return listPos{score: "+inf"}, nil
	}
	if strings.Contains(cursor, ":") {
		return l.legacyCursor(ctx, key, cursor)
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return listPos{}, ErrBadCursor
	}
	s, id, ok := strings.Cut(string(b), ":")
	if _, err := strconv.ParseInt(s, 10, 64); !ok || err != nil {
		return listPos{}, ErrBadCursor
	}
	return listPos{score: s, id: id}, nil
}

// legacyCursor converts an earlier release's cursor "<score>:<n>" into the
// place it named: the n-th entry at score, or the end of the entries at
// score when fewer are left (they named a count, not an entry, so the
// conversion is as good as that count still is); n = 0 names the place
// before them (scores are whole µs, so after every entry of score + 1).
func (l *Ledger) legacyCursor(ctx context.Context, key, cursor string) (listPos, error) {
	s, n, _ := strings.Cut(cursor, ":")
	score, err1 := strconv.ParseInt(s, 10, 64)
	k, err2 := strconv.ParseInt(n, 10, 64)
	if err1 != nil || err2 != nil || k < 0 {
		return listPos{}, ErrBadCursor
	}
	if k == 0 {
		return listPos{score: strconv.FormatInt(score+1, 10)}, nil
	}
	ids, err := l.rdb.ZRevRangeByScore(ctx, key, &redis.ZRangeBy{Max: s, Min: s, Offset: k - 1, Count: 1}).Result()
	if err != nil {
		return listPos{}, fmt.Errorf("reading the place of cursor %s: %w", cursor, err)
	}
	if len(ids) == 0 {
		return listPos{score: s}, nil
	}
	return listPos{score: s, id: ids[0]}, nil
}

// listPage reads up to n entries of key strictly after pos, newest first.
func (l *Ledger) listPage(ctx context.Context, key string, pos listPos, n int) ([]listPos, error) {
	res, err := l.run(ctx, listPageScript, []string{key}, pos.score, pos.id, n).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("listing tasks: %w", err)
	}
	out := make([]listPos, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		sc, _ := strconv.ParseFloat(res[i+1], 64)
		out = append(out, listPos{score: strconv.FormatInt(int64(sc), 10), id: res[i]})
	}
	return out, nil
}

// listPageScript reads up to n entries of an index strictly after the
// place (cs, cm) in descending (score, member) order: the entries at cs
// whose member sorts before cm, then those below cs. One script, so that
// finding the place and reading from it see the same index. The entries
// at cs are a run of ranks in ZREVRANGE order, members descending; a
// binary search over it finds the first that sorts before cm (members
// compare byte by byte, as Redis orders them), in O(log n) reads however
// many tasks share a created µs.
// KEYS: 1 index. ARGV: 1 cursor score, 2 cursor member ("": after every
// entry at that score), 3 n. Returns member, score, member, score, ...
var listPageScript = redis.NewScript(`
local function bytelt(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local key, cs, cm = KEYS[1], ARGV[1], ARGV[2]
local lo, hi
if cm == '' then
  lo = redis.call('ZCOUNT', key, cs, '+inf')
  hi = lo
else
  lo = redis.call('ZCOUNT', key, '(' .. cs, '+inf')
  hi = lo + redis.call('ZCOUNT', key, cs, cs)
end
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  if bytelt(redis.call('ZREVRANGE', key, mid, mid)[1], cm) then hi = mid else lo = mid + 1 end
end
return redis.call('ZREVRANGE', key, lo, lo + tonumber(ARGV[3]) - 1, 'WITHSCORES')
`)

// listDedup lists the tasks made from the event (source, id): one read of
// the dedup index, then their records. The answer is one page (an event
// makes at most one task per function).
func (l *Ledger) listDedup(ctx context.Context, tenant string, f ListFilter) (contracts.TaskList, error) {
	if f.Cursor != "" {
		return contracts.TaskList{}, ErrBadCursor
	}
	key := l.dedupKey(tenant, f.EventSource, f.EventID)
	s, err := l.rdb.Get(ctx, key).Result()
	if legacy := l.legacyDedupKey(tenant, f.EventSource, f.EventID); errors.Is(err, redis.Nil) && legacy != key {
		s, err = l.rdb.Get(ctx, legacy).Result()
	}
	if errors.Is(err, redis.Nil) {
		return contracts.TaskList{}, nil
	}
	if err != nil {
		return contracts.TaskList{}, fmt.Errorf("listing tasks of event %s: %w", f.EventID, err)
	}
	recs, err := l.records(ctx, tenant, strings.Split(s, ","))
	if err != nil {
		return contracts.TaskList{}, err
	}
	var out contracts.TaskList
	for _, r := range recs {
		if r != nil && f.match(r) && len(out.Tasks) < f.Limit {
			out.Tasks = append(out.Tasks, *r)
		}
	}
	return out, nil
}

// records reads task records; nil for ones that expired.
func (l *Ledger) records(ctx context.Context, tenant string, ids []string) ([]*contracts.Task, error) {
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, l.taskKey(tenant, id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading tasks: %w", err)
	}
	out := make([]*contracts.Task, len(ids))
	for i, c := range cmds {
		// A record past its retention is gone; its index entries stay
		// until the scheduler prunes them (Prune) and listings skip them.
		if len(c.Val()) > 0 {
			t := RecordFromFields(c.Val())
			out[i] = &t
		}
	}
	return out, nil
}

// match applies the filters List cannot answer from an index.
func (f ListFilter) match(t *contracts.Task) bool {
	switch {
	case f.Function != "" && t.Function != f.Function,
		f.Reason != "" && t.Reason != f.Reason,
		f.Batch != "" && t.Batch != f.Batch,
		f.EventID != "" && f.State != "" && t.State != f.State,
		f.EventID != "" && t.Event.ID != f.EventID,
		f.EventSource != "" && t.Event.Source != f.EventSource:
		return false
	case !f.FinishedSince.IsZero() && (t.FinishedAt == nil || t.FinishedAt.Before(f.FinishedSince)),
		!f.FinishedUntil.IsZero() && (t.FinishedAt == nil || !t.FinishedAt.Before(f.FinishedUntil)):
		return false
	}
	return true
}
