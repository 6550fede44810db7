//go:build integration

package integration

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// TestIntegrationRabbitMQRestart stops and restarts the RabbitMQ application
// (rabbitmqctl stop_app / start_app: connections drop, durable lanes and
// their persistent messages survive) while a 0-20 ms function is fed about
// 500 events/s through the gateway of a Tasklane child process (gateway,
// dispatcher, scheduler, notifier). Submissions during the outage may be
// answered 202 (the task is in the ledger's delay set, the scheduler
// publishes it later) or 503; refused batches are sent again with the same
// event ids. Pass: every 202-accepted task ends succeeded with one result,
// nothing lost, stuck, unexpected or succeeded twice.
//
// The amqp driver only: the redisstream driver does not use RabbitMQ. Its
// broker is Redis, and the same Redis is its ledger, so its broker restart
// is the redisstream row of TestIntegrationRedisRestart, which kills the
// Redis that holds both.
func TestIntegrationRabbitMQRestart(t *testing.T) {
	c := newChecker(t, 20*time.Millisecond)
	e := newStack(t, config.BrokerDriverAMQP, faultConfig(c))
	app := e.spawn(appRoles...)
	// The broker is the machine's: whatever happens, it runs again after.
	t.Cleanup(func() { startRabbitMQ(t) })

	l := startLoad(t, c, app.url(), "rmq", 50, 100*time.Millisecond, e.ledger())
	testkit.Eventually(t, 60*time.Second, func() bool { return c.finished() >= 2000 }, "2000 tasks done before the restart")

	faultStart := time.Now()
	rabbitmqctl(t, "stop_app")
	stopped := time.Now()
	time.Sleep(3 * time.Second) // hold the outage
	rabbitmqctl(t, "start_app")
	rabbitmqctl(t, "await_startup")
	faultEnd := time.Now()
	t.Logf("RabbitMQ down from %s (stop_app took %.1fs), started again after %.1fs", faultStart.Format("15:04:05.000"),
		stopped.Sub(faultStart).Seconds(), faultEnd.Sub(faultStart).Seconds())

	// Keep the work flowing after the restart, then check.
	time.Sleep(5 * time.Second) // load after the fault, not synchronisation
	faultRun{t: t, e: e, c: c, app: app, load: l, faultEnd: faultEnd}.finish(90 * time.Second)
	app.stop()
}

// rabbitmqctl runs one rabbitmqctl command against the local node.
func rabbitmqctl(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	require.NoError(t, err, "rabbitmqctl %s: %s", strings.Join(args, " "), out)
}

// startRabbitMQ makes sure the local RabbitMQ application runs (start_app is
// a no-op when it does) and accepts connections.
func startRabbitMQ(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for _, args := range [][]string{{"start_app"}, {"await_startup"}} {
		if out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput(); err != nil {
			t.Errorf("restoring RabbitMQ: rabbitmqctl %s: %v: %s", args[0], err, out)
		}
	}
}
