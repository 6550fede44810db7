package tasklane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
)

func TestConnectCause(t *testing.T) {
	t.Parallel()
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("connecting to RabbitMQ: %w", fmt.Errorf("cannot connect to AMQP: %w", refused)), "connection refused"},
		{refused, "connection refused"},
		{fmt.Errorf("cannot connect to AMQP: %w", amqp.ErrVhost), "access refused to the vhost (it does not exist, or the user has no permissions on it)"},
		{fmt.Errorf("cannot connect to AMQP: %w", amqp.ErrCredentials), "authentication failed: user or password refused"},
		{&amqp.Error{Code: amqp.NotAllowed, Reason: "NOT_ALLOWED - access to vhost 'x' refused for user 'guest'"},
			"access refused to vhost: NOT_ALLOWED - access to vhost 'x' refused for user 'guest'"},
		{errors.New("WRONGPASS invalid username-password pair or user is disabled."),
			"authentication failed: WRONGPASS invalid username-password pair or user is disabled."},
		{&net.DNSError{Err: "no such host", Name: "rabbit.invalid", IsNotFound: true}, "host not found: rabbit.invalid"},
		{fmt.Errorf("ping: %w", context.DeadlineExceeded), "timed out"},
		{errors.New("something else"), "something else"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, connectCause(tt.err), "%v", tt.err)
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	require.Equal(t, "amqp://guest:xxxxx@rabbit:5672/vh", redactURL("amqp://guest:s3cret@rabbit:5672/vh"))
	require.Equal(t, "redis://:xxxxx@127.0.0.1:6379/0", redactURL("redis://:s3cret@127.0.0.1:6379/0"))
	require.Equal(t, "redis://127.0.0.1:6379/0", redactURL("redis://127.0.0.1:6379/0"))
	require.Equal(t, "tasklane-vh", amqpVhost("amqp://guest:guest@127.0.0.1:5672/tasklane-vh"))
}

// A broker or Redis URL that does not parse is a config error: Launch
// returns it (no retry fixes it) without the URL's password.
func TestLaunchRefusesAURLThatDoesNotParse(t *testing.T) {
	t.Parallel()
	for name, edit := range map[string]func(*config.Config){
		"broker": func(c *config.Config) { c.Broker.URL = "amqp://guest:s3cret-pw@127.0.0.1:bad/" },
		"redis":  func(c *config.Config) { c.Redis.URL = "redis://:s3cret-pw@127.0.0.1:bad/0" },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg := DevConfig()
			cfg.Server.Addr = "127.0.0.1:0"
			cfg.Redis.URL = "redis://" + closedAddr(t) + "/0"
			cfg.Broker.URL = "amqp://guest:guest@" + closedAddr(t) + "/"
			edit(cfg)
			app, err := Launch(context.Background(), cfg, Options{Logger: quietLogger()})
			if err == nil {
				_ = app.Shutdown(context.Background())
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), name)
			require.NotContains(t, err.Error(), "s3cret-pw")
		})
	}
}

// When reading the routing table fails (Redis), the retry line names Redis
// and its URL, not the broker.
func TestLaneRetryNamesTheServiceThatFailed(t *testing.T) {
	mr := miniredis.RunT(t)
	cfg := DevConfig()
	cfg.Server.Addr = "127.0.0.1:0"
	cfg.Redis.URL = "redis://" + mr.Addr() + "/0"
	cfg.Broker.URL = testkit.RequireAMQP(t)
	cfg.Lanes.Shared, cfg.Lanes.ShardSize = 1, 1 // declares one existing shared lane, nothing new
	cfg.Ledger.KeyPrefix = testkit.UniqueName("tl-lanes-retry")
	// A routing table key of the wrong type: HGETALL fails until it goes.
	require.NoError(t, mr.Set(cfg.Ledger.KeyPrefix+":routing", "not a hash"))
	roles, err := ParseRoles(RoleGateway)
	require.NoError(t, err)
	var logs testkit.SyncBuffer
	app, err := Launch(context.Background(), cfg, Options{Roles: roles, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, app.Shutdown(context.Background())) })
	var line map[string]any
	testkit.Eventually(t, 20*time.Second, func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["check"] == statusLanes && m["msg"] != "connected" {
				line = m
				return true
			}
		}
		return false
	}, "a retry line for the lanes check; log:\n%s", &logs)
	require.Equal(t, "redis", line["service"], "%v", line)
	require.Equal(t, cfg.Redis.URL, line["url"], "%v", line)
	require.Contains(t, line["cause"], "WRONGTYPE", "%v", line)

	// Once the key is fixed, the app becomes ready by itself.
	mr.Del(cfg.Ledger.KeyPrefix + ":routing")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, app.WaitReady(ctx))
}
