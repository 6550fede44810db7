package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
)

// FollowLog gives each entry once: after the last one given while it is
// still in the log, else (dropped by the bound) those later than it.
func TestNewLogEntries(t *testing.T) {
	t0 := time.Now()
	e := func(ms int, msg string) contracts.LogEntry {
		return contracts.LogEntry{At: t0.Add(time.Duration(ms) * time.Millisecond), Kind: contracts.LogLine, Message: msg}
	}
	log := []contracts.LogEntry{e(1, "a"), e(2, "b"), e(2, "c"), e(3, "d")}
	require.Equal(t, log, NewLogEntries(log, nil))
	last := log[2]
	require.Equal(t, log[3:], NewLogEntries(log, &last))
	last = log[3]
	require.Empty(t, NewLogEntries(log, &last))
	// Truncated past the last given entry.
	last = e(2, "gone")
	require.Equal(t, log[3:], NewLogEntries(log, &last))
}

func TestFollowInterval(t *testing.T) {
	require.Equal(t, FollowIntervalDefault, followInterval(0))
	require.Equal(t, FollowIntervalMin, followInterval(time.Millisecond))
	require.Equal(t, FollowIntervalMax, followInterval(time.Hour))
	require.Equal(t, 2*time.Second, followInterval(2*time.Second))
}
