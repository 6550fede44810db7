package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/client"
)

// newJobsCommand reads the jobs that large bulk calls run as (cancel,
// dlq redrive and purge beyond server.bulk_sync_max matches): the CLI's
// bulk commands wait for their job themselves; this finds one again after
// an interrupted wait, or one started by another client.
func newJobsCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "jobs", Short: "Follow the jobs that large bulk calls run as",
		Example: "  tasklane jobs get 01JF6Z3KX9V4M2Q8R7T5W1Y0AB\n  tasklane jobs get 01JF6Z3KX9V4M2Q8R7T5W1Y0AB --wait"}
	var c clientFlags
	var wait bool
	get := &cobra.Command{
		Use: "get JOB_ID", Short: "A job's state and counts (--wait: until it ends, with progress on stderr)", Args: cobra.ExactArgs(1),
		Long: "A bulk cancel, DLQ redrive or purge that matches more than the server's bulk_sync_max tasks is\n" +
			"answered 202 with a job (GET /v1/jobs/{id}); its tenant's key or an admin key reads it. With\n" +
			"--wait the command polls until the job ends and exits 1 when it failed.",
		Example: "  tasklane jobs get 01JF6Z3KX9V4M2Q8R7T5W1Y0AB --json\n  tasklane jobs get 01JF6Z3KX9V4M2Q8R7T5W1Y0AB --wait",
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			var j *contracts.Job
			if wait {
				j, err = cl.Wait(cmd.Context(), args[0], client.OnProgress(func(j contracts.Job) {
					fmt.Fprintf(cmd.ErrOrStderr(), "... job %s: %d matched, %d done so far\n", j.ID, j.Matched, j.Done)
				}))
			} else {
				j, err = cl.Job(cmd.Context(), args[0])
			}
			if j == nil {
				return err
			}
			if perr := c.print(stdout, j, func(w io.Writer) { printJob(w, j) }); perr != nil {
				return perr
			}
			return err // a failed job, after it is shown
		},
	}
	c.register(get)
	get.Flags().BoolVar(&wait, "wait", false, "poll until the job ends (exit 1 when it failed)")
	cmd.AddCommand(get)
	return cmd
}

// printJob prints a job as "key: value" lines.
func printJob(w io.Writer, j *contracts.Job) {
	tw := newTable(w)
	fmt.Fprintf(tw, "id:\t%s\nkind:\t%s\nstate:\t%s\nmatched:\t%d\ndone:\t%d\n", j.ID, j.Kind, j.State, j.Matched, j.Done)
	if j.Errors > 0 {
		fmt.Fprintf(tw, "step errors:\t%d (retried)\n", j.Errors)
	}
	if j.Resumed > 0 {
		fmt.Fprintf(tw, "resumed:\t%d times\n", j.Resumed)
	}
	fmt.Fprintf(tw, "started:\t%s\n", j.StartedAt.UTC().Format(time.RFC3339))
	if j.FinishedAt != nil {
		fmt.Fprintf(tw, "finished:\t%s (%s)\n", j.FinishedAt.UTC().Format(time.RFC3339), j.FinishedAt.Sub(j.StartedAt).Round(time.Millisecond))
	}
	if j.Error != "" {
		fmt.Fprintf(tw, "error:\t%s\n", j.Error)
	}
	if j.NextCursor != "" {
		fmt.Fprintf(tw, "next cursor:\t%s (the call's limit stopped it: continue with it)\n", j.NextCursor)
	}
	_ = tw.Flush()
}
