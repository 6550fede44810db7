// Package cli is the tasklane command line: serve and dev run the roles
// (package tasklane wires them), config validates a config file, the client
// commands (submit, tasks, dlq, routing, functions, triggers) call a running server
// through pkg/client and print a table or, with --json, the server's
// answer, health probes a server's readiness, version prints the build,
// and bench loads a server (package bench). Run returns the exit code: 0,
// 1 on an error, 2 on a wrong command line.
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

// Main runs the tasklane command line with reg's Go handlers and exits
// with Run's exit code.
func Main(reg *sdk.Registry) {
	os.Exit(Run(reg, os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes of Run.
const (
	// ExitOK: the command did what it was asked.
	ExitOK = 0
	// ExitError: the command failed (a server's error answer, a server
	// not ready, a bad config file).
	ExitError = 1
	// ExitUsage: the command line is wrong (an unknown command or flag,
	// a wrong number of arguments).
	ExitUsage = 2
)

// Run runs the tasklane command line on args, prints an error to stderr
// as "tasklane: ..." and returns the exit code.
func Run(reg *sdk.Registry, args []string, stdout, stderr io.Writer) int {
	cmd := NewCommand(reg, stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "tasklane:", err)
	if ue, ok := errors.AsType[*usageError](err); ok {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", ue.cmd.CommandPath())
		return ExitUsage
	}
	return ExitError
}

// globalFlags are the server's flags (--log-level, --log-format, --pprof):
// serve and dev have them, the client commands do not.
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
		Use:   "tasklane",
		Short: "Tasklane runs CloudEvents as reliable, fair, observable tasks",
		Example: `  tasklane dev                                   # try it: everything in one process, no services
  tasklane serve --config tasklane.yaml          # against RabbitMQ and Redis
  tasklane submit --type com.example.hello --data '{"name":"world"}'
  tasklane tasks list --state dead --json
  tasklane health http://127.0.0.1:8080          # a container healthcheck`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	serve := newServeCommand(reg, g, stderr)
	serve.Example = `  tasklane serve --config tasklane.yaml
  tasklane serve --config tasklane.yaml --roles gateway,triggers --log-format json
  TASKLANE_AMQP_URL=amqp://user:pass@rabbit:5672/ tasklane serve --config tasklane.yaml --roles dispatcher`
	dev := newDevCommand(reg, g, stdout, stderr)
	dev.Example = `  tasklane dev
  tasklane dev --config examples/tasklane.yaml --addr 127.0.0.1:9090 --log-level debug`
	g.register(serve)
	g.register(dev)
	root.AddCommand(
		serve,
		dev,
		newConfigCommand(reg, stdout, stderr),
		newSubmitCommand(stdout),
		newTasksCommand(stdout),
		newPauseCommand(stdout),
		newResumeCommand(stdout),
		newPausesCommand(stdout),
		newDLQCommand(stdout),
		newJobsCommand(stdout),
		newRoutingCommand(stdout),
		newFunctionsCommand(stdout),
		newTriggersCommand(stdout),
		newVersionCommand(stdout),
		newHealthCommand(stdout),
		bench.NewCommand(stdout, stderr),
	)
	strictCommands(root)
	return root
}

// register adds the server's flags to serve or dev.
func (g *globalFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.Flags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	cmd.Flags().BoolVar(&g.pprof, "pprof", false, "serve /debug/pprof/ on the HTTP address")
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
			// Again: the environment's URLs are config too.
			if err := cfg.Validate(); err != nil {
				return err
			}
			if err := cfg.CheckServe(insecureNoAuth); err != nil {
				return err
			}
			if err := cfg.CheckGoEndpoints(reg.Names()); err != nil {
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

func newConfigCommand(reg *sdk.Registry, stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with config files", Example: "  tasklane config validate tasklane.yaml"}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate FILE",
		Short: "Check a config file (triggers included) without starting anything",
		Long: "Check a config file without starting anything: every problem is printed as file:line:col: field: message\n" +
			"and the exit code is 1. Besides each field, it checks what serve would only find later: a trigger whose\n" +
			"events no function takes, a go: endpoint this binary has no handler for, a filter naming an unknown\n" +
			"function or tenant. Risky but legal settings (no tenants, so no authentication; no admin keys; a webhook\n" +
			"without a signature; an endpoint or sink on 0.0.0.0) and environment variables the triggers need that are\n" +
			"not set here (they may be set only where Tasklane runs) are printed to stderr as \"warning: file:line:col: ...\"\n" +
			"and leave the exit code 0.",
		Example: "  tasklane config validate examples/tasklane.yaml",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0])
			if err != nil {
				return err
			}
			if err := cfg.CheckGoEndpoints(reg.Names()); err != nil {
				return err
			}
			for _, w := range cfg.Warnings() {
				fmt.Fprintln(stderr, "warning:", w)
			}
			if err := cfg.CheckTriggerEnv(os.Getenv); err != nil {
				for _, line := range strings.Split(err.Error(), "\n") {
					fmt.Fprintln(stderr, "warning:", line)
				}
			}
			fmt.Fprintf(stdout, "%s: ok (%d tenants, %d functions, %d subscriptions, %d triggers)\n",
				args[0], len(cfg.Tenants), len(cfg.Functions), len(cfg.Subscriptions), len(cfg.Triggers))
			return nil
		},
	})
	return cmd
}
