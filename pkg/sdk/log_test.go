package sdk_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tasklane/tasklane/pkg/sdk"
)

func TestLoggerWritesLines(t *testing.T) {
	ctx, lines := sdk.CaptureLogs(context.Background())
	sdk.Logf(ctx, "fetched %d bytes", 42)
	sdk.Logger(ctx).Info("resized", "width", 640)
	got := lines.Lines()
	if len(got) != 2 || got[0].Text != "fetched 42 bytes" || got[1].Text != "level=INFO msg=resized width=640" {
		t.Fatalf("lines = %+v", got)
	}
	for i := range sdk.MaxLogLines + 5 {
		sdk.Logf(ctx, "line %d", i)
	}
	got = lines.Lines()
	if len(got) != sdk.MaxLogLines+1 || !strings.Contains(got[len(got)-1].Text, "7 more lines dropped") {
		t.Fatalf("%d lines, last %q", len(got), got[len(got)-1].Text)
	}
	// Outside a task: nothing happens, nothing panics.
	sdk.Logf(context.Background(), "x")
	sdk.Logger(context.Background()).Info("x")
}
