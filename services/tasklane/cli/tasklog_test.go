package cli

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
)

// --follow prints each entry once: after the last one printed while it is
// still in the log, else (dropped by the bound) those later than it.
func TestNewEntries(t *testing.T) {
	t0 := time.Now()
	e := func(ms int, msg string) contracts.LogEntry {
		return contracts.LogEntry{At: t0.Add(time.Duration(ms) * time.Millisecond), Kind: contracts.LogLine, Message: msg}
	}
	log := []contracts.LogEntry{e(1, "a"), e(2, "b"), e(2, "c"), e(3, "d")}
	require.Equal(t, log, newEntries(log, nil))
	last := log[2]
	require.Equal(t, log[3:], newEntries(log, &last))
	last = log[3]
	require.Empty(t, newEntries(log, &last))
	// Truncated past the last printed entry.
	last = e(2, "gone")
	require.Equal(t, log[3:], newEntries(log, &last))
}
