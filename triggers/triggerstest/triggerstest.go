// Package triggerstest helps test triggers: a recording Submitter that
// behaves like the ingest path (dedup by source and id), and a Store on the
// test Redis with a key prefix of its own.
package triggerstest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/triggers"
)

// Submitter records submitted events. Like the ingest path, it validates
// each event and deduplicates by (tenant, source, id): a duplicate is
// answered but not recorded again. FailFunc, when set, is consulted first:
// a non-nil error refuses the whole submission.
type Submitter struct {
	// FailFunc may refuse a submission.
	FailFunc func(tenant string, events []*event.Event) error

	mu         sync.Mutex
	events     []Submitted
	seen       map[string]bool
	calls      int
	duplicates int
}

// Submitted is one recorded event.
type Submitted struct {
	Tenant string
	Event  event.Event
}

// NewSubmitter returns an empty Submitter.
func NewSubmitter() *Submitter { return &Submitter{seen: map[string]bool{}} }

// Submit implements triggers.Submitter.
func (s *Submitter) Submit(_ context.Context, tenant string, events []*event.Event) ([]contracts.SubmittedTask, error) {
	s.mu.Lock()
	fail := s.FailFunc
	s.calls++
	s.mu.Unlock()
	if fail != nil {
		if err := fail(tenant, events); err != nil {
			return nil, err
		}
	}
	for i, e := range events {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("events[%d]: %w", i, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]contracts.SubmittedTask, 0, len(events))
	for _, e := range events {
		k := tenant + "\x00" + e.Source() + "\x00" + e.ID()
		dup := s.seen[k]
		if dup {
			s.duplicates++
		} else {
			s.seen[k] = true
			s.events = append(s.events, Submitted{Tenant: tenant, Event: e.Clone()})
		}
		out = append(out, contracts.SubmittedTask{ID: "task-" + e.ID(), EventID: e.ID(), Function: "f", State: contracts.StateQueued, Duplicate: dup})
	}
	return out, nil
}

// Events returns the distinct events recorded, in order.
func (s *Submitter) Events() []Submitted {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// IDs returns the ids of the distinct events recorded, in order.
func (s *Submitter) IDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, len(s.events))
	for i, e := range s.events {
		ids[i] = e.Event.ID()
	}
	return ids
}

// Len counts the distinct events recorded.
func (s *Submitter) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

// Duplicates counts events submitted again.
func (s *Submitter) Duplicates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.duplicates
}

// Calls counts Submit calls.
func (s *Submitter) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Store returns a Store on the test Redis under a key prefix unique to the
// test; its keys are deleted when the test ends.
func Store(t testing.TB) *triggers.Store {
	t.Helper()
	rdb, prefix := testkit.Redis(t)
	return triggers.NewStore(rdb, prefix)
}
