package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/pkg/buildinfo"
	"github.com/tasklane/tasklane/pkg/client"
)

func newVersionCommand(stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version [--json]",
		Short: "Print the version and VCS commit tasklane was built from",
		Long: "Print the version and VCS commit tasklane was built from, as the Go build recorded them:\n" +
			"\"(devel)\" when built without a module version, commit \"unknown\" without VCS information.\n" +
			"A server shows the same version in /healthz and in the tasklane_build_info metric.",
		Example: "  tasklane version\n  tasklane version --json",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			bi := buildinfo.Read()
			if asJSON {
				return printJSON(stdout, bi)
			}
			_, err := fmt.Fprintf(stdout, "tasklane %s (commit %s, %s)\n", bi.Version, bi.Commit, bi.Go)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print version, commit and go as JSON")
	return cmd
}

func newHealthCommand(stdout io.Writer) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "health [URL]",
		Short: "Probe a server: exit 0 when its /readyz answers 200, 1 with the reason otherwise",
		Long: "Probe a server's /readyz (no key needed): exit 0 when it answers 200, 1 with the reason\n" +
			"otherwise (not ready and which check fails, refused, timed out). Meant for container\n" +
			"healthchecks in images without a shell or curl. URL defaults to $TASKLANE_SERVER or " + client.ServerDefault + ".",
		Example: "  tasklane health\n  tasklane health http://127.0.0.1:8080 --timeout 2s\n" +
			"  # docker-compose: healthcheck: {test: [\"CMD\", \"tasklane\", \"health\"], interval: 5s}",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			server := envOr("TASKLANE_SERVER", client.ServerDefault)
			if len(args) == 1 {
				server = args[0]
			}
			if !strings.Contains(server, "://") {
				return fmt.Errorf("URL %q: want http://host[:port] or https://host[:port]", server)
			}
			if timeout <= 0 {
				return fmt.Errorf("--timeout: want a positive duration, got %s", timeout)
			}
			cl, err := client.New(server, client.Options{HTTPClient: &http.Client{Timeout: timeout}})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if _, err := cl.Ready(ctx); err != nil {
				return fmt.Errorf("%s: %w", cl.Server(), err)
			}
			_, err = fmt.Fprintf(stdout, "%s: ready\n", cl.Server())
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
	return cmd
}
