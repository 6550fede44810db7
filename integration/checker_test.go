//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
)

// checker is a total-queue checker in the manner of Jepsen's: it records
// every task the API accepted, every execution the function saw and every
// result event the sink received, and at the end counts what went wrong.
type checker struct {
	mu         sync.Mutex
	accepted   map[string]bool
	executions map[string]int
	results    map[string][]result
	fn, sink   *httptest.Server
}

// result is one result event the sink received. Result events are at least
// once (the notifier sends again when it cannot tell whether a send took),
// so the same event may arrive twice: same id, same task record.
type result struct {
	state contracts.State
	// outcome identifies the terminal transition it reports: the event id
	// and the finish time in the task record it carries.
	outcome string
}

// newChecker starts a function that takes 0 to maxRun and answers 200, and
// a results sink.
func newChecker(t *testing.T, maxRun time.Duration) *checker {
	c := &checker{accepted: map[string]bool{}, executions: map[string]int{}, results: map[string][]result{}}
	c.fn = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(contracts.HeaderTaskID)
		c.mu.Lock()
		c.executions[id]++
		c.mu.Unlock()
		if maxRun > 0 {
			time.Sleep(rand.N(maxRun)) // the function's own work, not test synchronisation
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(c.fn.Close)
	c.sink = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var task contracts.Task
		_ = json.NewDecoder(r.Body).Decode(&task)
		finished := ""
		if task.FinishedAt != nil {
			finished = task.FinishedAt.Format(time.RFC3339Nano)
		}
		c.mu.Lock()
		id := r.Header.Get("Ce-Subject")
		c.results[id] = append(c.results[id], result{
			state:   contracts.State(r.Header.Get("Ce-Type")[len(contracts.ResultTypePrefix):]),
			outcome: r.Header.Get("Ce-Id") + "@" + finished,
		})
		c.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(c.sink.Close)
	return c
}

func (c *checker) accept(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		c.accepted[id] = true
	}
}

// resultsFor counts accepted tasks with at least one result.
func (c *checker) finished() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for id := range c.accepted {
		if len(c.results[id]) > 0 {
			n++
		}
	}
	return n
}

func (c *checker) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.accepted)
}

// verdict is the outcome of a run.
type verdict struct {
	Accepted, Lost, Stuck, DuplicateSuccesses, DuplicateResults, Unexpected, DuplicateExecutions int
	// ConflictingResults counts tasks whose result events report more than
	// one distinct outcome; redeliveries of one event are DuplicateResults.
	ConflictingResults int
	Executions         int
}

func (v verdict) String() string {
	return fmt.Sprintf("accepted=%d lost=%d stuck=%d duplicate_successes=%d duplicate_results=%d unexpected=%d executions=%d duplicate_executions=%d",
		v.Accepted, v.Lost, v.Stuck, v.DuplicateSuccesses, v.DuplicateResults, v.Unexpected, v.Executions, v.DuplicateExecutions) +
		fmt.Sprintf(" conflicting_results=%d", v.ConflictingResults)
}

// check compares the records with the ledger: lost = accepted but no
// terminal result event; stuck = accepted but not terminal in the ledger;
// duplicate successes = more than one distinct succeeded outcome for a task
// (a redelivered result event, same id and record, is a duplicate result,
// which the at-least-once contract allows);
// unexpected = results for tasks never accepted.
func (c *checker) check(t *testing.T, e *env, tenant string) verdict {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	v := verdict{Accepted: len(c.accepted)}
	for id := range c.accepted {
		rs := c.results[id]
		if len(rs) == 0 {
			v.Lost++
		}
		if len(rs) > 1 {
			v.DuplicateResults++
		}
		succ, outcomes := map[string]bool{}, map[string]bool{}
		for _, r := range rs {
			outcomes[r.outcome] = true
			if r.state == contracts.StateSucceeded {
				succ[r.outcome] = true
			}
		}
		if len(outcomes) > 1 {
			v.ConflictingResults++
		}
		if len(succ) > 1 {
			v.DuplicateSuccesses++
		}
		task, err := e.ledger().Get(context.Background(), tenant, id)
		require.NoError(t, err, "task %s", id)
		if !task.State.Terminal() {
			v.Stuck++
		}
	}
	for id := range c.results {
		if !c.accepted[id] {
			v.Unexpected++
		}
	}
	for _, n := range c.executions {
		v.Executions += n
		if n > 1 {
			v.DuplicateExecutions += n - 1
		}
	}
	return v
}
