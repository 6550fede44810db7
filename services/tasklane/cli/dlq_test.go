package cli

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
)

// `dlq redrive|purge --all` goes in steps of dlqStep, following the
// cursor, with progress after each step that leaves more, and the totals.
func TestDLQBulkSteps(t *testing.T) {
	var seen []contracts.DLQFilter
	answers := []contracts.DLQResult{{Matched: dlqStep, Done: dlqStep, NextCursor: "c1"}, {Matched: dlqStep, Done: dlqStep - 1, NextCursor: "c2"}, {Matched: 3, Done: 3}}
	bulk := func(_ context.Context, f contracts.DLQFilter) (*contracts.DLQResult, error) {
		seen = append(seen, f)
		r := answers[len(seen)-1]
		return &r, nil
	}
	var progress []contracts.DLQResult
	total, err := dlqBulkSteps(context.Background(), bulk, contracts.DLQFilter{Function: "f"}, func(r contracts.DLQResult) { progress = append(progress, r) })
	require.NoError(t, err)
	require.Equal(t, contracts.DLQResult{Matched: 2*dlqStep + 3, Done: 2*dlqStep + 2}, *total)
	require.Equal(t, []contracts.DLQResult{{Matched: dlqStep, Done: dlqStep}, {Matched: 2 * dlqStep, Done: 2*dlqStep - 1}}, progress)
	require.Equal(t, []string{"", "c1", "c2"}, []string{seen[0].Cursor, seen[1].Cursor, seen[2].Cursor})
	for _, f := range seen {
		require.Equal(t, dlqStep, f.Limit)
		require.Equal(t, "f", f.Function)
	}

	// An error after some steps says how far it got.
	seen = nil
	_, err = dlqBulkSteps(context.Background(), func(ctx context.Context, f contracts.DLQFilter) (*contracts.DLQResult, error) {
		if f.Cursor != "" {
			return nil, errors.New("boom")
		}
		return bulk(ctx, f)
	}, contracts.DLQFilter{}, func(contracts.DLQResult) {})
	require.EqualError(t, err, "after 500 matched, 500 done: boom")
}
