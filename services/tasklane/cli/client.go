package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/oklog/ulid/v2"
	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/client"
)

// clientFlags are the flags of every command that talks to a server.
type clientFlags struct {
	server string
	key    string
}

func (c *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.server, "server", envOr("TASKLANE_SERVER", client.ServerDefault), "server URL (env TASKLANE_SERVER)")
	cmd.Flags().StringVar(&c.key, "key", os.Getenv("TASKLANE_KEY"), "API key (env TASKLANE_KEY)")
}

// client returns a client of --server with --key.
func (c *clientFlags) client() (*client.Client, error) {
	cl, err := client.New(c.server, client.Options{APIKey: c.key})
	if err != nil {
		return nil, fmt.Errorf("--server: %w", err)
	}
	return cl, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// printJSON prints an answer as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newSubmitCommand(stdout io.Writer) *cobra.Command {
	var c clientFlags
	var typ, source, id, subject, data, dataFile, contentType string
	var priority, delay int
	cmd := &cobra.Command{
		Use:   "submit --type TYPE [--source SRC] [--data JSON]",
		Short: "Submit one CloudEvent (binary mode)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if typ == "" {
				return fmt.Errorf("--type is required")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			ev := client.Event{
				ID: id, Source: source, Type: typ, Subject: subject, DataContentType: contentType,
				Data: []byte(data), Extensions: map[string]string{},
			}
			if dataFile != "" {
				if ev.Data, err = os.ReadFile(dataFile); err != nil {
					return err
				}
			}
			if ev.ID == "" {
				ev.ID = ulid.Make().String()
			}
			if priority > 0 {
				ev.Extensions[contracts.ExtPriority] = strconv.Itoa(priority)
			}
			if delay > 0 {
				ev.Extensions[contracts.ExtDelay] = strconv.Itoa(delay)
			}
			sr, err := cl.Submit(cmd.Context(), ev)
			if err != nil {
				return err
			}
			return printJSON(stdout, sr)
		},
	}
	c.register(cmd)
	cmd.Flags().StringVar(&typ, "type", "", "event type (required)")
	cmd.Flags().StringVar(&source, "source", "/tasklane/cli", "event source")
	cmd.Flags().StringVar(&id, "id", "", "event id (default: a new ULID)")
	cmd.Flags().StringVar(&subject, "subject", "", "event subject")
	cmd.Flags().StringVar(&data, "data", "", "event data")
	cmd.Flags().StringVar(&dataFile, "data-file", "", "read event data from this file")
	cmd.Flags().StringVar(&contentType, "content-type", "application/json", "data content type")
	cmd.Flags().IntVar(&priority, "priority", 0, "priority 0-9")
	cmd.Flags().IntVar(&delay, "delay", 0, "delay in seconds")
	return cmd
}

func newTasksCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "tasks", Short: "Inspect tasks"}
	var getFlags clientFlags
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show one task",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := getFlags.client()
			if err != nil {
				return err
			}
			t, err := cl.GetTask(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(stdout, t)
		},
	}
	getFlags.register(get)
	var listFlags clientFlags
	var state, function, cursor string
	var limit int
	list := &cobra.Command{
		Use:   "list [--state S] [--function F]",
		Short: "List tasks, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := listFlags.client()
			if err != nil {
				return err
			}
			l, err := cl.ListTasks(cmd.Context(), client.TaskFilter{State: contracts.State(state), Function: function},
				client.Page{Limit: limit, Cursor: cursor})
			if err != nil {
				return err
			}
			return printJSON(stdout, l)
		},
	}
	listFlags.register(list)
	list.Flags().StringVar(&state, "state", "", "only tasks in this state")
	list.Flags().StringVar(&function, "function", "", "only this function's tasks")
	list.Flags().StringVar(&cursor, "cursor", "", "continue a listing")
	list.Flags().IntVar(&limit, "limit", 0, "page size")
	var cancelFlags clientFlags
	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a waiting task (queued, scheduled, retrying or paused)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := cancelFlags.client()
			if err != nil {
				return err
			}
			t, err := cl.CancelTask(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(stdout, t)
		},
	}
	cancelFlags.register(cancel)
	cmd.AddCommand(get, list, cancel)
	return cmd
}
