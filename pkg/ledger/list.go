package ledger

import (
	"context"
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

// List returns one page of tenant's tasks, newest first. The cursor is
// "<score>:<n>": continue below created-µs score, skipping the n entries
// with exactly that score that earlier pages already returned.
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
		if n, err := l.rdb.Exists(ctx, key).Result(); err == nil && n == 0 {
			key = l.legacyEventKey(tenant, f.EventID)
		}
	case f.State != "":
		key = l.stateKey(tenant, f.State)
	}
	max, skip := "+inf", int64(0)
	if f.Cursor != "" {
		s, n, ok := strings.Cut(f.Cursor, ":")
		_, err1 := strconv.ParseInt(s, 10, 64)
		k, err2 := strconv.ParseInt(n, 10, 64)
		if !ok || err1 != nil || err2 != nil || k < 0 {
			return contracts.TaskList{}, ErrBadCursor
		}
		max, skip = s, k
	}
	batch := int64(f.Limit + 1)
	var out contracts.TaskList
	for scanned := 0; scanned < listScanMax; {
		zs, err := l.rdb.ZRevRangeByScoreWithScores(ctx, key, &redis.ZRangeBy{
			Max: max, Min: "-inf", Offset: skip, Count: batch,
		}).Result()
		if err != nil {
			return contracts.TaskList{}, fmt.Errorf("listing tasks: %w", err)
		}
		if len(zs) == 0 {
			return out, nil
		}
		ids := make([]string, len(zs))
		for i, z := range zs {
			ids[i], _ = z.Member.(string)
		}
		recs, err := l.records(ctx, tenant, ids)
		if err != nil {
			return contracts.TaskList{}, err
		}
		for i, r := range recs {
			scanned++
			sc := strconv.FormatInt(int64(zs[i].Score), 10)
			if sc == max {
				skip++
			} else {
				max, skip = sc, 1
			}
			if r == nil || !f.match(r) {
				continue
			}
			out.Tasks = append(out.Tasks, *r)
			if len(out.Tasks) == f.Limit {
				if i < len(recs)-1 || int64(len(zs)) == batch {
					out.NextCursor = max + ":" + strconv.FormatInt(skip, 10)
				}
				return out, nil
			}
		}
		if int64(len(zs)) < batch {
			return out, nil
		}
	}
	out.NextCursor = max + ":" + strconv.FormatInt(skip, 10)
	return out, nil
}

// listDedup lists the tasks made from the event (source, id): one read of
// the dedup index, then their records. The answer is one page (an event
// makes at most one task per function).
func (l *Ledger) listDedup(ctx context.Context, tenant string, f ListFilter) (contracts.TaskList, error) {
	if f.Cursor != "" {
		return contracts.TaskList{}, ErrBadCursor
	}
	s, err := l.rdb.Get(ctx, l.dedupKey(tenant, f.EventSource, f.EventID)).Result()
	if errors.Is(err, redis.Nil) {
		s, err = l.rdb.Get(ctx, l.legacyDedupKey(tenant, f.EventSource, f.EventID)).Result()
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
