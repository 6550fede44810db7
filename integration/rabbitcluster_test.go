//go:build integration && rabbitcluster

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// TestRabbitMQClusterDrill starts a 3-node RabbitMQ cluster of its own on
// local ports (nodes tl1..tl3@localhost, never the machine's rabbit@ node),
// runs a Tasklane child process (gateway, dispatcher, scheduler, notifier)
// on it with quorum lanes and broker.url listing the three nodes, feeds it
// about 250 events/s, then kills (SIGKILL) the node the process has the
// most connections to, a quorum member of every lane; it starts that node
// again and kills the node the process then has its connections on. Each
// time the process must reconnect to the other nodes (publisher and lane
// consumers), and the two nodes left keep every quorum lane's majority.
// Pass: every 202-accepted
// task ends succeeded with one result, nothing lost, stuck, unexpected or
// succeeded twice. At the end the nodes are stopped by PID and their
// directory removed.
//
// Run with `make test/rabbitcluster` (build tags integration and
// rabbitcluster). TASKLANE_RABBITCLUSTER_PORT moves the nodes' AMQP ports
// (default 5681..5683; Erlang distribution on the port + 20000); the
// RabbitMQ scripts are found in TASKLANE_RABBITMQ_SBIN, else
// /usr/lib/rabbitmq/bin, else PATH.
func TestRabbitMQClusterDrill(t *testing.T) {
	begin := time.Now()
	cl := startRabbitCluster(t, 3)
	t.Logf("cluster of %d nodes up in %.1fs: %s", len(cl.nodes), time.Since(begin).Seconds(), strings.Join(cl.urls(), ","))

	c := newChecker(t, 20*time.Millisecond)
	e := newStackAt(t, config.BrokerDriverAMQP, stackAt{AppAMQP: strings.Join(cl.urls(), ",")},
		faultConfig(c)+"lanes: {queue_type: quorum, shared: 4, shard_size: 2}\n")
	app := e.spawn(appRoles...)
	l := startLoad(t, c, app.url(), "rmqc", 25, 100*time.Millisecond, e.ledger())
	testkit.Eventually(t, 120*time.Second, func() bool { return c.finished() >= 2000 }, "2000 tasks done before the fault")

	// Two faults: the node with the most of the process's connections is
	// killed; once the process is back on the others, the node is started
	// again (it rejoins, its quorum members catch up), and the node now
	// holding the process's connections is killed.
	var faultEnd time.Time
	for round := 1; round <= 2; round++ {
		if round == 2 {
			time.Sleep(10 * time.Second) // load between the faults, not synchronisation
			restarted := time.Now()
			for _, n := range cl.nodes {
				if n.killed {
					n.start(t)
					n.awaitStartup(t)
					n.killed = false
				}
			}
			cl.awaitRunning(t)
			t.Logf("restarted the killed node: the cluster runs 3 nodes again %.1fs later", time.Since(restarted).Seconds())
		}
		conns := cl.connections(t)
		victim := cl.busiest(conns)
		t.Logf("fault %d: connections by node %v; killing %s", round, conns, victim.name)
		faultStart := time.Now()
		victim.kill(t)
		// The fault ends when the process has its connections back, all
		// on the nodes left.
		survivor := cl.other(victim)
		testkit.Eventually(t, 60*time.Second, func() bool {
			now := survivor.connectionsByNode(t)
			return now[victim.name] == 0 && sum(now) >= sum(conns)
		}, "the process reconnected to the nodes left")
		faultEnd = time.Now()
		t.Logf("fault %d: killed %s at %s; the process had its %d connections on %v %.1fs later", round,
			victim.name, faultStart.Format("15:04:05.000"), sum(conns), survivor.connectionsByNode(t), faultEnd.Sub(faultStart).Seconds())
	}

	time.Sleep(10 * time.Second) // load after the fault, not synchronisation
	faultRun{t: t, e: e, c: c, app: app, load: l, faultEnd: faultEnd}.finish(120 * time.Second)
	app.stop()
	t.Logf("drill took %.1fs (cluster start %s)", time.Since(begin).Seconds(), cl.started.Sub(begin).Round(100*time.Millisecond))
}

// rabbitCluster is a RabbitMQ cluster the test started: each node a
// rabbitmq-server of its own with its own ports, database and logs under
// dir, and one Erlang cookie (dir/home/.erlang.cookie).
type rabbitCluster struct {
	dir, sbin string
	env       []string // for every node and CLI command: HOME (the cookie), no machine-wide env file
	nodes     []*rabbitNode
	started   time.Time
}

type rabbitNode struct {
	cl         *rabbitCluster
	name       string // tl1@localhost
	port, dist int
	cmd        *exec.Cmd
	pidFile    string
	logFile    string
	killed     bool
}

func (n *rabbitNode) url() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", n.port) }

// startRabbitCluster starts n nodes, joins the 2nd..nth to the first and
// waits until the cluster reports them all running. Cleanup stops every
// node by PID (SIGTERM, then SIGKILL) and removes the directory.
func startRabbitCluster(t *testing.T, n int) *rabbitCluster {
	t.Helper()
	base := 5681
	if s := os.Getenv("TASKLANE_RABBITCLUSTER_PORT"); s != "" {
		var err error
		base, err = strconv.Atoi(s)
		require.NoError(t, err, "TASKLANE_RABBITCLUSTER_PORT")
	}
	sbin := rabbitSbin(t)
	// Not t.TempDir: removed only once the nodes are stopped (cleanups run
	// last-registered first), and kept in the log on failure.
	dir, err := os.MkdirTemp("", "tl-rabbitcluster-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	home := filepath.Join(dir, "home")
	require.NoError(t, os.MkdirAll(home, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(home, ".erlang.cookie"), []byte("TASKLANERABBITCLUSTERDRILL"), 0o400))
	// No plugins (the management and prometheus listeners would take the
	// machine's ports), no machine-wide rabbitmq.conf or rabbitmq-env.conf
	// (they name the machine's node and listener).
	plugins := filepath.Join(dir, "enabled_plugins")
	require.NoError(t, os.WriteFile(plugins, []byte("[].\n"), 0o600))
	envFile := filepath.Join(dir, "rabbitmq-env.conf")
	require.NoError(t, os.WriteFile(envFile, nil, 0o600))
	conf := filepath.Join(dir, "rabbitmq.conf")
	require.NoError(t, os.WriteFile(conf, []byte("log.console = false\n"), 0o600))

	cl := &rabbitCluster{dir: dir, sbin: sbin, env: append(os.Environ(),
		"HOME="+home,
		"RABBITMQ_CONF_ENV_FILE="+envFile,
		"RABBITMQ_CONFIG_FILE="+conf,
		"RABBITMQ_ENABLED_PLUGINS_FILE="+plugins,
	)}
	for i := range n {
		node := &rabbitNode{cl: cl, name: fmt.Sprintf("tl%d@localhost", i+1), port: base + i, dist: base + i + 20000}
		for _, p := range []int{node.port, node.dist} {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				t.Fatalf("port %d for %s is taken (set TASKLANE_RABBITCLUSTER_PORT to move the cluster): %v", p, node.name, err)
			}
			_ = ln.Close()
		}
		cl.nodes = append(cl.nodes, node)
	}
	t.Cleanup(func() { cl.stop(t) })
	for _, node := range cl.nodes {
		node.start(t)
	}
	for _, node := range cl.nodes {
		node.awaitStartup(t)
	}
	for _, node := range cl.nodes[1:] {
		node.ctl(t, "stop_app")
		node.ctl(t, "join_cluster", cl.nodes[0].name)
		node.ctl(t, "start_app")
		node.awaitStartup(t)
	}
	cl.awaitRunning(t)
	cl.started = time.Now()
	return cl
}

// awaitRunning waits until a running node reports every node running in
// the cluster.
func (cl *rabbitCluster) awaitRunning(t *testing.T) {
	t.Helper()
	testkit.Eventually(t, 60*time.Second, func() bool {
		out, err := cl.other(nil).ctlOutput("cluster_status", "--formatter", "json")
		var status struct {
			Running []string `json:"running_nodes"`
		}
		return err == nil && json.Unmarshal([]byte(out), &status) == nil && len(status.Running) == len(cl.nodes)
	}, "every node running in the cluster")
}

// rabbitSbin is the directory of RabbitMQ's own scripts. Not
// /usr/sbin/rabbitmq-server: as root, that wrapper switches to the rabbitmq
// user and drops the environment that names the node.
func rabbitSbin(t *testing.T) string {
	t.Helper()
	for _, dir := range []string{os.Getenv("TASKLANE_RABBITMQ_SBIN"), "/usr/lib/rabbitmq/bin"} {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "rabbitmq-server")); err == nil {
			return dir
		}
	}
	p, err := exec.LookPath("rabbitmq-server")
	if err != nil {
		t.Fatalf("rabbitmq-server not found (set TASKLANE_RABBITMQ_SBIN to RabbitMQ's sbin directory): %v", err)
	}
	return filepath.Dir(p)
}

func (n *rabbitNode) start(t *testing.T) {
	t.Helper()
	cl := n.cl
	short := strings.TrimSuffix(n.name, "@localhost")
	n.pidFile = filepath.Join(cl.dir, short+".pid")
	n.logFile = filepath.Join(cl.dir, "log", n.name+".log")
	out, err := os.Create(filepath.Join(cl.dir, short+".out"))
	require.NoError(t, err)
	defer out.Close()
	n.cmd = exec.Command(filepath.Join(cl.sbin, "rabbitmq-server"))
	n.cmd.Env = append(append([]string(nil), cl.env...),
		"RABBITMQ_NODENAME="+n.name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(n.port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(n.dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(cl.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(cl.dir, "log"),
		"RABBITMQ_PID_FILE="+n.pidFile,
		`RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}`,
	)
	n.cmd.Stdout, n.cmd.Stderr = out, out
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, n.cmd.Start())
	go func() { _ = n.cmd.Wait() }()
}

// awaitStartup waits until the node runs RabbitMQ (await_startup fails at
// once while the node is not yet registered with epmd).
func (n *rabbitNode) awaitStartup(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(180 * time.Second)
	for {
		_, err := n.ctlOutput("await_startup", "--timeout", "60")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(n.logFile)
			t.Fatalf("%s did not start within 180s: %v\nlog tail:\n%s", n.name, err, tail(string(b), 30))
		}
		time.Sleep(time.Second) // polling a process that is booting
	}
}

func tail(s string, lines int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(ls[max(0, len(ls)-lines):], "\n")
}

// ctl runs rabbitmqctl against the node and fails the test if it fails.
func (n *rabbitNode) ctl(t *testing.T, args ...string) {
	t.Helper()
	out, err := n.ctlOutput(args...)
	require.NoError(t, err, "rabbitmqctl -n %s %s: %s", n.name, strings.Join(args, " "), out)
}

func (n *rabbitNode) ctlOutput(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(n.cl.sbin, "rabbitmqctl"), append([]string{"-n", n.name}, args...)...)
	cmd.Env = n.cl.env
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

// pid is the node's Erlang VM (from RABBITMQ_PID_FILE).
func (n *rabbitNode) pid() (int, error) {
	b, err := os.ReadFile(n.pidFile)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// kill ends the node's VM with SIGKILL: its sockets close at once, as when
// a machine's RabbitMQ crashes.
func (n *rabbitNode) kill(t *testing.T) {
	t.Helper()
	pid, err := n.pid()
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	n.killed = true
	testkit.Eventually(t, 30*time.Second, func() bool { return syscall.Kill(pid, 0) != nil }, "%s (pid %d) gone", n.name, pid)
}

// connectionsByNode counts the client connections of the cluster by node,
// as the node n reports them.
func (n *rabbitNode) connectionsByNode(t *testing.T) map[string]int {
	t.Helper()
	// The server port of each connection says its node.
	out, err := n.ctlOutput("list_connections", "--quiet", "--no-table-headers", "port")
	require.NoError(t, err, "list_connections: %s", out)
	got := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		port, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			continue
		}
		for _, node := range n.cl.nodes {
			if node.port == port {
				got[node.name]++
			}
		}
	}
	return got
}

func (cl *rabbitCluster) urls() []string {
	urls := make([]string, len(cl.nodes))
	for i, n := range cl.nodes {
		urls[i] = n.url()
	}
	return urls
}

func (cl *rabbitCluster) connections(t *testing.T) map[string]int {
	return cl.nodes[0].connectionsByNode(t)
}

// busiest is the node with the most connections (the first by name on a
// tie).
func (cl *rabbitCluster) busiest(conns map[string]int) *rabbitNode {
	names := make([]string, 0, len(conns))
	for name := range conns {
		names = append(names, name)
	}
	sort.Strings(names)
	best := cl.nodes[0]
	most := -1
	for _, name := range names {
		if conns[name] > most {
			for _, n := range cl.nodes {
				if n.name == name {
					best, most = n, conns[name]
				}
			}
		}
	}
	return best
}

// other is a running node other than n.
func (cl *rabbitCluster) other(n *rabbitNode) *rabbitNode {
	for _, o := range cl.nodes {
		if o != n && !o.killed {
			return o
		}
	}
	return nil
}

// stop ends every node by PID: SIGTERM (RabbitMQ shuts down cleanly), then
// SIGKILL for a node still there after 60s. On a failed test it logs the
// tail of each node's log first.
func (cl *rabbitCluster) stop(t *testing.T) {
	var errs []error
	for _, n := range cl.nodes {
		if t.Failed() {
			b, _ := os.ReadFile(n.logFile)
			t.Logf("%s log tail:\n%s", n.name, tail(string(b), 15))
		}
		pid, err := n.pid()
		if err != nil || n.killed {
			if n.cmd != nil && n.cmd.Process != nil {
				_ = n.cmd.Process.Kill() // the start script, if the VM never wrote its pid
			}
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(60 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond) // waiting for another process to exit
		}
		if syscall.Kill(pid, 0) == nil {
			errs = append(errs, fmt.Errorf("%s (pid %d) still running 60s after SIGTERM: killed", n.name, pid))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Log(err)
	}
}
