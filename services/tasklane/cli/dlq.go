package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/client"
)

// dlqFilterFlags select dead-lettered tasks.
type dlqFilterFlags struct {
	function, reason, since, until string
}

func (f *dlqFilterFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.function, "function", "", "only this function's tasks")
	cmd.Flags().StringVar(&f.reason, "reason", "", "only tasks dead-lettered for this reason: non_retryable or attempts_exhausted")
	cmd.Flags().StringVar(&f.since, "since", "", "only tasks that died at or after this RFC 3339 time")
	cmd.Flags().StringVar(&f.until, "until", "", "only tasks that died before this RFC 3339 time")
}

// filter is the contracts.DLQFilter of the flags.
func (f *dlqFilterFlags) filter(dryRun bool) (contracts.DLQFilter, error) {
	req := contracts.DLQFilter{Function: f.function, Reason: contracts.Reason(f.reason), DryRun: dryRun}
	for _, p := range []struct {
		flag, v string
		dst     **time.Time
	}{{"--since", f.since, &req.Since}, {"--until", f.until, &req.Until}} {
		if p.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, p.v)
		if err != nil {
			return req, errors.New(p.flag + ": want an RFC 3339 time, e.g. 2026-11-27T08:00:00Z")
		}
		*p.dst = &t
	}
	return req, nil
}

func newDLQCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Inspect, redrive and purge dead-lettered tasks",
		Example: "  tasklane dlq list --reason non_retryable\n  tasklane dlq redrive --all --function thumbnail --dry-run"}

	var listC clientFlags
	var listF dlqFilterFlags
	var limit int
	var cursor string
	list := &cobra.Command{
		Use: "list", Short: "List dead-lettered tasks, newest first", Args: cobra.NoArgs,
		Example: "  tasklane dlq list\n  tasklane dlq list --function thumbnail --since 2026-12-04T08:00:00Z --json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := listF.filter(false)
			if err != nil {
				return err
			}
			cl, err := listC.client()
			if err != nil {
				return err
			}
			l, err := cl.ListDLQ(cmd.Context(), f, client.Page{Limit: limit, Cursor: cursor})
			if err != nil {
				return err
			}
			return listC.print(stdout, l, func(w io.Writer) { printTaskList(w, l, true) })
		},
	}
	listC.register(list)
	listF.register(list)
	list.Flags().IntVar(&limit, "limit", 0, "page size")
	list.Flags().StringVar(&cursor, "cursor", "", "continue a listing")

	var showC clientFlags
	show := &cobra.Command{
		Use: "show ID", Short: "Show one dead-lettered task with its event data", Args: cobra.ExactArgs(1),
		Example: "  tasklane dlq show 01KH62FBSQY4E00SB1AA863NEG\n  tasklane dlq show 01KH62FBSQY4E00SB1AA863NEG --json",
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := showC.client()
			if err != nil {
				return err
			}
			t, err := cl.GetDLQ(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return showC.print(stdout, t, func(w io.Writer) { printTask(w, t) })
		},
	}
	showC.register(show)

	cmd.AddCommand(list, show, dlqActionCommand(stdout, "redrive", "Put dead-lettered tasks back to work with a fresh attempt budget"),
		dlqActionCommand(stdout, "purge", "Delete dead-lettered tasks for good"))
	return cmd
}

// dlqStep is how many matching tasks one request of `dlq redrive|purge
// --all` handles: the command prints its progress after each.
const dlqStep = contracts.DLQStepMax

// dlqBulkSteps runs a bulk redrive or purge in steps of dlqStep, calling
// progress with the totals so far after each step that leaves more to do,
// and returns the totals.
func dlqBulkSteps(ctx context.Context, bulk func(context.Context, contracts.DLQFilter) (*contracts.DLQResult, error),
	f contracts.DLQFilter, progress func(contracts.DLQResult)) (*contracts.DLQResult, error) {
	total := contracts.DLQResult{DryRun: f.DryRun}
	f.Limit, f.Cursor = dlqStep, ""
	for {
		r, err := bulk(ctx, f)
		if err != nil {
			if total.Matched > 0 {
				return nil, fmt.Errorf("after %d matched, %d done: %w", total.Matched, total.Done, err)
			}
			return nil, err
		}
		total.Matched += r.Matched
		total.Done += r.Done
		if r.NextCursor == "" {
			return &total, nil
		}
		progress(total)
		f.Cursor = r.NextCursor
	}
}

func dlqDone(action string) string {
	if action == "redrive" {
		return "redriven"
	}
	return "purged"
}

// dlqActionCommand builds `dlq redrive` and `dlq purge`: one task by id, or
// --all matching the filter flags, with --dry-run to count first.
func dlqActionCommand(stdout io.Writer, action, short string) *cobra.Command {
	var c clientFlags
	var f dlqFilterFlags
	var all, dryRun bool
	cmd := &cobra.Command{
		Use:   action + " ID | " + action + " --all [--function F] [--reason R] [--since T] [--until T] [--dry-run]",
		Short: short,
		Long: short + ": one task by id, or with --all every dead-lettered task matching the filters; a\n" +
			"selection larger than the server's server.bulk_sync_max runs as a job on the server, whose\n" +
			"progress is shown on stderr. --dry-run only counts (in steps of " + strconv.Itoa(dlqStep) + ").",
		Example: "  tasklane dlq " + action + " 01KH62FBSQY4E00SB1AA863NEG\n" +
			"  tasklane dlq " + action + " --all --reason attempts_exhausted --since 2026-12-04T08:00:00Z --dry-run",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) == 1) {
				return errors.New("give either a task id or --all (with filters)")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			switch {
			case len(args) == 1 && action == "redrive":
				t, err := cl.RedriveDLQ(ctx, args[0])
				if err != nil {
					return err
				}
				return c.print(stdout, t, func(w io.Writer) { printTask(w, t) })
			case len(args) == 1:
				if err := cl.PurgeDLQ(ctx, args[0]); err != nil {
					return err
				}
				return c.print(stdout, map[string]string{"purged": args[0]}, func(w io.Writer) { fmt.Fprintln(w, "purged", args[0]) })
			}
			filter, err := f.filter(dryRun)
			if err != nil {
				return err
			}
			bulk := cl.PurgeDLQMatching
			if action == "redrive" {
				bulk = cl.RedriveDLQMatching
			}
			var res *contracts.DLQResult
			if dryRun {
				res, err = dlqBulkSteps(ctx, func(ctx context.Context, f contracts.DLQFilter) (*contracts.DLQResult, error) {
					return bulk(ctx, f)
				}, filter, func(r contracts.DLQResult) {
					fmt.Fprintf(cmd.ErrOrStderr(), "... %d matched so far\n", r.Matched)
				})
			} else {
				// One call: the server handles a small selection in the
				// request and runs a large one as a job, waited for here.
				res, err = bulk(ctx, filter, client.OnProgress(func(j contracts.Job) {
					fmt.Fprintf(cmd.ErrOrStderr(), "... job %s: %d matched, %d %s so far\n", j.ID, j.Matched, j.Done, dlqDone(action))
				}))
			}
			if err != nil {
				return err
			}
			return c.print(stdout, res, func(w io.Writer) { printDLQResult(w, action, res) })
		},
	}
	c.register(cmd)
	f.register(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "act on every dead-lettered task matching the filters")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "with --all: only count the matching tasks")
	return cmd
}
