package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/sdk"
	"github.com/tasklane/tasklane/services/tasklane"
)

func newDevCommand(reg *sdk.Registry, g *globalFlags, stdout, stderr io.Writer) *cobra.Command {
	var file, addr string
	var traceStdout bool
	cmd := &cobra.Command{
		Use:   "dev [--config FILE]",
		Short: "Run every role in one process with an embedded store and broker (no services needed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger(stderr)
			if err != nil {
				return err
			}
			cfg, err := devConfig(file, addr)
			if err != nil {
				return err
			}
			stop, err := tasklane.UseEmbeddedStore(cfg)
			if err != nil {
				return err
			}
			defer stop()
			var reload func() (*config.Config, error)
			if file != "" {
				reload = func() (*config.Config, error) {
					c, err := config.Load(file)
					if err != nil {
						return nil, err
					}
					c.Redis, c.Broker = cfg.Redis, cfg.Broker // the embedded store
					return c, nil
				}
			}
			opts := tasklane.Options{Registry: reg, Logger: logger, Pprof: g.pprof}
			if traceStdout {
				opts.TraceStdout = stdout
			}
			return runUntilSignal(cmd.Context(), cfg, opts, func(a *tasklane.App) {
				fmt.Fprint(stdout, devBanner(a.URL(), cfg))
			}, reload)
		},
	}
	cmd.Flags().StringVar(&file, "config", "", "config file (YAML); default: a demo config with builtin:echo")
	cmd.Flags().StringVar(&addr, "addr", "", "listen address (default 127.0.0.1:8080, or server.addr of --config)")
	cmd.Flags().BoolVar(&traceStdout, "trace-stdout", false, "print every trace span as JSON on standard output")
	return cmd
}

// devConfig is the config dev runs: file's (the demo config without one),
// listening on addr when set, else on file's server.addr when it sets one,
// else on this machine only (dev has no authentication by default).
func devConfig(file, addr string) (*config.Config, error) {
	cfg := tasklane.DevConfig()
	if file != "" {
		c, err := config.Load(file)
		if err != nil {
			return nil, err
		}
		if !c.IsSet("server.addr") {
			c.Server.Addr = cfg.Server.Addr
		}
		cfg = c
	}
	if addr != "" {
		cfg.Server.Addr = addr
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// devBanner tells the user where Tasklane listens and how to try it.
func devBanner(url string, cfg *config.Config) string {
	typ, auth := tasklane.DevEventType, ""
	if len(cfg.Functions) > 0 && len(cfg.Functions[0].Events) > 0 {
		typ = cfg.Functions[0].Events[0]
	}
	for _, t := range cfg.Tenants {
		for _, k := range t.APIKeys {
			if !strings.HasPrefix(k, "sha256:") {
				auth = fmt.Sprintf(" \\\n    -H 'Authorization: Bearer %s'", k)
				break
			}
		}
		if auth != "" {
			break
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nTasklane dev server: %s  (embedded store and broker; everything is lost on exit)\n\n", url)
	fmt.Fprintf(&b, "Submit a CloudEvent (binary mode):\n\n")
	fmt.Fprintf(&b, "  curl -i %s/v1/events%s \\\n    -H 'ce-specversion: 1.0' -H 'ce-id: hello-1' -H 'ce-source: /demo' \\\n    -H 'ce-type: %s' -H 'content-type: application/json' \\\n    -d '{\"name\":\"world\"}'\n\n", url, auth, typ)
	fmt.Fprintf(&b, "Then look at the task (id from the answer):\n\n  curl %s/v1/tasks/<id>%s\n\n", url, strings.ReplaceAll(auth, " \\\n    ", " "))
	fmt.Fprintf(&b, "Probes: %s/healthz  %s/readyz  %s/metrics\n\n", url, url, url)
	return b.String()
}
