// Package cli is the tasklane command line: serve and dev run the roles
// (package tasklane wires them), config validates a config file, the client
// commands (submit, tasks, dlq, routing, triggers) call a running server
// through pkg/client, and bench loads one (package bench).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/sdk"
	"github.com/tasklane/tasklane/services/tasklane"
	"github.com/tasklane/tasklane/services/tasklane/bench"
)

// Main runs the tasklane command line with reg's Go handlers and exits.
func Main(reg *sdk.Registry) {
	if err := NewCommand(reg, os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tasklane:", err)
		os.Exit(1)
	}
}

type globalFlags struct {
	logLevel  string
	logFormat string
	pprof     bool
}

// NewCommand builds the root command.
func NewCommand(reg *sdk.Registry, stdout, stderr io.Writer) *cobra.Command {
	if reg == nil {
		reg = sdk.NewRegistry()
	}
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "tasklane",
		Short:         "Tasklane runs CloudEvents as reliable, fair, observable tasks",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().BoolVar(&g.pprof, "pprof", false, "serve /debug/pprof/ on the HTTP address (serve, dev)")
	root.AddCommand(
		newServeCommand(reg, g, stderr),
		newDevCommand(reg, g, stdout, stderr),
		newConfigCommand(stdout),
		newSubmitCommand(stdout),
		newTasksCommand(stdout),
		newDLQCommand(stdout),
		newRoutingCommand(stdout),
		newTriggersCommand(stdout),
		bench.NewCommand(stdout, stderr),
	)
	return root
}

func (g *globalFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: want text or json, got %q", g.logFormat)
}

func newServeCommand(reg *sdk.Registry, g *globalFlags, stderr io.Writer) *cobra.Command {
	var file, roles string
	var insecureNoAuth bool
	cmd := &cobra.Command{
		Use:   "serve --config FILE [--roles gateway,dispatcher,...] [--insecure-no-auth]",
		Short: "Run Tasklane roles against RabbitMQ and Redis",
		Long: "Run Tasklane roles against RabbitMQ and Redis. The config must list functions, and tenants with\n" +
			"API keys: without tenants the API takes requests without a key, which serve refuses unless\n" +
			"--insecure-no-auth is given (development only; `tasklane dev` needs no flag).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("--config is required (see examples/tasklane.yaml)")
			}
			logger, err := g.logger(stderr)
			if err != nil {
				return err
			}
			cfg, err := config.Load(file)
			if err != nil {
				return err
			}
			cfg.ApplyEnv(os.Getenv)
			if err := cfg.CheckServe(insecureNoAuth); err != nil {
				return err
			}
			r, err := tasklane.ParseRoles(roles)
			if err != nil {
				return err
			}
			reload := func() (*config.Config, error) {
				c, err := config.Load(file)
				if err != nil {
					return nil, err
				}
				c.ApplyEnv(os.Getenv)
				return c, c.Validate()
			}
			return runUntilSignal(cmd.Context(), cfg, tasklane.Options{Roles: r, Registry: reg, Logger: logger, Pprof: g.pprof}, nil, reload)
		},
	}
	cmd.Flags().StringVar(&file, "config", "", "config file (YAML)")
	cmd.Flags().StringVar(&roles, "roles", "", "comma-separated roles to run (default all): "+strings.Join(tasklane.AllRoles, ","))
	cmd.Flags().BoolVar(&insecureNoAuth, "insecure-no-auth", false, "run a config without tenants: the API takes requests without a key (development only)")
	return cmd
}

// runUntilSignal starts the app, calls started, and shuts down on SIGINT or
// SIGTERM, draining running attempts; a clean stop ends with a "stopped"
// line. On SIGHUP it reads the config again with reload (when not nil) and
// applies its triggers; a config that does not load is logged and changes
// nothing. go-redis's own log lines go to opts.Logger.
func runUntilSignal(ctx context.Context, cfg *config.Config, opts tasklane.Options, started func(*tasklane.App), reload func() (*config.Config, error)) error {
	if ctx == nil {
		ctx = context.Background()
	}
	tasklane.RouteRedisLogs(opts.Logger)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	if reload != nil {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	app, err := tasklane.Start(ctx, cfg, opts) // waits for Redis and the broker, serving the probes
	if err != nil {
		if ctx.Err() != nil {
			opts.Logger.Info("stopped") // while starting: Start shut the app down
			return nil
		}
		return err
	}
	if started != nil {
		started(app)
	}
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			waiting = false
		case <-hup:
			reloadTriggers(ctx, app, opts.Logger, reload)
		}
	}
	opts.Logger.Info("shutting down: draining running attempts", "drain_timeout", cfg.Dispatcher.DrainTimeout.Std())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Dispatcher.DrainTimeout.Std()+10*time.Second)
	defer cancel()
	if err := app.Shutdown(sctx); err != nil {
		return err
	}
	opts.Logger.Info("stopped")
	return nil
}

// reloadTriggers reads the config again and applies its triggers.
func reloadTriggers(ctx context.Context, app *tasklane.App, logger *slog.Logger, reload func() (*config.Config, error)) {
	logger.InfoContext(ctx, "SIGHUP: reloading the config's triggers")
	cfg, err := reload()
	if err == nil {
		err = app.ReloadTriggers(ctx, cfg)
	}
	if err != nil {
		logger.ErrorContext(ctx, "config reload failed; the triggers running are unchanged", "error", err)
		return
	}
	logger.InfoContext(ctx, "config reloaded: triggers applied (other sections take effect at a restart)", "triggers", len(cfg.Triggers))
}

func newConfigCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with config files"}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate FILE",
		Short: "Check a config file (triggers included) without starting anything",
		Long: "Check a config file without starting anything: every problem is printed as file:line:col: field: message\n" +
			"and the exit code is 1. Environment variables the triggers need (webhook secrets, notification tokens)\n" +
			"that are not set here are printed as warnings: they may be set only where Tasklane runs.",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0])
			if err != nil {
				return err
			}
			if err := cfg.CheckTriggerEnv(os.Getenv); err != nil {
				for _, line := range strings.Split(err.Error(), "\n") {
					fmt.Fprintln(stdout, "warning:", line)
				}
			}
			fmt.Fprintf(stdout, "%s: ok (%d tenants, %d functions, %d subscriptions, %d triggers)\n",
				args[0], len(cfg.Tenants), len(cfg.Functions), len(cfg.Subscriptions), len(cfg.Triggers))
			return nil
		},
	})
	return cmd
}
