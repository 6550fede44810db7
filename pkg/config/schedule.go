package config

import (
	"errors"
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // time zones validate the same on every host

	"github.com/robfig/cron/v3"
)

// cronParser reads standard 5-field expressions and descriptors (@hourly,
// @daily, @every 30s, ...). Seconds fields are not accepted.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ErrInvalidSchedule is wrapped by every error of [ParseCronSchedule].
var ErrInvalidSchedule = errors.New("invalid schedule")

// ParseCronSchedule parses a cron trigger's schedule: a standard 5-field
// expression ("0 2 * * *", "*/5 9-17 * * mon-fri") or a descriptor (@yearly,
// @monthly, @weekly, @daily, @midnight, @hourly, "@every <duration>"). An
// @every duration is a whole number of seconds, at least 1s. A time zone
// prefix (TZ=, CRON_TZ=) is refused: the trigger's timezone key says it.
// The schedule must fire at least once in the next five years.
//
// The returned schedule computes fire times in the location of the time
// passed to Next; an @every schedule is a cron.ConstantDelaySchedule.
func ParseCronSchedule(spec string) (cron.Schedule, error) {
	spec = strings.TrimSpace(spec)
	switch {
	case spec == "":
		return nil, fmt.Errorf("%w: empty", ErrInvalidSchedule)
	case strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ="):
		return nil, fmt.Errorf("%w %q: give the time zone in cron.timezone, not in the schedule", ErrInvalidSchedule, spec)
	}
	if every, ok := strings.CutPrefix(spec, "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(every))
		if err != nil || d < time.Second || d%time.Second != 0 {
			return nil, fmt.Errorf("%w %q: @every takes a whole number of seconds, at least 1s (e.g. @every 30s, @every 1h)", ErrInvalidSchedule, spec)
		}
	}
	sched, err := parseCron(spec)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v (want 5 fields: minute hour day-of-month month day-of-week, or @hourly, @daily, @every 30s, ...)", ErrInvalidSchedule, spec, err)
	}
	if sched.Next(time.Now().UTC()).IsZero() {
		return nil, fmt.Errorf("%w %q: it never fires", ErrInvalidSchedule, spec)
	}
	return sched, nil
}

// parseCron calls the library parser, which may panic on some malformed
// input: operator input must not crash the process.
func parseCron(spec string) (s cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("unreadable expression")
		}
	}()
	return cronParser.Parse(spec)
}

// LoadTimezone loads an IANA time zone name ("Asia/Shanghai"); empty means
// UTC. "Local" is refused: replicas on hosts in other zones would disagree
// on the fire times.
func LoadTimezone(name string) (*time.Location, error) {
	switch name {
	case "":
		return time.UTC, nil
	case "Local":
		return nil, errors.New(`invalid time zone "Local": name an IANA zone such as "Europe/Berlin" or "UTC"`)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("invalid time zone %q: want an IANA name such as \"Asia/Shanghai\" or \"UTC\"", name)
	}
	return loc, nil
}
