//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v2/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// resultsConfig has one tenant and one builtin function, for the tests that
// read result events the way a Watermill user does.
var resultsConfig = fmt.Sprintf(`
tenants:
  - id: acme
    api_keys: [%q]
functions:
  - name: work
    events: [com.example.work]
    endpoint: builtin:echo
`, acmeKey)

// TestIntegrationResultsStockRedisStreamSubscriber reads result events
// with watermill-redisstream's own Subscriber and its default
// unmarshaller: the result CloudEvent's attributes are in the message
// metadata (ce_*), its data, the task record, is the payload.
func TestIntegrationResultsStockRedisStreamSubscriber(t *testing.T) {
	e := startTasklane(t, config.BrokerDriverRedisStream, resultsConfig)
	opt, err := redis.ParseURL(redisURL(config.BrokerDriverRedisStream))
	require.NoError(t, err)
	group := testkit.UniqueName("watermill-results")
	// A new group starts at the stream's end ("$"): entries from before
	// it (earlier runs, other releases) are not its business.
	sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
		Client: redis.NewClient(opt), ConsumerGroup: group, OldestId: "$", DisableIndefiniteInitialBlock: true,
	}, watermill.NopLogger{})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, sub.Close())
		require.NoError(t, e.rdb.XGroupDestroy(context.Background(), e.resultsExchange(), group).Err())
	})
	msg := stockResult(t, e, sub)
	require.Equal(t, "acme.work.succeeded", msg.Metadata.Get("routing_key"))
}

// TestIntegrationResultsStockAMQPSubscriber is the same with
// watermill-amqp's Subscriber and its default marshaler, bound to the
// results topic exchange with "acme.#".
func TestIntegrationResultsStockAMQPSubscriber(t *testing.T) {
	e := startTasklane(t, config.BrokerDriverAMQP, resultsConfig)
	queue := testkit.UniqueName("watermill-results")
	cfg := wamqp.NewDurablePubSubConfig(testkit.AMQPURL(), wamqp.GenerateQueueNameConstant(queue))
	cfg.Exchange.Type = "topic" // as Tasklane declared it
	cfg.QueueBind.GenerateRoutingKey = func(string) string { return "acme.#" }
	sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, sub.Close())
		testkit.PurgeQueues(t, queue)
	})
	stockResult(t, e, sub)
}

// stockResult subscribes with sub to the results, submits a task to e's
// function work, and requires its result event as a Watermill message
// with the event's attributes in the metadata and the task record as the
// payload, which it returns.
func stockResult(t *testing.T, e *env, sub message.Subscriber) *message.Message {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	msgs, err := sub.Subscribe(ctx, e.resultsExchange())
	require.NoError(t, err)

	task := submitOK(t, e, binaryCall(testkit.UniqueName("ev"), nil))[0]
	msg := awaitResult(t, msgs, task.ID)

	md := msg.Metadata
	require.Equal(t, task.ID+".succeeded", msg.UUID, "the message UUID is the result event id")
	require.Equal(t, task.ID+".succeeded", md.Get("ce_id"))
	require.Equal(t, "1.0", md.Get("ce_specversion"))
	require.Equal(t, "io.tasklane.task.succeeded", md.Get("ce_type"))
	require.Equal(t, "tasklane/functions/work", md.Get("ce_source"))
	require.Equal(t, task.ID, md.Get("ce_subject"))
	require.Equal(t, "acme", md.Get("ce_tenantid"))
	require.Equal(t, "application/json", md.Get("ce_datacontenttype"))
	_, err = time.Parse(time.RFC3339Nano, md.Get("ce_time"))
	require.NoError(t, err, "ce_time %q", md.Get("ce_time"))

	var rec contracts.Task
	require.NoError(t, json.Unmarshal(msg.Payload, &rec), "payload: %s", msg.Payload)
	require.Equal(t, task.ID, rec.ID)
	require.Equal(t, "work", rec.Function)
	require.Equal(t, "acme", rec.Tenant)
	require.Equal(t, contracts.StateSucceeded, rec.State)
	return msg
}

// awaitResult acks messages until the one whose subject is taskID arrives,
// and returns it. The subscription closing (an entry its unmarshaller could
// not read ends a watermill-redisstream subscription) fails the test.
func awaitResult(t *testing.T, msgs <-chan *message.Message, taskID string) *message.Message {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case m, ok := <-msgs:
			require.True(t, ok, "the subscription closed before the result of %s arrived", taskID)
			m.Ack()
			if m.Metadata.Get("ce_subject") == taskID {
				return m
			}
		case <-deadline.C:
			t.Fatalf("no result event for task %s within 20s", taskID)
		}
	}
}

// TestIntegrationResultsExamples builds examples/results-<driver>, runs it
// against a Tasklane on that driver, submits a task and requires the
// example to print its result (outcome, task id, function), then to exit
// cleanly on SIGTERM.
func TestIntegrationResultsExamples(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			e := startTasklane(t, driver, resultsConfig)
			args := []string{"-tenant", "acme"}
			switch driver {
			case config.BrokerDriverAMQP:
				queue := testkit.UniqueName("results-example")
				t.Cleanup(func() { testkit.PurgeQueues(t, queue) })
				args = append(args, "-amqp", testkit.AMQPURL(), "-queue", queue, "-exchange", e.resultsExchange())
			case config.BrokerDriverRedisStream:
				group := testkit.UniqueName("results-example")
				t.Cleanup(func() {
					require.NoError(t, e.rdb.XGroupDestroy(context.Background(), e.resultsExchange(), group).Err())
				})
				args = append(args, "-redis", redisURL(driver), "-group", group, "-stream", e.resultsExchange())
			}
			ex := startExample(t, "results-"+driver, args...)
			testkit.Eventually(t, 20*time.Second, func() bool { return strings.Contains(ex.stderr.String(), "listening on") },
				"the example did not subscribe; stderr: %s", &ex.stderr)

			task := submitOK(t, e, binaryCall(testkit.UniqueName("ev"), nil))[0]
			want := fmt.Sprintf("succeeded task=%s function=work tenant=acme attempts=1\n", task.ID)
			testkit.Eventually(t, 20*time.Second, func() bool { return strings.Contains(ex.stdout.String(), want) },
				"the example did not print %q; stdout: %s; stderr: %s", want, &ex.stdout, &ex.stderr)

			require.NoError(t, ex.cmd.Process.Signal(syscall.SIGTERM))
			select {
			case <-ex.exited:
				require.NoError(t, ex.waitErr, "exit on SIGTERM; stderr: %s", &ex.stderr)
			case <-time.After(15 * time.Second):
				t.Fatalf("the example did not exit within 15s of SIGTERM; stderr: %s", &ex.stderr)
			}
		})
	}
}

// example is a running examples/<name> binary.
type example struct {
	cmd            *exec.Cmd
	stdout, stderr testkit.SyncBuffer
	// exited is closed when the process has exited, with waitErr set.
	exited  chan struct{}
	waitErr error
}

// startExample builds examples/<name> (proving it compiles) and starts it
// with args; it is killed when the test ends if it still runs.
func startExample(t *testing.T, name string, args ...string) *example {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, "github.com/tasklane/tasklane/examples/"+name).CombinedOutput()
	require.NoError(t, err, "building examples/%s: %s", name, out)
	ex := &example{cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	ex.cmd.Stdout, ex.cmd.Stderr = &ex.stdout, &ex.stderr
	require.NoError(t, ex.cmd.Start())
	go func() {
		ex.waitErr = ex.cmd.Wait()
		close(ex.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-ex.exited:
		default:
			_ = ex.cmd.Process.Kill()
			<-ex.exited
		}
	})
	return ex
}
