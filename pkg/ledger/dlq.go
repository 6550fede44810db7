package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/tasklane/tasklane/contracts"
)

// ErrNotDead is returned by Redrive and Purge for a task that is not in the
// dead-letter queue; the error says which state it is in.
var ErrNotDead = errors.New("task is not in the dead-letter queue")

// Redrive puts one dead task back to work with a fresh attempt budget.
func (l *Ledger) Redrive(ctx context.Context, tenant, id string) error {
	res, err := l.run(ctx, redriveScript, []string{l.taskKey(tenant, id), l.DelayKey(tenant)},
		l.statePrefix(tenant), id, Member(tenant, id), us(l.cfg.Now())).StringSlice()
	if err != nil {
		return fmt.Errorf("redriving task %s: %w", id, err)
	}
	return dlqVerdict(res)
}

// Purge deletes one dead task.
func (l *Ledger) Purge(ctx context.Context, tenant, id string) error {
	res, err := l.run(ctx, purgeScript, []string{l.taskKey(tenant, id), l.allKey(tenant)},
		l.statePrefix(tenant), id).StringSlice()
	if err != nil {
		return fmt.Errorf("purging task %s: %w", id, err)
	}
	return dlqVerdict(res)
}

func dlqVerdict(res []string) error {
	switch {
	case res[0] == "ok":
		return nil
	case res[1] == "":
		return ErrNotFound
	}
	return fmt.Errorf("%w: it is %s", ErrNotDead, res[1])
}

// DeadIDs returns the ids of every dead task that matches f (State is
// ignored), oldest listing page last.
func (l *Ledger) DeadIDs(ctx context.Context, tenant string, f ListFilter) ([]string, error) {
	f.State, f.Limit, f.Cursor = contracts.StateDead, ListLimitMax, ""
	var ids []string
	for {
		page, err := l.List(ctx, tenant, f)
		if err != nil {
			return nil, err
		}
		for _, t := range page.Tasks {
			ids = append(ids, t.ID)
		}
		if page.NextCursor == "" {
			return ids, nil
		}
		f.Cursor = page.NextCursor
	}
}

// RedriveAll redrives every dead task matching f (or only counts them).
// With f.Limit above 0 it is one step of at most f.Limit matches (see
// bulkStep), continued with f.Cursor set to the answer's NextCursor.
func (l *Ledger) RedriveAll(ctx context.Context, tenant string, f ListFilter, dryRun bool) (contracts.DLQResult, error) {
	return l.bulk(ctx, tenant, f, dryRun, func(id string) *scriptCall {
		return call(redriveScript, []string{l.taskKey(tenant, id), l.DelayKey(tenant)},
			l.statePrefix(tenant), id, Member(tenant, id), us(l.cfg.Now()))
	})
}

// PurgeAll deletes every dead task matching f (or only counts them).
// With f.Limit above 0 it is one step, as RedriveAll.
func (l *Ledger) PurgeAll(ctx context.Context, tenant string, f ListFilter, dryRun bool) (contracts.DLQResult, error) {
	return l.bulk(ctx, tenant, f, dryRun, func(id string) *scriptCall {
		return call(purgeScript, []string{l.taskKey(tenant, id), l.allKey(tenant)}, l.statePrefix(tenant), id)
	})
}

// bulk applies op to the matching dead tasks in pipelined chunks. A task
// that left the queue meanwhile (redriven or purged by someone else) is
// skipped by the script, and not counted as done.
func (l *Ledger) bulk(ctx context.Context, tenant string, f ListFilter, dryRun bool, op func(id string) *scriptCall) (contracts.DLQResult, error) {
	if f.Limit > 0 {
		return l.bulkStep(ctx, tenant, f, dryRun, op)
	}
	ids, err := l.DeadIDs(ctx, tenant, f)
	if err != nil {
		return contracts.DLQResult{}, err
	}
	r := contracts.DLQResult{Matched: len(ids), DryRun: dryRun}
	if dryRun {
		return r, nil
	}
	const chunk = 500
	for start := 0; start < len(ids); start += chunk {
		done, err := l.bulkApply(ctx, ids[start:min(start+chunk, len(ids))], op)
		r.Done += done
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

// bulkApply runs op on ids in one pipeline and counts those done.
func (l *Ledger) bulkApply(ctx context.Context, ids []string, op func(id string) *scriptCall) (int, error) {
	calls := make([]*scriptCall, len(ids))
	for i, id := range ids {
		calls[i] = op(id)
	}
	if err := l.batch.exec(ctx, calls...); err != nil {
		return 0, err
	}
	done := 0
	for _, c := range calls {
		if res, err := c.cmd.StringSlice(); err == nil && res[0] == "ok" {
			done++
		}
	}
	return done, nil
}

// bulkStep applies op to one listing page of at most f.Limit matching dead
// tasks (one List call, so a step's work is bounded) and answers the
// cursor to continue from. A List cursor is "<score>:<n>", n counting the
// entries at that created score already passed; the tasks this step took
// out of the dead index no longer count there, so n is lowered by those
// at the cursor's score, and the next step misses none of the remaining.
func (l *Ledger) bulkStep(ctx context.Context, tenant string, f ListFilter, dryRun bool, op func(id string) *scriptCall) (contracts.DLQResult, error) {
	f.State, f.Limit = contracts.StateDead, min(f.Limit, contracts.DLQStepMax)
	page, err := l.List(ctx, tenant, f)
	if err != nil {
		return contracts.DLQResult{}, err
	}
	r := contracts.DLQResult{Matched: len(page.Tasks), DryRun: dryRun, NextCursor: page.NextCursor}
	if dryRun || len(page.Tasks) == 0 {
		return r, nil
	}
	ids := make([]string, len(page.Tasks))
	for i := range page.Tasks {
		ids[i] = page.Tasks[i].ID
	}
	if r.Done, err = l.bulkApply(ctx, ids, op); err != nil {
		return r, err
	}
	if r.NextCursor != "" {
		s, n, _ := strings.Cut(r.NextCursor, ":")
		skip, _ := strconv.ParseInt(n, 10, 64)
		for i := range page.Tasks {
			// Taken out of the dead index: done here, or (not done) left
			// it meanwhile; either way it is no longer passed over.
			if strconv.FormatInt(page.Tasks[i].CreatedAt.UnixMicro(), 10) == s {
				skip--
			}
		}
		r.NextCursor = s + ":" + strconv.FormatInt(max(skip, 0), 10)
	}
	return r, nil
}

// CountDead counts the dead tasks matching f (State, Limit and Cursor are
// ignored), stopping once the count passes upTo: a bulk call asks it
// whether its selection is small enough to handle in the request.
func (l *Ledger) CountDead(ctx context.Context, tenant string, f ListFilter, upTo int) (int, error) {
	f.State, f.Limit, f.Cursor = contracts.StateDead, ListLimitMax, ""
	n := 0
	for {
		page, err := l.List(ctx, tenant, f)
		if err != nil {
			return n, err
		}
		n += len(page.Tasks)
		if page.NextCursor == "" || n > upTo {
			return n, nil
		}
		f.Cursor = page.NextCursor
	}
}
