// Command results-amqp prints Tasklane's result events, received with
// watermill-amqp's stock Subscriber (v2, default marshaler) from the
// tasklane.results topic exchange of a Tasklane whose broker driver is
// amqp (-exchange "<prefix>.results" for a broker.prefix other than the
// default "tasklane"). Each result is a Watermill message: the result CloudEvent's
// attributes are in the metadata (ce_id, ce_type, ce_source, ce_subject,
// ce_time, ce_tenantid, ...) and its data, the task record as JSON, is the
// payload. Routing keys are <tenant>.<function>.<outcome>.
//
//	go run ./examples/results-amqp -amqp amqp://guest:guest@127.0.0.1:5672/ -tenant acme
//
// It binds a durable queue (-queue) to the exchange with "<tenant>.#" (or
// "#" for every tenant), so results published while it is stopped wait
// for it, and prints one line per result, "<outcome> task=<id>
// function=<name> tenant=<tenant> attempts=<n>", then acknowledges it.
// Delete the queue when you are done with it.
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
	"github.com/ThreeDotsLabs/watermill-amqp/v2/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
)

// resultsExchange is Tasklane's results exchange under the default
// broker.prefix: durable, type topic.
const resultsExchange = "tasklane.results"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "results-amqp:", err)
		os.Exit(1)
	}
}

// run subscribes and prints results to stdout until ctx ends; its own
// status lines and Watermill's warnings go to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("results-amqp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("amqp", envOr("TASKLANE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ URL of Tasklane's amqp broker (env TASKLANE_AMQP_URL)")
	tenant := fs.String("tenant", os.Getenv("TASKLANE_TENANT"), "receive only this tenant's results; empty: all (env TASKLANE_TENANT)")
	queue := fs.String("queue", "tasklane.results.example", "durable queue bound to the results exchange")
	exchange := fs.String("exchange", resultsExchange, "Tasklane's results exchange, \"<broker.prefix>.results\"")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := neturl.Parse(*url); err != nil {
		return errors.New("-amqp: not a URL") // the parse error would quote it, password included
	}
	bindingKey := "#"
	if *tenant != "" {
		if strings.ContainsAny(*tenant, ".*#") {
			return fmt.Errorf("-tenant %q: a tenant id has no '.', '*' or '#'", *tenant)
		}
		bindingKey = *tenant + ".#"
	}

	cfg := amqp.NewDurablePubSubConfig(*url, amqp.GenerateQueueNameConstant(*queue))
	// The exchange exists already, declared by Tasklane as a durable topic
	// exchange; declaring it again must use the same type and flags
	// (NewDurablePubSubConfig's fanout would be refused:
	// PRECONDITION_FAILED).
	cfg.Exchange.Type = "topic"
	// watermill-amqp v2 calls this with the queue name, not the topic:
	// it returns the binding key whatever it is given.
	cfg.QueueBind.GenerateRoutingKey = func(string) string { return bindingKey }
	logger := watermill.NewSlogLogger(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	sub, err := amqp.NewSubscriber(cfg, logger)
	if err != nil {
		return fmt.Errorf("connecting to RabbitMQ: %s", redact(err, *url))
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, *exchange)
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", *exchange, err)
	}
	fmt.Fprintf(stderr, "listening on queue %s, bound to %s with %q\n", *queue, *exchange, bindingKey)
	for msg := range msgs {
		fmt.Fprintln(stdout, describe(msg))
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

// redact is err's text with the password of rawURL, which a URL parse
// error quotes, masked.
func redact(err error, rawURL string) string {
	msg := err.Error()
	if u, perr := neturl.Parse(rawURL); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
