package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/sdk"
)

// envRunMain makes the test binary run Main with the arguments after "--",
// so a test can see the real exit code and streams of the command.
const envRunMain = "TASKLANE_CLI_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append([]string{"tasklane"}, os.Args[i+1:]...)
				break
			}
		}
		reg := sdk.NewRegistry()
		reg.Handle("resize", func(context.Context, sdk.Task) ([]byte, error) { return nil, nil })
		Main(reg)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runMain runs `tasklane args...` (Main, with the Go handler "resize"
// registered) in a child process and returns its exit code, stdout and
// stderr.
func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), envRunMain+"=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("running %v: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

// TestConfigValidateExitCodesAndWarnings: `tasklane config validate` exits
// 1 on what serve would only find later (a trigger whose events no function
// takes, a go: endpoint with no registered handler, a filter naming an
// unknown function), each with file:line:col; risky but legal settings are
// warnings on stderr and the exit code stays 0.
func TestConfigValidateExitCodesAndWarnings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, doc string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
		return path
	}

	bad := write("bad.yaml", `functions:
  - {name: report, events: [com.example.report.requested], endpoint: "go:resize"}
triggers:
  - {name: nightly, cron: {schedule: "@daily"}, event: {type: com.example.report.requsted, source: /cron}}
subscriptions:
  - {name: s, sink: "ftp://results.example.com/", filter: {functions: [reprot]}}
`)
	code, stdout, stderr := runMain(t, "config", "validate", bad)
	require.Equal(t, 1, code, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Empty(t, stdout)
	require.Equal(t, "tasklane: "+strings.Join([]string{
		bad + `:4:63: triggers[0].event.type: trigger "nightly" emits event type "com.example.report.requsted", which no function takes (did you mean "com.example.report.requested"?)`,
		bad + `:6:21: subscriptions[0].sink: unsupported URL scheme "ftp" (want http or https, e.g. http://127.0.0.1:9100/results)`,
		bad + `:6:72: subscriptions[0].filter.functions[0]: unknown function "reprot" (did you mean "report"?)`,
	}, "\n")+"\n", stderr)

	unregistered := write("unregistered.yaml", `tenants: [{id: acme, api_keys: [acme-dev-key]}]
server: {admin_keys: [admin-dev-key]}
functions:
  - {name: a, events: [a], endpoint: "go:resize"}
  - {name: b, events: [b], endpoint: "go:resise"}
`)
	code, stdout, stderr = runMain(t, "config", "validate", unregistered)
	require.Equal(t, 1, code, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Empty(t, stdout)
	require.Equal(t, "tasklane: "+unregistered+`:5:38: functions[1].endpoint: no Go handler registered as "resise" (did you mean "go:resize"? registered: resize)`+"\n", stderr)

	risky := write("risky.yaml", `functions:
  - {name: f, events: [com.example.signup], endpoint: "http://0.0.0.0:9000/f"}
triggers:
  - {name: signup, http: {path: signup}, event: {type: com.example.signup, source: /hooks/signup}}
`)
	code, stdout, stderr = runMain(t, "config", "validate", risky)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Equal(t, risky+": ok (0 tenants, 1 functions, 0 subscriptions, 1 triggers)\n", stdout)
	require.Equal(t, strings.Join([]string{
		"warning: " + risky + `:2:55: functions[0].endpoint: host 0.0.0.0 is a listen-all address, not a destination: requests reach this machine only, if at all (use 127.0.0.1 or the target's host name)`,
		"warning: " + risky + `:4:26: triggers[0].http: no signature: anyone who can reach /hooks/signup can submit events`,
		"warning: " + risky + `: tenants: no tenants configured: every API request is taken without authentication, as tenant "default", and the admin API is open (add tenants with api_keys before exposing 127.0.0.1:8080)`,
	}, "\n")+"\n", stderr)

	// The example config the README starts from is valid; its one warning
	// is on stderr.
	example := filepath.Join("..", "..", "..", "examples", "tasklane.yaml")
	code, stdout, stderr = runMain(t, "config", "validate", example)
	require.Equal(t, 0, code, "stdout: %s\nstderr: %s", stdout, stderr)
	require.Contains(t, stdout, example+": ok (")
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		require.True(t, line == "" || strings.HasPrefix(line, "warning: "+example+":"), "stderr line %q", line)
	}
}
