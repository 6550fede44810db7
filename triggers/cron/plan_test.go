package cron

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
)

func TestPlan(t *testing.T) {
	t.Parallel()

	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return tm
	}
	times := func(ss ...string) []time.Time {
		var out []time.Time
		for _, s := range ss {
			out = append(out, at(s))
		}
		return out
	}
	tests := []struct {
		name        string
		schedule    string
		missed      string
		maxCatchUp  int
		cursor, now string
		fires       []time.Time
		dropped     int
		skipTo      string
	}{
		{
			name: "NothingDue", schedule: "@every 1m", missed: config.MissedSkip,
			cursor: "2026-01-01T00:00:00Z", now: "2026-01-01T00:00:59Z",
		},
		{
			name: "OnTime", schedule: "@every 1m", missed: config.MissedSkip,
			cursor: "2026-01-01T00:00:00Z", now: "2026-01-01T00:01:00Z",
			fires: times("2026-01-01T00:01:00Z"),
		},
		{
			name: "LateWithinGrace", schedule: "@every 10s", missed: config.MissedSkip,
			cursor: "2026-01-01T00:00:00Z", now: "2026-01-01T00:00:35Z",
			fires: times("2026-01-01T00:00:10Z", "2026-01-01T00:00:20Z", "2026-01-01T00:00:30Z"),
		},
		{
			name: "SkipDropsMissed", schedule: "0 * * * *", missed: config.MissedSkip,
			cursor: "2026-01-01T00:00:00Z", now: "2026-01-01T05:00:20Z",
			fires:   times("2026-01-01T05:00:00Z"), // 20s late: within grace
			dropped: 4, skipTo: "2026-01-01T04:00:00Z",
		},
		{
			name: "CatchUpBounded", schedule: "0 * * * *", missed: config.MissedCatchUp, maxCatchUp: 2,
			cursor: "2026-01-01T00:00:00Z", now: "2026-01-01T05:00:20Z",
			fires:   times("2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z", "2026-01-01T05:00:00Z"),
			dropped: 2, skipTo: "2026-01-01T02:00:00Z",
		},
		{
			name: "CatchUpAll", schedule: "0 * * * *", missed: config.MissedCatchUp, maxCatchUp: 10,
			cursor: "2026-01-01T00:00:00Z", now: "2026-01-01T03:30:00Z",
			fires: times("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", "2026-01-01T03:00:00Z"),
		},
		{
			// A year of @every 1s downtime is not walked second by second.
			name: "LongOutageEveryJumps", schedule: "@every 1s", missed: config.MissedCatchUp, maxCatchUp: 2,
			cursor: "2025-01-01T00:00:00Z", now: "2026-01-01T00:00:31Z",
			dropped: 31535998, skipTo: "2025-12-31T23:59:58Z",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sched, err := ParseSchedule(tt.schedule, "UTC")
			require.NoError(t, err)
			c := &Cron{cfg: Config{Missed: tt.missed, MaxCatchUp: tt.maxCatchUp, Grace: GraceDefault}, sched: sched}
			fires, dropped, skipTo := c.plan(at(tt.cursor), at(tt.now))
			if tt.name == "LongOutageEveryJumps" {
				// 00:00:01..00:00:31 are within grace, and the two missed
				// fires before them are caught up.
				require.Len(t, fires, 2+31)
				for i, f := range fires {
					require.True(t, f.Equal(at("2025-12-31T23:59:59Z").Add(time.Duration(i)*time.Second)), "fire %d: %s", i, f)
				}
				require.Equal(t, tt.dropped, dropped)
				require.True(t, at(tt.skipTo).Equal(skipTo), "skipTo %s", skipTo)
				return
			}
			require.Len(t, fires, len(tt.fires))
			for i := range fires {
				require.True(t, tt.fires[i].Equal(fires[i]), "fire %d: want %s, got %s", i, tt.fires[i], fires[i])
			}
			require.Equal(t, tt.dropped, dropped)
			if tt.skipTo == "" {
				require.True(t, skipTo.IsZero(), "skipTo %s", skipTo)
			} else {
				require.True(t, at(tt.skipTo).Equal(skipTo), "skipTo %s", skipTo)
			}
		})
	}
}
