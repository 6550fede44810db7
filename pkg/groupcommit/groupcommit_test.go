package groupcommit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type call struct {
	n     int
	reply int
}

// gate is a send function that blocks until released, so that a test can
// hold batches on the wire.
type gate struct {
	mu      sync.Mutex
	batches [][]int
	release chan struct{}
	entered chan struct{}
}

func newGate() *gate {
	return &gate{release: make(chan struct{}), entered: make(chan struct{}, 100)}
}

func (g *gate) send(calls []*call) {
	g.entered <- struct{}{}
	<-g.release
	ns := make([]int, len(calls))
	for i, c := range calls {
		c.reply = c.n * 10
		ns[i] = c.n
	}
	g.mu.Lock()
	g.batches = append(g.batches, ns)
	g.mu.Unlock()
}

func TestCallsArrivingMeanwhileShareABatch(t *testing.T) {
	g := newGate()
	b := New(Limits{Flushers: 1}, nil, g.send)
	ctx := context.Background()
	first := &call{n: 1}
	firstDone := make(chan error, 1)
	go func() { firstDone <- b.Do(ctx, first) }()
	<-g.entered // the first batch is on the wire

	var wg sync.WaitGroup
	calls := make([]*call, 20)
	for i := range calls {
		calls[i] = &call{n: i + 2}
		wg.Go(func() { require.NoError(t, b.Do(ctx, calls[i])) })
	}
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue) == len(calls)
	}, 5*time.Second, time.Millisecond, "the 20 calls queue behind the batch in flight")
	close(g.release)
	require.NoError(t, <-firstDone)
	wg.Wait()

	require.Equal(t, 10, first.reply)
	for _, c := range calls {
		require.Equal(t, c.n*10, c.reply)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	require.Len(t, g.batches, 2, "one batch for the first call, one for the 20 that came meanwhile")
	require.Len(t, g.batches[1], 20)
}

func TestBatchLimits(t *testing.T) {
	g := newGate()
	b := New(Limits{Flushers: 1, Calls: 3, Bytes: 100}, func(c *call) int { return c.n }, g.send)
	close(g.release)
	go func() {
		for range g.entered {
		}
	}()
	t.Cleanup(func() { close(g.entered) })
	// Queued together: 3 calls per batch at most, and 100 "bytes".
	require.NoError(t, b.Do(context.Background(), &call{n: 1}, &call{n: 1}, &call{n: 1}, &call{n: 1}, &call{n: 60}, &call{n: 60}))
	g.mu.Lock()
	defer g.mu.Unlock()
	require.Equal(t, [][]int{{1, 1, 1}, {1, 60}, {60}}, g.batches)
}

func TestCallerThatGaveUpIsNotSent(t *testing.T) {
	g := newGate()
	b := New(Limits{Flushers: 1}, nil, g.send)
	go func() { _ = b.Do(context.Background(), &call{n: 1}) }()
	<-g.entered

	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- b.Do(ctx, &call{n: 2}) }()
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue) == 1
	}, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-gaveUp, context.Canceled, "returns when its context ends, with Redis still busy")

	kept := &call{n: 3}
	keptDone := make(chan error, 1)
	go func() { keptDone <- b.Do(context.Background(), kept) }()
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue) == 2
	}, 5*time.Second, time.Millisecond)
	close(g.release)
	require.NoError(t, <-keptDone)
	require.Equal(t, 30, kept.reply)
	g.mu.Lock()
	defer g.mu.Unlock()
	require.Equal(t, [][]int{{1}, {3}}, g.batches, "the call given up before it went out is dropped")
}

func TestFullQueueRefusesAtOnce(t *testing.T) {
	g := newGate()
	b := New(Limits{Flushers: 1, Queue: 2}, nil, g.send)
	go func() { _ = b.Do(context.Background(), &call{n: 1}) }()
	<-g.entered
	for n := range 2 {
		go func() { _ = b.Do(context.Background(), &call{n: n + 2}) }()
	}
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue) == 2
	}, 5*time.Second, time.Millisecond)
	err := b.Do(context.Background(), &call{n: 9})
	require.True(t, errors.Is(err, ErrFull), "got %v", err)
	close(g.release)
}
