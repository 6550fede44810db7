package ledger

import (
	"context"
	"errors"
	"fmt"

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

// Purge deletes one dead task, and forgets it in its event's dedup entry
// (see forgetPurged).
func (l *Ledger) Purge(ctx context.Context, tenant, id string) error {
	c := l.purgeCall(tenant, id)
	if err := l.batch.exec(ctx, c); err != nil {
		return fmt.Errorf("purging task %s: %w", id, err)
	}
	res, err := c.cmd.StringSlice()
	if err != nil {
		return fmt.Errorf("purging task %s: %w", id, err)
	}
	if err := dlqVerdict(res); err != nil {
		return err
	}
	l.forgetPurged(ctx, tenant, []*scriptCall{c})
	return nil
}

func (l *Ledger) purgeCall(tenant, id string) *scriptCall {
	return call(purgeScript, []string{l.taskKey(tenant, id), l.allKey(tenant)}, l.statePrefix(tenant), id)
}

// forgetPurged takes the tasks purge calls deleted out of their events'
// dedup entries and event indexes. Without it, the same event submitted
// again within the dedup window was answered with a task GET no longer
// finds; now it is answered with the event's tasks still kept, and once
// none is, it makes new ones. It is best effort: the purge is done, so a
// failure here (Redis gone meanwhile) is not the caller's error; the
// entries then name a deleted task until the dedup window ends.
func (l *Ledger) forgetPurged(ctx context.Context, tenant string, purged []*scriptCall) {
	var calls []*scriptCall
	for _, c := range purged {
		res, err := c.cmd.StringSlice()
		if err != nil || len(res) < 5 || res[0] != "ok" || res[3] == "" {
			continue
		}
		source, evID, id := res[2], res[3], res[4]
		calls = append(calls, call(forgetEventScript, []string{
			l.dedupKey(tenant, source, evID), l.legacyDedupKey(tenant, source, evID),
			l.eventKey(tenant, evID), l.legacyEventKey(tenant, evID),
		}, id))
	}
	if len(calls) > 0 {
		_ = l.batch.exec(ctx, calls...)
	}
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
	}, nil)
}

// PurgeAll deletes every dead task matching f (or only counts them).
// With f.Limit above 0 it is one step, as RedriveAll.
func (l *Ledger) PurgeAll(ctx context.Context, tenant string, f ListFilter, dryRun bool) (contracts.DLQResult, error) {
	return l.bulk(ctx, tenant, f, dryRun, func(id string) *scriptCall { return l.purgeCall(tenant, id) },
		func(ctx context.Context, calls []*scriptCall) error { l.forgetPurged(ctx, tenant, calls); return nil })
}

// bulkThen runs after each pipelined chunk of a bulk operation with its
// calls (nil: nothing to do).
type bulkThen func(ctx context.Context, calls []*scriptCall) error

// bulk applies op to the matching dead tasks in pipelined chunks, then
// after (if any) to each chunk's calls. A task that left the queue
// meanwhile (redriven or purged by someone else) is skipped by the script,
// and not counted as done.
func (l *Ledger) bulk(ctx context.Context, tenant string, f ListFilter, dryRun bool, op func(id string) *scriptCall, after bulkThen) (contracts.DLQResult, error) {
	if f.Limit > 0 {
		return l.bulkStep(ctx, tenant, f, dryRun, op, after)
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
		done, err := l.bulkApply(ctx, ids[start:min(start+chunk, len(ids))], op, after)
		r.Done += done
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

// bulkApply runs op on ids in one pipeline, then after, and counts those
// done.
func (l *Ledger) bulkApply(ctx context.Context, ids []string, op func(id string) *scriptCall, after bulkThen) (int, error) {
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
	if after != nil {
		if err := after(ctx, calls); err != nil {
			return done, err
		}
	}
	return done, nil
}

// bulkStep applies op to one listing page of at most f.Limit matching dead
// tasks (one List call, so a step's work is bounded) and answers the
// cursor to continue from: List's, the place of the last task the page
// passed, so the next step goes on strictly after it. The tasks this step
// took out of the dead index do not move the place, and one that dies
// again before the walk ends comes back at its old place (score = created
// µs, ties by id), behind the cursor: no task is met twice in one walk,
// none is skipped.
func (l *Ledger) bulkStep(ctx context.Context, tenant string, f ListFilter, dryRun bool, op func(id string) *scriptCall, after bulkThen) (contracts.DLQResult, error) {
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
	r.Done, err = l.bulkApply(ctx, ids, op, after)
	return r, err
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
