package tasklane

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/contracts"
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

func (f *dlqFilterFlags) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"function": f.function, "reason": f.reason, "since": f.since, "until": f.until} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

func (f *dlqFilterFlags) body(dryRun bool) ([]byte, error) {
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
			return nil, errors.New(p.flag + ": want an RFC 3339 time, e.g. 2026-11-27T08:00:00Z")
		}
		*p.dst = &t
	}
	return json.Marshal(req)
}

func newDLQCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Inspect, redrive and purge dead-lettered tasks"}

	var listC clientFlags
	var listF dlqFilterFlags
	var limit int
	var cursor string
	list := &cobra.Command{
		Use: "list", Short: "List dead-lettered tasks, newest first", Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			q := listF.query()
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			status, b, err := listC.do(http.MethodGet, "/v1/dlq?"+q.Encode(), nil, nil)
			if err != nil {
				return err
			}
			return printAnswer(stdout, status, b)
		},
	}
	listC.register(list)
	listF.register(list)
	list.Flags().IntVar(&limit, "limit", 0, "page size")
	list.Flags().StringVar(&cursor, "cursor", "", "continue a listing")

	var showC clientFlags
	show := &cobra.Command{
		Use: "show ID", Short: "Show one dead-lettered task", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			status, b, err := showC.do(http.MethodGet, "/v1/dlq/"+url.PathEscape(args[0]), nil, nil)
			if err != nil {
				return err
			}
			return printAnswer(stdout, status, b)
		},
	}
	showC.register(show)

	cmd.AddCommand(list, show, dlqActionCommand(stdout, "redrive", "Put dead-lettered tasks back to work with a fresh attempt budget"),
		dlqActionCommand(stdout, "purge", "Delete dead-lettered tasks for good"))
	return cmd
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
		Args:  cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			switch {
			case all == (len(args) == 1):
				return errors.New("give either a task id or --all (with filters)")
			case len(args) == 1 && action == "redrive":
				status, b, err := c.do(http.MethodPost, "/v1/dlq/"+url.PathEscape(args[0])+"/redrive", nil, nil)
				if err != nil {
					return err
				}
				return printAnswer(stdout, status, b)
			case len(args) == 1:
				status, b, err := c.do(http.MethodDelete, "/v1/dlq/"+url.PathEscape(args[0]), nil, nil)
				if err != nil {
					return err
				}
				if status == http.StatusNoContent {
					_, err := io.WriteString(stdout, "purged "+args[0]+"\n")
					return err
				}
				return printAnswer(stdout, status, b)
			}
			body, err := f.body(dryRun)
			if err != nil {
				return err
			}
			status, b, err := c.do(http.MethodPost, "/v1/dlq/"+action, http.Header{"Content-Type": {"application/json"}}, body)
			if err != nil {
				return err
			}
			return printAnswer(stdout, status, b)
		},
	}
	c.register(cmd)
	f.register(cmd)
	cmd.Flags().BoolVar(&all, "all", false, "act on every dead-lettered task matching the filters")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "with --all: only count the matching tasks")
	return cmd
}
