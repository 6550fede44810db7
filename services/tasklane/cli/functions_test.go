package cli

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
)

func TestPrintFunctions(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	printFunctions(&b, &contracts.FunctionsView{Functions: []contracts.FunctionView{
		{Name: "resize", Limit: 12, Adaptive: true, Running: 12, Waiting: 340, Ready: contracts.ReadyBands{High: 4, Normal: 300, Low: 36}, ThrottledLastMinute: 3},
		{Name: "billing", Limit: 2, Concurrency: 2, Running: 1},
		{Name: "echo"},
	}})
	require.Equal(t, ""+
		"FUNCTION  LIMIT      RUNNING  WAITING  HIGH  NORMAL  LOW  THROTTLED/MIN\n"+
		"resize    12 (aimd)  12       340      4     300     36   3\n"+
		"billing   2          1        0        0     0       0    0\n"+
		"echo      unlimited  0        0        0     0       0    0\n", b.String())

	b.Reset()
	printFunctions(&b, &contracts.FunctionsView{})
	require.Equal(t, "no functions configured\n", b.String())
}
