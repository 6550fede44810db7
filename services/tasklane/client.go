package tasklane

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/spf13/cobra"
)

// clientFlags are the flags of every command that talks to a server.
type clientFlags struct {
	server string
	key    string
}

func (c *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.server, "server", envOr("TASKLANE_SERVER", "http://127.0.0.1:8080"), "server URL (env TASKLANE_SERVER)")
	cmd.Flags().StringVar(&c.key, "key", os.Getenv("TASKLANE_KEY"), "API key (env TASKLANE_KEY)")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (c *clientFlags) do(method, path string, header http.Header, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, c.server+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	cl := &http.Client{Timeout: 30 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// printAnswer pretty-prints a JSON answer; a non-2xx answer is an error.
func printAnswer(w io.Writer, status int, body []byte) error {
	var buf bytes.Buffer
	if json.Indent(&buf, body, "", "  ") == nil {
		body = buf.Bytes()
	}
	if status/100 != 2 {
		return fmt.Errorf("server answered %d: %s", status, bytes.TrimSpace(body))
	}
	_, err := fmt.Fprintln(w, string(body))
	return err
}

func newSubmitCommand(stdout io.Writer) *cobra.Command {
	var c clientFlags
	var typ, source, id, subject, data, dataFile, contentType string
	var priority, delay int
	cmd := &cobra.Command{
		Use:   "submit --type TYPE [--source SRC] [--data JSON]",
		Short: "Submit one CloudEvent (binary mode)",
		Args:  cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if typ == "" {
				return fmt.Errorf("--type is required")
			}
			body := []byte(data)
			if dataFile != "" {
				b, err := os.ReadFile(dataFile)
				if err != nil {
					return err
				}
				body = b
			}
			if id == "" {
				id = ulid.Make().String()
			}
			h := http.Header{}
			h.Set("Ce-Specversion", "1.0")
			h.Set("Ce-Id", id)
			h.Set("Ce-Source", source)
			h.Set("Ce-Type", typ)
			h.Set("Content-Type", contentType)
			if subject != "" {
				h.Set("Ce-Subject", subject)
			}
			if priority > 0 {
				h.Set("Ce-Priority", strconv.Itoa(priority))
			}
			if delay > 0 {
				h.Set("Ce-Delay", strconv.Itoa(delay))
			}
			status, b, err := c.do(http.MethodPost, "/v1/events", h, body)
			if err != nil {
				return err
			}
			return printAnswer(stdout, status, b)
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
		RunE: func(_ *cobra.Command, args []string) error {
			status, b, err := getFlags.do(http.MethodGet, "/v1/tasks/"+url.PathEscape(args[0]), nil, nil)
			if err != nil {
				return err
			}
			return printAnswer(stdout, status, b)
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
		RunE: func(_ *cobra.Command, _ []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"state": state, "function": function, "cursor": cursor} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			status, b, err := listFlags.do(http.MethodGet, "/v1/tasks?"+q.Encode(), nil, nil)
			if err != nil {
				return err
			}
			return printAnswer(stdout, status, b)
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
		RunE: func(_ *cobra.Command, args []string) error {
			status, b, err := cancelFlags.do(http.MethodDelete, "/v1/tasks/"+url.PathEscape(args[0]), nil, nil)
			if err != nil {
				return err
			}
			return printAnswer(stdout, status, b)
		},
	}
	cancelFlags.register(cancel)
	cmd.AddCommand(get, list, cancel)
	return cmd
}
