package cron

import (
	"fmt"
	"time"

	robfig "github.com/robfig/cron/v3"

	"github.com/tasklane/tasklane/pkg/config"
)

// Schedule computes a trigger's fire times. Every replica computes the same
// times: expressions are read in the trigger's time zone, and an @every
// schedule is aligned to the Unix epoch (every multiple of its interval
// since 1970-01-01T00:00:00Z), not to when a process started.
type Schedule struct {
	spec  robfig.Schedule
	every time.Duration // > 0 for @every
	loc   *time.Location
}

// ParseSchedule reads spec (see [config.ParseCronSchedule]) in the IANA
// zone tz ("" is UTC).
func ParseSchedule(spec, tz string) (*Schedule, error) {
	s, err := config.ParseCronSchedule(spec)
	if err != nil {
		return nil, err
	}
	loc, err := config.LoadTimezone(tz)
	if err != nil {
		return nil, fmt.Errorf("reading cron timezone: %w", err)
	}
	out := &Schedule{spec: s, loc: loc}
	if cd, ok := s.(robfig.ConstantDelaySchedule); ok {
		out.every = cd.Delay
	}
	return out, nil
}

// Next returns the first fire time strictly after t, in the schedule's zone
// (zero if there is none within five years).
func (s *Schedule) Next(t time.Time) time.Time {
	if s.every > 0 {
		n := t.UnixNano()
		d := s.every.Nanoseconds()
		k := n / d
		if n < 0 && n%d != 0 {
			k-- // floor for times before 1970
		}
		return time.Unix(0, (k+1)*d).In(s.loc)
	}
	return s.spec.Next(t.In(s.loc))
}

// Location is the schedule's time zone.
func (s *Schedule) Location() *time.Location { return s.loc }

// skipTo returns a cursor from which walking Next still finds the last keep
// fires up to end: for @every schedules it jumps over the fires before them,
// so a long outage is not walked one fire at a time; expressions (at most
// one fire a minute) are walked from from.
func (s *Schedule) skipTo(from, end time.Time, keep int) time.Time {
	if s.every <= 0 {
		return from
	}
	start := end.Add(-time.Duration(keep+1) * s.every)
	if start.After(from) {
		return start
	}
	return from
}
