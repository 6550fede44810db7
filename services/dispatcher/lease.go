package dispatcher

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/metrics"
)

// leaseKeeper renews the leases of this process's running attempts in one
// pipelined round trip every ttl/3. A lease that could not be renewed (the
// task was taken over) cancels its attempt.
type leaseKeeper struct {
	l      *ledger.Ledger
	ttl    time.Duration
	m      *metrics.Metrics
	logger *slog.Logger

	mu     sync.Mutex
	held   map[ledger.Lease]*heldLease
	stopCh chan struct{}
	once   sync.Once
}

type heldLease struct {
	lost   atomic.Bool
	cancel func()
}

func newLeaseKeeper(l *ledger.Ledger, ttl time.Duration, m *metrics.Metrics, logger *slog.Logger) *leaseKeeper {
	return &leaseKeeper{l: l, ttl: ttl, m: m, logger: logger, held: map[ledger.Lease]*heldLease{}, stopCh: make(chan struct{})}
}

// Hold registers a running attempt; the returned flag turns true if its
// lease is lost, after which cancel is called.
func (k *leaseKeeper) Hold(l ledger.Lease, cancel func()) *atomic.Bool {
	h := &heldLease{cancel: cancel}
	k.mu.Lock()
	k.held[l] = h
	k.mu.Unlock()
	return &h.lost
}

// Release stops renewing l.
func (k *leaseKeeper) Release(l ledger.Lease) {
	k.mu.Lock()
	delete(k.held, l)
	k.mu.Unlock()
}

// Abort cancels the attempts this process runs of tenant's task id (it was
// cancelled): their outcome is discarded as for a lost lease. It reports
// whether it found one.
func (k *leaseKeeper) Abort(tenant, id string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	found := false
	for l, h := range k.held {
		if l.Tenant == tenant && l.ID == id {
			found = true
			if !h.lost.Swap(true) {
				h.cancel()
			}
		}
	}
	return found
}

func (k *leaseKeeper) stop() { k.once.Do(func() { close(k.stopCh) }) }

func (k *leaseKeeper) run(ctx context.Context) {
	t := time.NewTicker(k.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.stopCh:
			return
		case <-t.C:
			k.renew(ctx)
		}
	}
}

func (k *leaseKeeper) renew(ctx context.Context) {
	k.mu.Lock()
	leases := make([]ledger.Lease, 0, len(k.held))
	for l := range k.held {
		leases = append(leases, l)
	}
	k.mu.Unlock()
	if len(leases) == 0 {
		return
	}
	lost, err := k.l.Renew(ctx, k.ttl, leases...)
	if err != nil {
		k.m.LedgerErrors.WithLabelValues("renew").Inc()
		k.logger.Warn("renewing leases", "error", err)
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, l := range lost {
		if h, ok := k.held[l]; ok && !h.lost.Swap(true) {
			h.cancel()
		}
	}
}
