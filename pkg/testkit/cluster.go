package testkit

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterStartTimeout bounds starting a cluster: the nodes answering,
// `redis-cli --cluster create` and every node seeing cluster_state:ok.
const clusterStartTimeout = 30 * time.Second

// Cluster is a Redis Cluster of redis-server processes the test started on
// free local ports, in a temporary directory (one node per subdirectory,
// with its log). Every process is killed by its PID when the test ends,
// passed or failed.
type Cluster struct {
	t     testing.TB
	dir   string
	mu    sync.Mutex
	nodes []*ClusterNode // the cluster's members
	lone  []*ClusterNode // nodes of StartNode, not members
}

// ClusterNode is one redis-server of a Cluster.
type ClusterNode struct {
	// Addr is "127.0.0.1:<port>".
	Addr string
	// Dir holds the node's nodes.conf and redis.log.
	Dir string
	cmd *exec.Cmd
}

// StartCluster starts masters masters with replicas replicas each
// (redis-server --cluster-enabled yes, no persistence), joins them with
// `redis-cli --cluster create --cluster-replicas`, and returns once every
// node reports cluster_state:ok and every replica is attached. It needs
// redis-server and redis-cli (Redis 7) on the PATH; it fails the test when
// it cannot start the cluster, and skips under -short.
func StartCluster(t testing.TB, masters, replicas int) *Cluster {
	t.Helper()
	SkipShort(t, "starts a Redis Cluster of redis-server processes")
	if masters < 3 {
		t.Fatalf("StartCluster: a Redis Cluster needs at least 3 masters, got %d", masters)
	}
	c := &Cluster{t: t, dir: t.TempDir()}
	t.Cleanup(c.stop)
	ctx, cancel := context.WithTimeout(context.Background(), clusterStartTimeout)
	defer cancel()
	for range masters * (1 + replicas) {
		n, err := c.startListening(ctx)
		if err != nil {
			t.Fatalf("StartCluster: %v", err)
		}
		c.nodes = append(c.nodes, n)
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.nodes {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("StartCluster: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := c.waitReady(ctx, masters*(1+replicas)); err != nil {
		t.Fatalf("StartCluster: %v", err)
	}
	return c
}

// Nodes returns the cluster's nodes, in the order they were started (for
// a cluster of StartCluster, redis-cli made the first masters the masters).
func (c *Cluster) Nodes() []*ClusterNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*ClusterNode(nil), c.nodes...)
}

// Addrs returns every node's address.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes() {
		out = append(out, n.Addr)
	}
	return out
}

// URL is the cluster in go-redis's cluster URL form,
// "redis://h1:p1?addr=h2:p2&addr=h3:p3" (every node a seed).
func (c *Cluster) URL() string {
	addrs := c.Addrs()
	u := "redis://" + addrs[0]
	for i, a := range addrs[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + a
	}
	return u
}

// Client returns a cluster client of c, closed when the test ends.
func (c *Cluster) Client() *redis.ClusterClient {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	c.t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// StartNode starts one more cluster-enabled redis-server, not joined to
// the cluster (no slots: alone it reports cluster_state:fail, and it is
// not in Nodes, Addrs or URL). It listens when StartNode returns. It is
// killed when the test ends.
func (c *Cluster) StartNode() (*ClusterNode, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clusterStartTimeout)
	defer cancel()
	n, err := c.startListening(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.lone = append(c.lone, n)
	c.mu.Unlock()
	return n, nil
}

// nodeStartAttempts bounds the ports a node is started on: freePortPair's
// ports may be taken by another process (tests of other packages start
// nodes at the same time) before redis-server binds them.
const nodeStartAttempts = 5

// startListening starts a node and returns once it answers as itself (its
// INFO names its process); a node that does not (it could not bind its
// ports: another process took them) is killed and started again on other
// ports.
func (c *Cluster) startListening(ctx context.Context) (*ClusterNode, error) {
	var last error
	for range nodeStartAttempts {
		n, err := c.startNode()
		if err != nil {
			return nil, err
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = waitOwn(actx, n)
		cancel()
		if err == nil {
			return n, nil
		}
		c.Kill(n)
		last = fmt.Errorf("%s does not answer (log %s): %w", n.Addr, filepath.Join(n.Dir, "redis.log"), err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// waitOwn waits until n answers PING and its INFO names n's process, not
// another that holds the port.
func waitOwn(ctx context.Context, n *ClusterNode) error {
	if err := waitPing(ctx, n.Addr); err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
	defer rdb.Close()
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return err
	}
	if want := "process_id:" + strconv.Itoa(n.cmd.Process.Pid); !strings.Contains(info, want+"\r\n") && !strings.Contains(info, want+"\n") {
		return fmt.Errorf("another process answers on %s", n.Addr)
	}
	return nil
}

func (c *Cluster) startNode() (*ClusterNode, error) {
	port, busPort, err := freePortPair()
	if err != nil {
		return nil, err
	}
	n := &ClusterNode{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: filepath.Join(c.dir, strconv.Itoa(port))}
	if err := os.MkdirAll(n.Dir, 0o700); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(n.Dir, "redis.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	n.cmd = exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(busPort),
		"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
		// A replica's first sync starts at once, not after the default 5 s.
		"--repl-diskless-sync-delay", "0",
		"--dir", n.Dir, "--save", "", "--appendonly", "no", "--daemonize", "no")
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C of go test does not reach it before
	// the cleanup does.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting redis-server: %w", err)
	}
	return n, nil
}

// Kill stops node n with SIGKILL (a crash: its replica takes over after
// the node timeout) and waits for the process to end.
func (c *Cluster) Kill(n *ClusterNode) {
	if n.cmd.ProcessState != nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	_ = n.cmd.Wait()
}

// KillSynced is Kill for a master after its replicas hold every write it
// acknowledged: it pauses the master's writes (CLIENT PAUSE WRITE, so
// writes sent meanwhile wait unanswered and fail with the kill), waits
// until each replica's replication offset reaches the master's, then
// kills it. Redis replicates asynchronously, so a plain Kill may lose the
// last acknowledged writes (the window decision 0017 documents and
// redis.wait_replicas closes); a test that checks "nothing accepted is
// lost" across a failover kills with KillSynced, so that what it measures
// is Tasklane's handling of the failover, not that window.
func (c *Cluster) KillSynced(n *ClusterNode) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
	defer rdb.Close()
	if err := rdb.Do(ctx, "CLIENT", "PAUSE", 10000, "WRITE").Err(); err != nil {
		return fmt.Errorf("pausing writes on %s: %w", n.Addr, err)
	}
	for {
		info, err := rdb.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("reading %s's replication: %w", n.Addr, err)
		}
		if replicasCaughtUp(info) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s's replicas did not catch up: %s", n.Addr, info)
		case <-time.After(10 * time.Millisecond):
		}
	}
	c.Kill(n)
	return nil
}

// replicasCaughtUp reports whether INFO replication of a master shows at
// least one replica and every replica at the master's offset.
func replicasCaughtUp(info string) bool {
	var master int64 = -1
	var offsets []int64
	for line := range strings.SplitSeq(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "master_repl_offset:"); ok {
			master, _ = strconv.ParseInt(v, 10, 64)
		}
		if strings.HasPrefix(line, "slave") && strings.Contains(line, "offset=") {
			for f := range strings.SplitSeq(line[strings.Index(line, ":")+1:], ",") {
				if v, ok := strings.CutPrefix(f, "offset="); ok {
					o, _ := strconv.ParseInt(v, 10, 64)
					offsets = append(offsets, o)
				}
			}
		}
	}
	if master < 0 || len(offsets) == 0 {
		return false
	}
	for _, o := range offsets {
		if o < master {
			return false
		}
	}
	return true
}

// stop kills every node by its PID.
func (c *Cluster) stop() {
	c.mu.Lock()
	all := append(append([]*ClusterNode(nil), c.nodes...), c.lone...)
	c.mu.Unlock()
	for _, n := range all {
		c.Kill(n)
	}
}

// waitReady waits until every node reports cluster_state:ok and knows all
// want nodes, and every replica's link to its master is up.
func (c *Cluster) waitReady(ctx context.Context, want int) error {
	var last string
	for {
		ok := true
		for _, n := range c.Nodes() {
			state, err := nodeState(ctx, n.Addr)
			if err != nil {
				ok, last = false, fmt.Sprintf("%s: %v", n.Addr, err)
				break
			}
			if state["cluster_state"] != "ok" || state["cluster_known_nodes"] != strconv.Itoa(want) ||
				(state["role"] == "slave" && state["master_link_status"] != "up") {
				ok = false
				last = fmt.Sprintf("%s: cluster_state:%s, known nodes %s of %d, role %s, master link %q",
					n.Addr, state["cluster_state"], state["cluster_known_nodes"], want, state["role"], state["master_link_status"])
				break
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready in %s: %s", clusterStartTimeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// nodeState is a node's CLUSTER INFO and INFO replication fields.
func nodeState(ctx context.Context, addr string) (map[string]string, error) {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	info, err := rdb.ClusterInfo(ctx).Result()
	if err != nil {
		return nil, err
	}
	repl, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(info+"\n"+repl, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// waitPing waits until addr accepts connections (dialled directly: the
// go-redis pool logs every dial it retries) and answers PING.
func waitPing(ctx context.Context, addr string) error {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = conn.Close()
			rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
			err = rdb.Ping(ctx).Err()
			_ = rdb.Close()
		}
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freePortPair returns a free port for a node's clients and one for its
// cluster bus. Another process may take them before redis-server binds
// them; then startListening starts the node again on other ports.
func freePortPair() (int, int, error) {
	var ports [2]int
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, fmt.Errorf("finding a free port: %w", err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		defer ln.Close()
	}
	return ports[0], ports[1], nil
}
