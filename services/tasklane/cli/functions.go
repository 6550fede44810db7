package cli

import (
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/client"
)

func newFunctionsCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "functions", Short: "See the functions' limits and queues (an admin key: every tenant's; a tenant's key: its own)",
		Example: "  tasklane functions list --key $TASKLANE_ADMIN_KEY\n  tasklane functions list --key $TASKLANE_KEY"}
	var c clientFlags
	list := &cobra.Command{
		Use: "list", Short: "Each function's limit, running attempts, waiting tasks (and throttled answers, for an admin)", Args: cobra.NoArgs,
		Long: "With an admin key: every function's limit, running attempts, waiting tasks per band and throttled\n" +
			"answers, all tenants (GET /v1/admin/functions). With a tenant's key: the functions its events reach,\n" +
			"each with its limit and the tenant's own running and waiting tasks, and the tenant's quota\n" +
			"(GET /v1/functions). The key decides: the admin view is asked first, the tenant's when the key is\n" +
			"not an admin key (or the admin API is off).",
		Example: "  tasklane functions list\n  tasklane functions list --json | jq '.functions[] | select(.waiting > 0)'",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			v, err := cl.Functions(cmd.Context())
			if code := client.StatusCode(err); code == http.StatusUnauthorized || code == http.StatusForbidden {
				tv, terr := cl.TenantFunctions(cmd.Context())
				if client.StatusCode(terr) == http.StatusUnauthorized {
					return fmt.Errorf("neither an admin key nor a tenant's key: %w", terr)
				}
				if terr != nil {
					return terr
				}
				return c.print(stdout, tv, func(w io.Writer) { printTenantFunctions(w, tv) })
			}
			if err != nil {
				return err
			}
			return c.print(stdout, v, func(w io.Writer) { printFunctions(w, v) })
		},
	}
	c.register(list)
	cmd.AddCommand(list)
	return cmd
}

// printFunctions prints one line per function; a limit of 0 is unlimited,
// an adaptive one is marked (aimd).
func printFunctions(w io.Writer, v *contracts.FunctionsView) {
	if len(v.Functions) == 0 {
		fmt.Fprintln(w, "no functions configured")
		return
	}
	tw := newTable(w)
	fmt.Fprintf(tw, "FUNCTION\tLIMIT\tRUNNING\tWAITING\tHIGH\tNORMAL\tLOW\tTHROTTLED/MIN\n")
	for _, f := range v.Functions {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", f.Name, limitText(f.Limit, f.Adaptive), f.Running, f.Waiting,
			f.Ready.High, f.Ready.Normal, f.Ready.Low, f.ThrottledLastMinute)
	}
	_ = tw.Flush()
}

// printTenantFunctions prints the tenant's quota line, then one line per
// function: the function's limit, the tenant's running and waiting tasks.
func printTenantFunctions(w io.Writer, v *contracts.TenantFunctionsView) {
	q := v.Quota
	quota := func(n int64) string {
		if n == 0 {
			return "no limit"
		}
		return "limit " + strconv.FormatInt(n, 10)
	}
	rate := "no rate limit"
	if q.Rate > 0 {
		rate = fmt.Sprintf("rate %s/s burst %d", strconv.FormatFloat(q.Rate, 'f', -1, 64), q.Burst)
	}
	fmt.Fprintf(w, "tenant %s: running %d (%s), backlog %d (%s), %s\n\n", v.Tenant,
		q.Running, quota(int64(q.Concurrency)), q.Backlog, quota(q.MaxBacklog), rate)
	if len(v.Functions) == 0 {
		fmt.Fprintln(w, "no functions take this tenant's events")
		return
	}
	tw := newTable(w)
	fmt.Fprintf(tw, "FUNCTION\tLIMIT\tRUNNING\tWAITING\tHIGH\tNORMAL\tLOW\n")
	for _, f := range v.Functions {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\n", f.Name, limitText(f.Limit, f.Adaptive), f.Running, f.Waiting,
			f.Ready.High, f.Ready.Normal, f.Ready.Low)
	}
	_ = tw.Flush()
}

// limitText is a function's limit: 0 is unlimited, an adaptive one is
// marked (aimd).
func limitText(limit int, adaptive bool) string {
	s := strconv.Itoa(limit)
	if limit == 0 {
		s = "unlimited"
	}
	if adaptive {
		s += " (aimd)"
	}
	return s
}
