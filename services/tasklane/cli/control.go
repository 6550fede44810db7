package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/client"
)

// selectorFlags are the flags of a selector (pause, tasks cancel).
type selectorFlags struct {
	function, typ, source, subjectPrefix, batch, state, after, before string
}

func (s *selectorFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.function, "function", "", "tasks of this function")
	cmd.Flags().StringVar(&s.typ, "type", "", "tasks made from events of this type")
	cmd.Flags().StringVar(&s.source, "source", "", "tasks made from events of this source")
	cmd.Flags().StringVar(&s.subjectPrefix, "subject-prefix", "", "tasks whose event subject starts with this")
	cmd.Flags().StringVar(&s.batch, "batch", "", "tasks whose event had this batch extension attribute")
	cmd.Flags().StringVar(&s.state, "state", "", "only tasks in this state")
	cmd.Flags().StringVar(&s.after, "created-after", "", "tasks created at or after this RFC 3339 time")
	cmd.Flags().StringVar(&s.before, "created-before", "", "tasks created before this RFC 3339 time")
}

// given reports whether any selector flag was set.
func (s *selectorFlags) given() bool {
	return s.function != "" || s.typ != "" || s.source != "" || s.subjectPrefix != "" || s.batch != "" ||
		s.state != "" || s.after != "" || s.before != ""
}

func (s *selectorFlags) selector() (contracts.Selector, error) {
	sel := contracts.Selector{Function: s.function, Type: s.typ, Source: s.source, SubjectPrefix: s.subjectPrefix,
		Batch: s.batch, State: contracts.State(s.state)}
	for _, f := range []struct {
		name, v string
		dst     **time.Time
	}{{"created-after", s.after, &sel.CreatedAfter}, {"created-before", s.before, &sel.CreatedBefore}} {
		if f.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, f.v)
		if err != nil {
			return sel, fmt.Errorf("--%s: want an RFC 3339 time, e.g. 2026-12-04T08:00:00Z, got %q", f.name, f.v)
		}
		*f.dst = &t
	}
	if sel.Function == "" && sel.Type == "" && sel.Source == "" && sel.SubjectPrefix == "" && sel.Batch == "" &&
		sel.CreatedAfter == nil && sel.CreatedBefore == nil {
		return sel, fmt.Errorf("give a selector: at least one of --function, --type, --source, --subject-prefix, --batch, --created-after, --created-before")
	}
	return sel, nil
}

// describeSelector prints a selector on one line.
func describeSelector(s contracts.Selector) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("function", s.Function)
	add("type", s.Type)
	add("source", s.Source)
	add("subject_prefix", s.SubjectPrefix)
	add("batch", s.Batch)
	add("state", string(s.State))
	if s.CreatedAfter != nil {
		add("created_after", s.CreatedAfter.Format(time.RFC3339))
	}
	if s.CreatedBefore != nil {
		add("created_before", s.CreatedBefore.Format(time.RFC3339))
	}
	return strings.Join(parts, " ")
}

func newPauseCommand(stdout io.Writer) *cobra.Command {
	var c clientFlags
	var sf selectorFlags
	cmd := &cobra.Command{
		Use:   "pause --function F [--type T] [--source S] [--subject-prefix P] [--batch B] [--state S]",
		Short: "Pause matching tasks (waiting now and submitted later) until resumed",
		Long: "Create a pause: the tenant's matching tasks that wait (queued, scheduled, retrying) and those that\n" +
			"become ready while it exists are held in state paused; running tasks finish. Resume with\n" +
			"'tasklane resume ID'. Two overlapping pauses hold a task until both are gone.",
		Example: "  tasklane pause --function thumbnail\n  tasklane pause --batch import-2026-12-04 --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sel, err := sf.selector()
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			p, err := cl.Pause(cmd.Context(), sel)
			if err != nil {
				return err
			}
			return c.print(stdout, p, func(w io.Writer) {
				fmt.Fprintf(w, "pause %s: %d tasks paused (%s)\n", p.ID, p.Paused, describeSelector(p.Selector))
			})
		},
	}
	c.register(cmd)
	sf.register(cmd)
	return cmd
}

func newResumeCommand(stdout io.Writer) *cobra.Command {
	var c clientFlags
	cmd := &cobra.Command{
		Use:     "resume ID",
		Short:   "End a pause: the tasks it held run again (under their functions' limits)",
		Example: "  tasklane resume 01KH62FBSQY4E00SB1AA863NEG",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			r, err := cl.Resume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return c.print(stdout, r, func(w io.Writer) { fmt.Fprintf(w, "resumed %d tasks\n", r.Resumed) })
		},
	}
	c.register(cmd)
	return cmd
}

func newPausesCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "pauses", Short: "List pauses", Example: "  tasklane pauses list"}
	var c clientFlags
	list := &cobra.Command{
		Use:     "list",
		Short:   "List the tenant's pauses, oldest first",
		Example: "  tasklane pauses list\n  tasklane pauses list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			l, err := cl.Pauses(cmd.Context())
			if err != nil {
				return err
			}
			return c.print(stdout, l, func(w io.Writer) { printPauses(w, l) })
		},
	}
	c.register(list)
	cmd.AddCommand(list)
	return cmd
}

func printPauses(w io.Writer, l *contracts.PauseList) {
	if len(l.Pauses) == 0 {
		fmt.Fprintln(w, "no pauses")
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tCREATED\tPAUSED\tSTATUS\tSELECTOR")
	for _, p := range l.Pauses {
		status := "active"
		if p.Resuming {
			status = "resuming"
		}
		created := p.CreatedAt
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", p.ID, fmtTime(&created), p.Paused, status, describeSelector(p.Selector))
	}
	_ = tw.Flush()
}

// cancelStep is how many matching tasks one request of 'tasks cancel
// --dry-run' by selector counts: the command prints its progress after
// each. A cancel is one request (a large selection runs as a job whose
// progress the command prints).
const cancelStep = 1000

// cancelMatching runs 'tasks cancel' by selector: progress on stderr
// (of the job, or of the dry run's steps), the totals on stdout.
func cancelMatching(cmd *cobra.Command, stdout io.Writer, c *clientFlags, sf *selectorFlags, dryRun bool) error {
	sel, err := sf.selector()
	if err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	var total contracts.CancelResponse
	if !dryRun {
		// One call: the server handles a small selection in the request
		// and runs a large one as a job, waited for here.
		r, err := cl.CancelMatching(cmd.Context(), contracts.CancelRequest{Selector: sel}, client.OnProgress(func(j contracts.Job) {
			fmt.Fprintf(cmd.ErrOrStderr(), "... job %s: %d matched, %d cancelled so far\n", j.ID, j.Matched, j.Done)
		}))
		if err != nil {
			return err
		}
		total = *r
	}
	req := contracts.CancelRequest{Selector: sel, DryRun: true, Limit: cancelStep}
	for dryRun {
		r, err := cl.CancelMatching(cmd.Context(), req)
		if err != nil {
			return err
		}
		total.Matched += r.Matched
		total.Cancelled += r.Cancelled
		if r.NextCursor == "" {
			break
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "... %d matched so far\n", total.Matched)
		req.Cursor = r.NextCursor
	}
	return c.print(stdout, total, func(w io.Writer) {
		if dryRun {
			fmt.Fprintf(w, "%d tasks match (dry run: none cancelled)\n", total.Matched)
			return
		}
		fmt.Fprintf(w, "%d tasks matched, %d cancelled\n", total.Matched, total.Cancelled)
	})
}
