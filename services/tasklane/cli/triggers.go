package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/contracts"
)

func newTriggersCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "triggers", Short: "See the tenant's triggers", Example: "  tasklane triggers list"}

	var c clientFlags
	list := &cobra.Command{
		Use: "list", Short: "Triggers with their state, last and next fire", Args: cobra.NoArgs,
		Example: "  tasklane triggers list\n  tasklane triggers list --json | jq '.triggers[] | select(.last_error != \"\")'",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			v, err := cl.Triggers(cmd.Context())
			if err != nil {
				return err
			}
			return c.print(stdout, v, func(w io.Writer) { printTriggers(w, *v, time.Now()) })
		},
	}
	c.register(list)
	cmd.AddCommand(list)
	return cmd
}

func printTriggers(w io.Writer, v contracts.TriggerList, now time.Time) {
	if len(v.Triggers) == 0 {
		fmt.Fprintln(w, "no triggers")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NAME\tKIND\tON\tSTATE\tFIRES\tLAST FIRE\tNEXT FIRE\tLAST ERROR\n")
	for _, t := range v.Triggers {
		on := t.Path
		switch {
		case t.Schedule != "":
			on = t.Schedule + " (" + t.Timezone + ")"
		case t.Bucket != "" && t.Path == "":
			on = "poll " + t.Bucket
		case t.Bucket != "":
			on = t.Path + " (" + t.Bucket + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", t.Name, t.Kind, on, t.State, t.Fires,
			relTime(t.LastFire, now), relTime(t.NextFire, now), t.LastError)
	}
	_ = tw.Flush()
}

// relTime shows t in UTC with its distance from now, or "-".
func relTime(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now).Round(time.Second)
	rel := "in " + d.String()
	if d <= 0 {
		rel = (-d).String() + " ago"
	}
	return t.UTC().Format("2006-01-02T15:04:05Z") + " (" + rel + ")"
}
