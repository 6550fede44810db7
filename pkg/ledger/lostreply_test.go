package ledger_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// replyCutter is a TCP proxy in front of Redis. Armed, it forwards the next
// client write that holds an EVALSHA and then cuts that connection before
// any reply comes back: the script ran, its answer is lost.
type replyCutter struct {
	ln    net.Listener
	to    string
	armed atomic.Bool
}

func newReplyCutter(t *testing.T, to string) *replyCutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &replyCutter{ln: ln, to: to}
	t.Cleanup(func() { _ = ln.Close() })
	go p.serve()
	return p
}

func (p *replyCutter) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.pipe(c)
	}
}

func (p *replyCutter) pipe(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", p.to)
	if err != nil {
		return
	}
	defer up.Close()
	cut := make(chan struct{})
	var dropping atomic.Bool
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			last := bytes.Contains(bytes.ToLower(buf[:n]), []byte("evalsha")) && p.armed.CompareAndSwap(true, false)
			if last {
				dropping.Store(true) // no reply from here on reaches the client
			}
			_, _ = up.Write(buf[:n])
			if last {
				// Let Redis run it, then drop the connection unanswered.
				time.Sleep(50 * time.Millisecond)
				close(cut)
				return
			}
		}
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			if dropping.Load() {
				continue
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	select {
	case <-cut:
	case <-done:
	}
	_ = c.Close()
	_ = up.Close()
	_, _ = io.Copy(io.Discard, up)
}

// TestLostReplyIsNotRunAgain loses the reply of a claim (batched) and of
// a take of due tasks (a single call): each ran, and
// the ledger must report the outcome as unknown (an error) instead of
// sending the script again, which would answer "busy" to the very caller
// that holds the task.
func TestLostReplyIsNotRunAgain(t *testing.T) {
	t.Parallel()
	direct, prefix := testkit.Redis(t)
	proxy := newReplyCutter(t, direct.Options().Addr)
	opt := *direct.Options()
	opt.Addr = proxy.ln.Addr().String()
	rdb := redis.NewClient(&opt)
	t.Cleanup(func() { _ = rdb.Close() })
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	l := ledger.New(ledger.Config{Redis: rdb, Prefix: prefix, Partitions: testkit.LedgerPartitions(), PublishGuard: 30 * time.Second, Now: clock})
	ctx := context.Background()
	require.NoError(t, l.LoadScripts(ctx))
	c, err := l.Create(ctx, []ledger.EventTasks{event("acme", "e1", "f1"), event("acme", "e2", "f1")})
	require.NoError(t, err)
	id := c[0].Tasks[0].ID

	// Batched (claim).
	proxy.armed.Store(true)
	cl, err := l.Claim(ctx, ledger.ClaimRequest{Tenant: "acme", ID: id, Function: "f1", Owner: "d1", Lease: 10 * time.Second})
	require.Error(t, err, "a lost reply is an unknown outcome, not a second run (got %+v)", cl)
	require.False(t, proxy.armed.Load(), "the proxy cut a reply")

	task, err := l.Get(ctx, "acme", id)
	require.NoError(t, err)
	require.Equal(t, contracts.StateRunning, task.State, "the claim did run once")
	require.Equal(t, 1, task.Attempts)

	// A single call (the scheduler's take of due tasks): run again, it
	// would find the due task already taken and answer "nothing due".
	other := c[1].Tasks[0].ID
	advance(time.Minute) // past the second task's publish guard
	proxy.armed.Store(true)
	due, err := l.TakeDue(ctx, 10, time.Minute)
	require.Error(t, err, "a lost reply is an unknown outcome (got %+v)", due)
	require.False(t, proxy.armed.Load(), "the proxy cut a reply")
	advance(2 * time.Minute) // past the re-guard the lost take wrote
	due, err = l.TakeDue(ctx, 10, time.Minute)
	require.NoError(t, err)
	var ids []string
	for _, d := range due {
		ids = append(ids, d.ID)
	}
	require.Contains(t, ids, other, "the task taken by the lost call comes due again")
}
