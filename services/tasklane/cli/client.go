package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/spf13/cobra"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/client"
)

// clientFlags are the flags of every command that talks to a server.
type clientFlags struct {
	server string
	key    string
	json   bool
}

func (c *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.server, "server", envOr("TASKLANE_SERVER", client.ServerDefault), "server URL (env TASKLANE_SERVER)")
	cmd.Flags().StringVar(&c.key, "key", os.Getenv("TASKLANE_KEY"), "API key (env TASKLANE_KEY)")
	cmd.Flags().BoolVar(&c.json, "json", false, "print the server's answer as JSON (for scripts) instead of a table")
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

// maxBatchFile bounds the file of --batch-file (the server bounds a batch
// too: server.max_batch_bytes).
const maxBatchFile = 64 << 20

func newSubmitCommand(stdout io.Writer) *cobra.Command {
	var c clientFlags
	var typ, source, id, subject, data, dataFile, contentType, deliverAt, batchFile, batch string
	var priority, delay, ttl int
	var structured bool
	cmd := &cobra.Command{
		Use:   "submit --type TYPE [--source SRC] [--data JSON] | submit --batch-file FILE",
		Short: "Submit a CloudEvent (binary mode, or structured), or a batch of them",
		Long: "Submit one CloudEvent built from the flags, in binary mode (or structured mode with --structured),\n" +
			"or with --batch-file a JSON array of CloudEvents (JSON format) in one batch-mode request: the server\n" +
			"accepts all of them or none. Prints the tasks made, one per function that takes the event type.",
		Example: `  tasklane submit --type com.example.hello --data '{"name":"world"}'
  tasklane submit --type com.example.report --id report-2026-12-04 --priority 7 --ttl 3600
  tasklane submit --type com.example.reminder --deliver-at 2026-12-24T08:00:00Z --structured
  tasklane submit --batch-file events.json --json   # [{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{}}, ...]`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			if batchFile != "" {
				for _, f := range []string{"type", "id", "subject", "data", "data-file", "priority", "delay", "ttl", "deliver-at", "structured", "batch"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("--batch-file: the file's events carry their own attributes; --%s does not apply", f)
					}
				}
				body, err := readBatchFile(batchFile)
				if err != nil {
					return err
				}
				sr, err := cl.SubmitBatchJSON(cmd.Context(), body)
				if err != nil {
					return err
				}
				return c.print(stdout, sr, func(w io.Writer) { printSubmit(w, sr) })
			}
			if typ == "" {
				return fmt.Errorf("--type is required (or --batch-file)")
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
			if priority < 0 || priority > contracts.MaxPriority {
				return fmt.Errorf("--priority: want 0 to %d, got %d", contracts.MaxPriority, priority)
			}
			if priority > 0 {
				ev.Extensions[contracts.ExtPriority] = strconv.Itoa(priority)
			}
			if delay < 0 || ttl < 0 {
				return fmt.Errorf("--delay and --ttl: want whole seconds, 0 or more")
			}
			if delay > 0 && deliverAt != "" {
				return fmt.Errorf("give --delay or --deliver-at, not both")
			}
			if delay > 0 {
				ev.Extensions[contracts.ExtDelay] = strconv.Itoa(delay)
			}
			if deliverAt != "" {
				if _, err := time.Parse(time.RFC3339, deliverAt); err != nil {
					return fmt.Errorf("--deliver-at: want an RFC 3339 time, e.g. 2026-12-24T08:00:00Z, got %q", deliverAt)
				}
				ev.Extensions[contracts.ExtDeliverAt] = deliverAt
			}
			if ttl > 0 {
				ev.Extensions[contracts.ExtTTL] = strconv.Itoa(ttl)
			}
			if batch != "" {
				ev.Extensions[contracts.ExtBatch] = batch
			}
			submit := cl.Submit
			if structured {
				submit = cl.SubmitStructured
			}
			sr, err := submit(cmd.Context(), ev)
			if err != nil {
				return err
			}
			return c.print(stdout, sr, func(w io.Writer) { printSubmit(w, sr) })
		},
	}
	c.register(cmd)
	cmd.Flags().StringVar(&typ, "type", "", "event type (required without --batch-file)")
	cmd.Flags().StringVar(&source, "source", "/tasklane/cli", "event source")
	cmd.Flags().StringVar(&id, "id", "", "event id (default: a new ULID)")
	cmd.Flags().StringVar(&subject, "subject", "", "event subject")
	cmd.Flags().StringVar(&data, "data", "", "event data")
	cmd.Flags().StringVar(&dataFile, "data-file", "", "read event data from this file")
	cmd.Flags().StringVar(&contentType, "content-type", "application/json", "data content type")
	cmd.Flags().IntVar(&priority, "priority", 0, "priority 0-9")
	cmd.Flags().IntVar(&delay, "delay", 0, "delay in seconds")
	cmd.Flags().StringVar(&deliverAt, "deliver-at", "", "run at this RFC 3339 time (the deliverat extension)")
	cmd.Flags().StringVar(&batch, "batch", "", "group the task under this name (the batch extension; pause or cancel it by --batch)")
	cmd.Flags().IntVar(&ttl, "ttl", 0, "expire the task if it has not started within this many seconds")
	cmd.Flags().BoolVar(&structured, "structured", false, "send in structured mode (application/cloudevents+json)")
	cmd.Flags().StringVar(&batchFile, "batch-file", "", "send this file's JSON array of CloudEvents in batch mode")
	return cmd
}

// readBatchFile reads --batch-file: a JSON array of JSON objects.
func readBatchFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--batch-file: %w", err)
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, maxBatchFile+1))
	if err != nil {
		return nil, fmt.Errorf("--batch-file: %w", err)
	}
	if len(body) > maxBatchFile {
		return nil, fmt.Errorf("--batch-file %s: larger than %d bytes", path, maxBatchFile)
	}
	var events []map[string]json.RawMessage
	if err := json.Unmarshal(body, &events); err != nil {
		return nil, fmt.Errorf("--batch-file %s: want a JSON array of CloudEvents (JSON format): %w", path, err)
	}
	if len(events) == 0 {
		return nil, fmt.Errorf("--batch-file %s: no events", path)
	}
	return body, nil
}

func newTasksCommand(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "tasks", Short: "Inspect and cancel tasks",
		Example: "  tasklane tasks list --state dead\n  tasklane tasks get 01KH62FBSQY4E00SB1AA863NEG --json"}
	var getFlags clientFlags
	get := &cobra.Command{
		Use:     "get ID",
		Short:   "Show one task",
		Example: "  tasklane tasks get 01KH62FBSQY4E00SB1AA863NEG\n  tasklane tasks get 01KH62FBSQY4E00SB1AA863NEG --json | jq .result",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := getFlags.client()
			if err != nil {
				return err
			}
			t, err := cl.GetTask(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return getFlags.print(stdout, t, func(w io.Writer) { printTask(w, t) })
		},
	}
	getFlags.register(get)
	var listFlags clientFlags
	var state, function, cursor, batch string
	var limit int
	list := &cobra.Command{
		Use:   "list [--state S] [--function F]",
		Short: "List tasks, newest first",
		Example: "  tasklane tasks list\n  tasklane tasks list --state retrying --function thumbnail --limit 50\n" +
			"  tasklane tasks list --json | jq -r '.tasks[].id'",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := listFlags.client()
			if err != nil {
				return err
			}
			l, err := cl.ListTasks(cmd.Context(), client.TaskFilter{State: contracts.State(state), Function: function, Batch: batch},
				client.Page{Limit: limit, Cursor: cursor})
			if err != nil {
				return err
			}
			return listFlags.print(stdout, l, func(w io.Writer) { printTaskList(w, l, false) })
		},
	}
	listFlags.register(list)
	list.Flags().StringVar(&state, "state", "", "only tasks in this state")
	list.Flags().StringVar(&function, "function", "", "only this function's tasks")
	list.Flags().StringVar(&batch, "batch", "", "only tasks whose event had this batch extension attribute")
	list.Flags().StringVar(&cursor, "cursor", "", "continue a listing")
	list.Flags().IntVar(&limit, "limit", 0, "page size")
	var cancelFlags clientFlags
	var cancelSel selectorFlags
	var dryRun bool
	cancel := &cobra.Command{
		Use:   "cancel ID | cancel --function F [--batch B] [...] [--dry-run]",
		Short: "Cancel a task, or every task a selector matches (waiting, paused and running)",
		Long: "Cancel one task by id, or with selector flags every matching task that has not ended: waiting,\n" +
			"paused and running ones (a running attempt is aborted). Large selections go in steps, with progress\n" +
			"on stderr; --dry-run only counts.",
		Example: "  tasklane tasks cancel 01KH62FBSQY4E00SB1AA863NEG\n" +
			"  tasklane tasks cancel --function thumbnail --batch import-2026-12-04 --dry-run\n" +
			"  tasklane tasks cancel --type com.example.report --created-before 2026-12-04T00:00:00Z",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				if !cancelSel.given() {
					return fmt.Errorf("give a task id, or a selector (--function, --type, --source, --subject-prefix, --batch, --created-after, --created-before)")
				}
				return cancelMatching(cmd, stdout, &cancelFlags, &cancelSel, dryRun)
			}
			if cancelSel.given() || dryRun {
				return fmt.Errorf("give a task id or a selector, not both")
			}
			cl, err := cancelFlags.client()
			if err != nil {
				return err
			}
			t, err := cl.CancelTask(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return cancelFlags.print(stdout, t, func(w io.Writer) { printTask(w, t) })
		},
	}
	cancelSel.register(cancel)
	cancel.Flags().BoolVar(&dryRun, "dry-run", false, "with a selector: count the matching tasks, cancel none")
	cancelFlags.register(cancel)
	cmd.AddCommand(get, list, cancel, newTaskLogsCommand(stdout))
	return cmd
}
