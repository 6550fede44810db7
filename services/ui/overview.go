package ui

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// The overview's sample: the tasks created in the last hour, newest first,
// at most sampleMax per tenant.
const (
	sampleWindow  = time.Hour
	sampleMax     = 2000
	chartBuckets  = 12
	chartWidth    = 720
	chartHeight   = 160
	countMax      = ledger.ListLimitMax
	chartBarInset = 4
)

// fnRow is one function's line of the overview.
type fnRow struct {
	Name                     string
	Limit                    int
	Adaptive                 bool
	Waiting, Running         int64
	WaitingMore, RunningMore bool
	Succeeded, Failed, Dead  int
	P50, P99                 string
	waits                    []int64
	ThrottledLastMinute      int64
}

// bar is one bucket of the outcomes chart, laid out for the SVG.
type bar struct {
	X, W                 int
	OkY, OkH, BadY, BadH int
	Ok, Bad              int
	From, To             time.Time
}

func (u *UI) handleOverview(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	now := u.cfg.Now()
	rows := make([]*fnRow, len(u.cfg.Functions))
	byName := map[string]*fnRow{}
	for i, f := range u.cfg.Functions {
		rows[i] = &fnRow{Name: f.Name, Limit: f.Concurrency, Adaptive: f.Adaptive != nil}
		byName[f.Name] = rows[i]
	}
	stats, err := u.cfg.Ledger.FunctionStats(ctx, u.cfg.Functions)
	if err != nil {
		u.unavailable(w, r, s, "reading function stats", err)
		return
	}
	// An admin sees every tenant, or the one chosen; a tenant itself.
	tenants, one := u.tenantsOf(s), u.scope(r, s)
	all := s.Admin && r.FormValue("tenant") == ""
	if !all {
		tenants = []string{one}
	}
	for _, st := range stats {
		if row := byName[st.Name]; row != nil {
			row.Limit = st.Limit
			if all { // cluster-wide counts: every tenant's tasks
				row.Waiting, row.Running, row.ThrottledLastMinute = st.Waiting, st.Running, st.ThrottledLastMinute
			}
		}
	}
	if !all {
		if err := u.countOwn(ctx, one, byName); err != nil {
			u.unavailable(w, r, s, "counting tasks", err)
			return
		}
	}
	bars := make([]bar, chartBuckets)
	step := sampleWindow / chartBuckets
	start := now.Add(-sampleWindow)
	for i := range bars {
		bars[i].From, bars[i].To = start.Add(time.Duration(i)*step), start.Add(time.Duration(i+1)*step)
	}
	sampled, capped := 0, false
	for _, tenant := range tenants {
		n, more, err := u.sample(ctx, tenant, start, func(t *contracts.Task) {
			row := byName[t.Function]
			if t.QueueWaitMS != nil && t.StartedAt != nil && !t.StartedAt.Before(start) && row != nil {
				row.waits = append(row.waits, *t.QueueWaitMS)
			}
			if t.FinishedAt == nil || t.FinishedAt.Before(start) {
				return
			}
			b := min(int(t.FinishedAt.Sub(start)/step), chartBuckets-1)
			switch t.State {
			case contracts.StateSucceeded:
				bars[b].Ok++
				if row != nil {
					row.Succeeded++
				}
			case contracts.StateFailed, contracts.StateDead:
				bars[b].Bad++
				if row != nil && t.State == contracts.StateFailed {
					row.Failed++
				} else if row != nil {
					row.Dead++
				}
			}
		})
		if err != nil {
			u.unavailable(w, r, s, "sampling tasks", err)
			return
		}
		sampled += n
		capped = capped || more
	}
	for _, row := range rows {
		row.P50, row.P99 = percentile(row.waits, 50), percentile(row.waits, 99)
	}
	layoutBars(bars)
	u.render(w, r, s, http.StatusOK, "overview.html", "Overview", map[string]any{
		"Functions": rows, "Bars": bars, "Sampled": sampled, "Capped": capped, "SampleMax": sampleMax,
		"Refresh": u.cfg.Refresh.Milliseconds(), "Now": now, "ChartWidth": chartWidth, "ChartHeight": chartHeight,
		"Summary": chartSummary(bars), "All": all, "Tenant": one,
	})
}

// countOwn counts a tenant's queued and running tasks per function (at
// most countMax of each; more sets WaitingMore or RunningMore).
func (u *UI) countOwn(ctx context.Context, tenant string, byName map[string]*fnRow) error {
	for _, st := range []contracts.State{contracts.StateQueued, contracts.StateRunning} {
		list, err := u.cfg.Ledger.List(ctx, tenant, ledger.ListFilter{State: st, Limit: countMax})
		if err != nil {
			return err
		}
		for _, t := range list.Tasks {
			row := byName[t.Function]
			if row == nil {
				continue
			}
			if st == contracts.StateQueued {
				row.Waiting++
				row.WaitingMore = list.NextCursor != ""
			} else {
				row.Running++
				row.RunningMore = list.NextCursor != ""
			}
		}
	}
	return nil
}

// sample calls each for the tenant's tasks created since start, newest
// first, at most sampleMax; more says it stopped at the cap.
func (u *UI) sample(ctx context.Context, tenant string, start time.Time, each func(*contracts.Task)) (n int, more bool, err error) {
	f := ledger.ListFilter{Limit: ledger.ListLimitMax}
	for {
		list, err := u.cfg.Ledger.List(ctx, tenant, f)
		if err != nil {
			return n, false, err
		}
		for i := range list.Tasks {
			t := &list.Tasks[i]
			if t.CreatedAt.Before(start) {
				return n, false, nil
			}
			if n == sampleMax {
				return n, true, nil
			}
			each(t)
			n++
		}
		if list.NextCursor == "" {
			return n, false, nil
		}
		f.Cursor = list.NextCursor
	}
}

// percentile is the nearest-rank p-th percentile of vs in ms, "—" for none.
func percentile(vs []int64, p int) string {
	if len(vs) == 0 {
		return "—"
	}
	slices.Sort(vs)
	i := (p*len(vs)+99)/100 - 1
	return fmt.Sprintf("%d ms", vs[max(i, 0)])
}

// layoutBars sizes the stacked bars: succeeded below, failed and dead on
// top, scaled to the fullest bucket.
func layoutBars(bars []bar) {
	peak := 1
	for _, b := range bars {
		peak = max(peak, b.Ok+b.Bad)
	}
	w := chartWidth / len(bars)
	for i := range bars {
		b := &bars[i]
		b.X, b.W = i*w+chartBarInset/2, w-chartBarInset
		b.OkH = b.Ok * chartHeight / peak
		b.BadH = b.Bad * chartHeight / peak
		b.OkY = chartHeight - b.OkH
		b.BadY = b.OkY - b.BadH
	}
}

// chartSummary describes the chart in words (its accessible name).
func chartSummary(bars []bar) string {
	ok, bad := 0, 0
	for _, b := range bars {
		ok += b.Ok
		bad += b.Bad
	}
	return fmt.Sprintf("Outcomes in the last hour, in %d five-minute buckets: %d succeeded, %d failed or dead.", len(bars), ok, bad)
}
