package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/contracts"
)

func newRoutingCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "routing", Short: "See and change where tenants' tasks go (admin key)",
		Example: "  tasklane routing show --key $TASKLANE_ADMIN_KEY\n  tasklane routing pin acme --dedicated"}

	var showC clientFlags
	show := &cobra.Command{
		Use: "show", Short: "Lanes with backlog and consumers, tenants' placement, recent changes", Args: cobra.NoArgs,
		Example: "  tasklane routing show\n  tasklane routing show --json | jq '.lanes[] | select(.backlog > 0)'",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := showC.client()
			if err != nil {
				return err
			}
			v, err := cl.Routing(cmd.Context())
			if err != nil {
				return err
			}
			return showC.print(stdout, v, func(w io.Writer) { printRouting(w, v) })
		},
	}
	showC.register(show)

	var pinC clientFlags
	var dedicated, shared bool
	pin := &cobra.Command{
		Use: "pin TENANT --dedicated | --shared", Short: "Pin a tenant to a dedicated lane or to its shared shard", Args: cobra.ExactArgs(1),
		Example: "  tasklane routing pin acme --dedicated\n  tasklane routing pin acme --shared",
		RunE: func(cmd *cobra.Command, args []string) error {
			if dedicated == shared {
				return fmt.Errorf("give one of --dedicated or --shared")
			}
			cl, err := pinC.client()
			if err != nil {
				return err
			}
			ch, err := cl.PinTenant(cmd.Context(), args[0], dedicated)
			if err != nil {
				return err
			}
			return pinC.print(stdout, ch, func(w io.Writer) { printRoutingChange(w, ch) })
		},
	}
	pinC.register(pin)
	pin.Flags().BoolVar(&dedicated, "dedicated", false, "move the tenant to its own lane and keep it there")
	pin.Flags().BoolVar(&shared, "shared", false, "keep the tenant on its shared shard")
	cmd.AddCommand(show, pin)
	return cmd
}

func printRouting(w io.Writer, v *contracts.RoutingView) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "routing table version %d\n\nLANE\tKIND\tBACKLOG\tCONSUMERS\n", v.Version)
	for _, l := range v.Lanes {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", l.Name, l.Kind, l.Backlog, l.Consumers)
	}
	fmt.Fprintf(tw, "\nTENANT\tLANES\tPINNED\n")
	for _, t := range v.Tenants {
		lanes := strings.Join(t.Shard, ",")
		if t.Dedicated != "" {
			lanes = t.Dedicated + " (shard " + lanes + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\n", t.Tenant, lanes, t.Pinned)
	}
	fmt.Fprintf(tw, "\nVERSION\tAT\tTENANT\tACTION\tREASON\n")
	for _, c := range v.Changes {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", c.Version, c.At.Format("2006-01-02T15:04:05Z"), c.Tenant, c.Action, c.Reason)
	}
	_ = tw.Flush()
}
