// Command results-redisstream prints Tasklane's result events, read with
// watermill-redisstream's stock Subscriber and its default unmarshaller
// from the results stream of a Tasklane whose broker driver is
// redisstream. Each result is a Watermill message: the result CloudEvent's
// attributes are in the metadata (ce_id, ce_type, ce_source, ce_subject,
// ce_time, ce_tenantid, ...; routing_key is <tenant>.<function>.<outcome>)
// and its data, the task record as JSON, is the payload.
//
//	go run ./examples/results-redisstream -redis redis://127.0.0.1:6379/0 -tenant acme
//
// It prints one line per result, "<outcome> task=<id> function=<name>
// tenant=<tenant> attempts=<n>", and acknowledges it. The consumer group
// keeps its place across restarts; a new group starts at results published
// from then on.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	neturl "net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "results-redisstream:", err)
		os.Exit(1)
	}
}

// run subscribes and prints results to stdout until ctx ends; its own
// status lines and Watermill's warnings go to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("results-redisstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("redis", envOr("TASKLANE_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL of Tasklane's redisstream broker (env TASKLANE_REDIS_URL)")
	tenant := fs.String("tenant", os.Getenv("TASKLANE_TENANT"), "print only this tenant's results; empty: all (env TASKLANE_TENANT)")
	stream := fs.String("stream", "tasklane.results", "results stream, \"<broker.prefix>.results\"")
	group := fs.String("group", "tasklane-results-example", "consumer group")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := neturl.Parse(*url); err != nil {
		return errors.New("-redis: not a URL") // the parse error would quote it, password included
	}
	opt, err := redis.ParseURL(*url)
	if err != nil {
		return fmt.Errorf("-redis: %w", err)
	}
	logger := watermill.NewSlogLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client:        redis.NewClient(opt), // closed by sub.Close
		ConsumerGroup: *group,
		// A new group starts at the end of the stream, not at its first
		// entry ("0", the default), which may be up to 100,000 results
		// old (and, on a stream an older Tasklane wrote, in a format the
		// default unmarshaller does not read).
		OldestId: "$",
		// The first read blocks for BlockTime, not forever, so Close
		// does not wait on an idle stream.
		DisableIndefiniteInitialBlock: true,
	}, logger)
	if err != nil {
		return err
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, *stream)
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", *stream, err)
	}
	fmt.Fprintf(stderr, "listening on stream %s, consumer group %s\n", *stream, *group)
	for msg := range msgs {
		if *tenant == "" || msg.Metadata.Get("ce_tenantid") == *tenant {
			fmt.Fprintln(stdout, describe(msg))
		}
		msg.Ack()
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("the subscription ended (see the log above)")
}

// taskRecord is the part of Tasklane's task record (the payload) printed.
type taskRecord struct {
	ID       string `json:"id"`
	Tenant   string `json:"tenant"`
	Function string `json:"function"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error"`
}

// describe is one line about a result message: the outcome from the
// event type, the rest from the task record.
func describe(msg *message.Message) string {
	outcome := strings.TrimPrefix(msg.Metadata.Get("ce_type"), "io.tasklane.task.")
	var t taskRecord
	if err := json.Unmarshal(msg.Payload, &t); err != nil {
		return fmt.Sprintf("%s task=%s (payload is not a task record: %v)", outcome, msg.Metadata.Get("ce_subject"), err)
	}
	line := fmt.Sprintf("%s task=%s function=%s tenant=%s attempts=%d", outcome, t.ID, t.Function, t.Tenant, t.Attempts)
	if t.Error != "" {
		line += fmt.Sprintf(" error=%q", t.Error)
	}
	return line
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
