package cli

import (
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/contracts"
)

func newFunctionsCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "functions", Short: "See the functions' limits and queues (admin key)",
		Example: "  tasklane functions list --key $TASKLANE_ADMIN_KEY"}
	var c clientFlags
	list := &cobra.Command{
		Use: "list", Short: "Each function's limit, running attempts, waiting tasks and throttled answers", Args: cobra.NoArgs,
		Example: "  tasklane functions list\n  tasklane functions list --json | jq '.functions[] | select(.waiting > 0)'",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			v, err := cl.Functions(cmd.Context())
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
		limit := strconv.Itoa(f.Limit)
		if f.Limit == 0 {
			limit = "unlimited"
		}
		if f.Adaptive {
			limit += " (aimd)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", f.Name, limit, f.Running, f.Waiting,
			f.Ready.High, f.Ready.Normal, f.Ready.Low, f.ThrottledLastMinute)
	}
	_ = tw.Flush()
}
