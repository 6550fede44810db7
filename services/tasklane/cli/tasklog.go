package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/client"
)

// newTaskLogsCommand is `tasklane tasks logs ID [--follow]`.
func newTaskLogsCommand(stdout io.Writer) *cobra.Command {
	var flags clientFlags
	var follow bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "logs ID [--follow]",
		Short: "Show a task's log: what the platform did and the lines its function wrote",
		Long: "Show a task's log in time order: accepted, published, admitted, each attempt's start and end (HTTP\n" +
			"status, run time, error, reply excerpt), retries, the terminal state, result deliveries, and the\n" +
			"lines the function wrote. --follow polls for the entries appended since its last read (by their seq:\n" +
			"none printed twice, none skipped) until the task has ended; with --json it prints one entry a line.",
		Example: "  tasklane tasks logs 01KH62FBSQY4E00SB1AA863NEG\n  tasklane tasks logs 01KH62FBSQY4E00SB1AA863NEG --follow\n" +
			"  tasklane tasks logs 01KH62FBSQY4E00SB1AA863NEG --json | jq -r '.entries[] | select(.kind == \"line\") | .message'",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := flags.client()
			if err != nil {
				return err
			}
			if !follow {
				lg, err := cl.TaskLog(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return flags.print(stdout, lg, func(w io.Writer) { printLogEntries(w, lg.Entries) })
			}
			return followTaskLog(cmd.Context(), cl, args[0], interval, stdout, flags.json)
		},
	}
	flags.register(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new entries until the task has ended (with --json: one entry per line)")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "how often --follow polls (bounded to 100ms..1m)")
	return cmd
}

// followTaskLog prints the log's entries as they come, until the task is
// terminal (its last entries included) or ctx ends (not an error: Ctrl-C).
func followTaskLog(ctx context.Context, cl *client.Client, id string, interval time.Duration, w io.Writer, asJSON bool) error {
	enc := json.NewEncoder(w)
	_, err := cl.FollowLog(ctx, id, interval, func(fresh []contracts.LogEntry) error {
		if !asJSON {
			printLogEntries(w, fresh)
			return nil
		}
		for _, e := range fresh {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// printLogEntries prints one line per entry: time, kind, attempt, status
// and run time when known, message.
func printLogEntries(w io.Writer, entries []contracts.LogEntry) {
	for _, e := range entries {
		att := "  "
		if e.Attempt > 0 {
			att = fmt.Sprintf("#%d", e.Attempt)
		}
		extra := ""
		if e.Status != 0 {
			extra += fmt.Sprintf("[%d] ", e.Status)
		}
		if e.DurationMS != nil {
			extra += fmt.Sprintf("(%d ms) ", *e.DurationMS)
		}
		fmt.Fprintf(w, "%s  %-10s %-3s %s%s\n", e.At.UTC().Format("2006-01-02T15:04:05.000Z"), e.Kind, att, extra, e.Message)
	}
}
