package testkit

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// A node is taken as started only when the server on its port is its own
// process: a port another process took first (tests of other packages
// start nodes at the same time) makes startListening try other ports.
func TestWaitOwnTellsAnotherProcess(t *testing.T) {
	SkipShort(t, "starts redis-server")
	c := &Cluster{t: t, dir: t.TempDir()}
	t.Cleanup(c.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := c.startListening(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitOwn(ctx, n); err != nil {
		t.Fatalf("its own node: %v", err)
	}
	// Another process said to be on n's port.
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	if err := waitOwn(ctx, &ClusterNode{Addr: n.Addr, Dir: n.Dir, cmd: other}); err == nil {
		t.Fatal("a server of another process was taken as the node")
	}
}
