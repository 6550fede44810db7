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
	res, err := l.run(ctx, redriveScript, []string{l.taskKey(tenant, id), l.DelayKey()},
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
func (l *Ledger) RedriveAll(ctx context.Context, tenant string, f ListFilter, dryRun bool) (contracts.DLQResult, error) {
	return l.bulk(ctx, tenant, f, dryRun, func(id string) *scriptCall {
		return call(redriveScript, []string{l.taskKey(tenant, id), l.DelayKey()},
			l.statePrefix(tenant), id, Member(tenant, id), us(l.cfg.Now()))
	})
}

// PurgeAll deletes every dead task matching f (or only counts them).
func (l *Ledger) PurgeAll(ctx context.Context, tenant string, f ListFilter, dryRun bool) (contracts.DLQResult, error) {
	return l.bulk(ctx, tenant, f, dryRun, func(id string) *scriptCall {
		return call(purgeScript, []string{l.taskKey(tenant, id), l.allKey(tenant)}, l.statePrefix(tenant), id)
	})
}

// bulk applies op to the matching dead tasks in pipelined chunks. A task
// that left the queue meanwhile (redriven or purged by someone else) is
// skipped by the script, and not counted as done.
func (l *Ledger) bulk(ctx context.Context, tenant string, f ListFilter, dryRun bool, op func(id string) *scriptCall) (contracts.DLQResult, error) {
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
		part := ids[start:min(start+chunk, len(ids))]
		calls := make([]*scriptCall, len(part))
		for i, id := range part {
			calls[i] = op(id)
		}
		if err := l.batch.exec(ctx, calls...); err != nil {
			return r, err
		}
		for _, c := range calls {
			if res, err := c.cmd.StringSlice(); err == nil && res[0] == "ok" {
				r.Done++
			}
		}
	}
	return r, nil
}
