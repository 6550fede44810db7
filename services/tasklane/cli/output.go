package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tasklane/tasklane/contracts"
)

// maxCell bounds a free-text cell (an error) in a list.
const maxCell = 60

// print prints v, the server's answer, as JSON with --json, else as table
// prints it for people.
func (c *clientFlags) print(w io.Writer, v any, table func(io.Writer)) error {
	if c.json {
		return printJSON(w, v)
	}
	table(w)
	return nil
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// cell is s on one line, at most max runes, "-" when empty.
func cell(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" {
		return "-"
	}
	if r := []rune(s); max > 0 && len(r) > max {
		return string(r[:max-3]) + "..."
	}
	return s
}

func fmtTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtMS(ms *int64) string {
	if ms == nil {
		return "-"
	}
	return (time.Duration(*ms) * time.Millisecond).String()
}

// printSubmit prints the tasks a submission made.
func printSubmit(w io.Writer, sr *contracts.SubmitResponse) {
	tw := newTable(w)
	fmt.Fprintln(tw, "TASK\tEVENT\tFUNCTION\tSTATE\tDUPLICATE")
	for _, t := range sr.Tasks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", t.ID, t.EventID, t.Function, t.State, t.Duplicate)
	}
	_ = tw.Flush()
}

// printTaskList prints a page of tasks, one a line; dead lists show why
// and when each died.
func printTaskList(w io.Writer, l *contracts.TaskList, dead bool) {
	if len(l.Tasks) == 0 {
		if dead {
			fmt.Fprintln(w, "no dead-lettered tasks")
		} else {
			fmt.Fprintln(w, "no tasks")
		}
		return
	}
	tw := newTable(w)
	if dead {
		fmt.Fprintln(tw, "ID\tFUNCTION\tEVENT TYPE\tREASON\tATTEMPTS\tREDRIVES\tDIED\tERROR")
	} else {
		fmt.Fprintln(tw, "ID\tFUNCTION\tEVENT TYPE\tSTATE\tATTEMPTS\tPRIORITY\tCREATED\tERROR")
	}
	for _, t := range l.Tasks {
		if dead {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", t.ID, t.Function, t.Event.Type, cell(string(t.Reason), 0),
				t.Attempts, t.Redrives, fmtTime(t.FinishedAt), cell(t.Error, maxCell))
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", t.ID, t.Function, t.Event.Type, t.State,
				t.Attempts, t.Priority, fmtTime(&t.CreatedAt), cell(t.Error, maxCell))
		}
	}
	_ = tw.Flush()
	if l.NextCursor != "" {
		fmt.Fprintf(w, "\nmore: --cursor %s\n", l.NextCursor)
	}
}

// printTask prints one task record, a field a line.
func printTask(w io.Writer, t *contracts.Task) {
	tw := newTable(w)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("id", t.ID)
	row("tenant", t.Tenant)
	row("function", t.Function)
	row("state", string(t.State))
	row("event", fmt.Sprintf("id %s, source %s, type %s", t.Event.ID, t.Event.Source, t.Event.Type))
	if t.Event.Subject != "" {
		row("subject", t.Event.Subject)
	}
	row("attempts", fmt.Sprint(t.Attempts))
	row("priority", fmt.Sprint(t.Priority))
	row("created_at", fmtTime(&t.CreatedAt))
	row("scheduled_at", fmtTime(t.ScheduledAt))
	row("started_at", fmtTime(t.StartedAt))
	row("finished_at", fmtTime(t.FinishedAt))
	row("queue_wait", fmtMS(t.QueueWaitMS))
	row("run", fmtMS(t.RunMS))
	if t.Reason != "" {
		row("reason", string(t.Reason))
	}
	if t.Redrives > 0 {
		row("redrives", fmt.Sprint(t.Redrives))
	}
	if t.Error != "" {
		row("error", cell(t.Error, 0))
	}
	if len(t.Result) > 0 {
		row("result", cell(string(t.Result), 0))
	}
	switch {
	case len(t.EventData) > 0 && t.EventDataEncoding != "":
		row("event_data", cell(string(t.EventData), 0)+" ("+t.EventDataEncoding+")")
	case len(t.EventData) > 0:
		row("event_data", cell(string(t.EventData), 0))
	case t.EventDataBytes > 0:
		row("event_data", fmt.Sprintf("%d bytes, left out (over %d)", t.EventDataBytes, contracts.EventDataMax))
	}
	_ = tw.Flush()
}

// printDLQResult prints what a bulk redrive or purge did.
func printDLQResult(w io.Writer, action string, r *contracts.DLQResult) {
	done := map[string]string{"redrive": "redriven", "purge": "purged"}[action]
	if r.DryRun {
		fmt.Fprintf(w, "%d dead-lettered tasks match (dry run: nothing %s)\n", r.Matched, done)
		return
	}
	fmt.Fprintf(w, "%d dead-lettered tasks matched, %d %s\n", r.Matched, r.Done, done)
}

// printRoutingChange prints one change of the routing table.
func printRoutingChange(w io.Writer, c *contracts.RoutingChange) {
	lane := ""
	if c.Lane != "" {
		lane = " (lane " + c.Lane + ")"
	}
	fmt.Fprintf(w, "routing table version %d: %s %s%s, pinned %v: %s\n", c.Version, c.Action, c.Tenant, lane, c.Pinned, c.Reason)
}
