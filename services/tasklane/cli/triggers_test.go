package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/services/tasklane"
)

// TestTriggersList runs `tasklane triggers list` against a dev-mode app
// with a cron trigger and a webhook: the table shows both with their state
// and fires, and --json prints an answer that trigger-list.schema.json
// admits.
func TestTriggersList(t *testing.T) {
	cfg, err := config.Parse("dev.yaml", []byte(`server: {addr: "127.0.0.1:0"}
functions:
  - {name: echo, events: [com.example.tick, com.example.signup], endpoint: "builtin:echo"}
triggers:
  - name: tick
    cron: {schedule: "@every 1s"}
    event: {type: com.example.tick, source: /triggers/tick}
  - name: signup
    http: {path: signup, id_header: X-Delivery}
    event: {type: com.example.signup, source: /hooks/signup}
`))
	require.NoError(t, err)
	stop, err := tasklane.UseEmbeddedStore(cfg)
	require.NoError(t, err)
	t.Cleanup(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app, err := tasklane.Start(ctx, cfg, tasklane.Options{Logger: quietLogger()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, app.Shutdown(context.Background())) })

	for _, id := range []string{"d-1", "d-2"} {
		req, err := http.NewRequest(http.MethodPost, app.URL()+"/hooks/signup", strings.NewReader(`{}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Delivery", id)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
	}
	run := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		cmd := NewCommand(nil, &out, io.Discard)
		cmd.SetArgs(append([]string{"triggers", "list", "--server", app.URL()}, args...))
		require.NoError(t, cmd.Execute())
		return out.String()
	}
	// --json: what the server answered, which the schema admits.
	var raw string
	testkit.Eventually(t, 10*time.Second, func() bool {
		raw = run("--json")
		var l contracts.TriggerList
		require.NoError(t, json.Unmarshal([]byte(raw), &l), raw)
		return len(l.Triggers) == 2 && l.Triggers[0].Fires >= 1 && !l.Triggers[0].NextFire.IsZero()
	}, "the cron fires and shows its next fire")
	var doc any
	require.NoError(t, json.Unmarshal([]byte(raw), &doc))
	require.NoError(t, triggerListSchema(t).Validate(doc), raw)

	out := run()
	require.Regexp(t, `(?m)^tick\s+cron\s+@every 1s \(UTC\)\s+running\s+\d+\s+\S+ \(.* ago\)\s+\S+ \(.*\)`, out)
	require.Regexp(t, `(?m)^signup\s+http\s+/hooks/signup\s+running\s+2\s`, out)
}

// triggerListSchema compiles contracts/schema/trigger-list.schema.json.
func triggerListSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	const dir = "../../../contracts/schema"
	const id = "https://github.com/tasklane/tasklane/raw/main/contracts/schema/"
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		require.NoError(t, err)
		require.NoError(t, c.AddResource(id+filepath.Base(f), doc))
	}
	s, err := c.Compile(id + "trigger-list.schema.json")
	require.NoError(t, err)
	return s
}

// TestConfigValidateTriggers: `tasklane config validate` checks triggers
// (file:line:field, exit code) and warns of secrets not set here.
func TestConfigValidateTriggers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte(`triggers:
  - name: nightly
    cron: {schedule: "0 25 * * *"}
    event: {type: com.example.report, source: /triggers/nightly}
  - name: images
    objectstore: {bucket: images, mode: poll}
    event: {type: com.example.image}
`), 0o600))
	cmd := NewCommand(nil, io.Discard, io.Discard)
	cmd.SetArgs([]string{"config", "validate", bad})
	err := cmd.Execute()
	require.Error(t, err)
	require.Contains(t, err.Error(), bad+":3:22: triggers[0].cron.schedule: invalid schedule \"0 25 * * *\"")
	require.Contains(t, err.Error(), bad+":6:18: triggers[1].objectstore.endpoint: missing (required)")

	good := filepath.Join(dir, "good.yaml")
	require.NoError(t, os.WriteFile(good, []byte(`triggers:
  - name: signup
    http: {path: signup, signature: {secret_env: TASKLANE_TEST_UNSET_SECRET}}
    event: {type: com.example.signup, source: /hooks/signup}
functions: [{name: signup, events: [com.example.signup], endpoint: "builtin:noop"}]
`), 0o600))
	var out, errOut bytes.Buffer
	cmd = NewCommand(nil, &out, &errOut)
	cmd.SetArgs([]string{"config", "validate", good})
	require.NoError(t, cmd.Execute())
	require.Contains(t, errOut.String(), "warning: "+good+":3:50: triggers[0].http.signature.secret_env: environment variable TASKLANE_TEST_UNSET_SECRET is not set")
	require.Equal(t, good+": ok (0 tenants, 1 functions, 0 subscriptions, 1 triggers)\n", out.String())
}
