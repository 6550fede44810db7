//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/testkit"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// tasklaneBinary builds cmd/tasklane once per test run.
func tasklaneBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "tasklane-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "tasklane")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/tasklane/tasklane/cmd/tasklane").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building tasklane: %v: %s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

// proc is a Tasklane running as a separate process, so a test can kill it.
type proc struct {
	t       *testing.T
	bin     string
	config  string
	roles   string
	logPath string
	cmd     *exec.Cmd
	starts  int
	noAuth  bool // the config has no tenants: pass --insecure-no-auth
}

// spawn writes the stack's config to a file and starts `tasklane serve`
// with roles in a child process.
func (e *env) spawn(roles ...string) *proc {
	t := e.t
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "tasklane.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(e.doc), 0o600))
	p := &proc{t: t, bin: tasklaneBinary(t), config: cfgPath, roles: strings.Join(roles, ","), logPath: filepath.Join(dir, "tasklane.log"),
		noAuth: len(e.cfg.Tenants) == 0}
	p.start()
	t.Cleanup(func() {
		if p.running() {
			p.kill()
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("last lines of %s (%s):\n%s", p.logPath, p.roles, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return p
}

func (p *proc) running() bool { return p.cmd != nil && p.cmd.ProcessState == nil }

// start launches the process and waits until it has subscribed its consumers.
func (p *proc) start() {
	p.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(p.t, err)
	defer logf.Close()
	p.starts++
	fmt.Fprintf(logf, "--- start %d\n", p.starts)
	p.cmd = exec.Command(p.bin, serveArgs(p.noAuth, "--config", p.config, "--roles", p.roles, "--log-format", "json")...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(p.t, p.cmd.Start())
	want := fmt.Sprintf("--- start %d", p.starts)
	testkit.Eventually(p.t, 60*time.Second, func() bool {
		b, _ := os.ReadFile(p.logPath)
		s := string(b)
		i := strings.LastIndex(s, want)
		return i >= 0 && strings.Contains(s[i:], "tasklane started")
	}, "tasklane (%s) started; log: %s", p.roles, p.logPath)
}

// serveArgs is the command line of `tasklane serve` with args, and
// --insecure-no-auth when noAuth (a config without tenants).
func serveArgs(noAuth bool, args ...string) []string {
	out := append([]string{"serve"}, args...)
	if noAuth {
		out = append(out, "--insecure-no-auth")
	}
	return out
}

// kill sends SIGKILL: no drain, no acks, no lease release.
func (p *proc) kill() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGKILL))
	_ = p.cmd.Wait()
}

// stop sends SIGTERM and waits for the drain.
func (p *proc) stop() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(p.t, p.cmd.Wait())
}
