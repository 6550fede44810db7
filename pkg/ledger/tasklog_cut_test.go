package ledger_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ledger"
)

// TestTaskLogCutKeepsAMessageWithAnInvalidByte: a message longer than
// LogMessageMaxBytes with one byte that is not UTF-8 (a function's output
// in another encoding) is cut to the bound, as a valid one is: the bad
// byte goes, the rest of the first LogMessageMaxBytes stays (the cut used
// to shorten it byte by byte until it was valid, leaving " [cut]" alone).
func TestTaskLogCutKeepsAMessageWithAnInvalidByte(t *testing.T) {
	t.Parallel()
	b := setupDispatch(t, nil)
	ctx := context.Background()
	id := b.record(t, "a", "f1", 5)
	msg := "caf\xe9 " + strings.Repeat("x", 3*ledger.LogMessageMaxBytes)
	require.NoError(t, b.l.AppendLog(ctx, "a", id, contracts.LogEntry{Kind: contracts.LogLine, Message: msg}))
	log, err := b.l.Log(ctx, "a", id)
	require.NoError(t, err)
	got := log[len(log)-1].Message
	require.True(t, utf8.ValidString(got))
	require.True(t, strings.HasPrefix(got, "caf xxx"), "%.20q", got)
	require.True(t, strings.HasSuffix(got, " [cut]"))
	require.GreaterOrEqual(t, len(got), ledger.LogMessageMaxBytes-4)
	require.LessOrEqual(t, len(got), ledger.LogMessageMaxBytes)
}
