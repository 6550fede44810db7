package executor

import (
	"context"
	"errors"
	"fmt"

	"github.com/tasklane/tasklane/pkg/sdk"
)

type goHandler struct {
	h   sdk.HandlerFunc
	max int64
}

func (g goHandler) Execute(ctx context.Context, r Request) (o Outcome) {
	ctx, lines := sdk.CaptureLogs(ctx)
	defer func() {
		if p := recover(); p != nil {
			o = Outcome{Class: Retryable, Err: fmt.Sprintf("handler panicked: %v", p)}
		}
		o.Lines = lines.Lines()
	}()
	ctx, reply := sdk.CollectReply(ctx)
	res, err := g.h(ctx, sdk.Task{
		ID: r.TaskID, Tenant: r.Tenant, Function: r.Function,
		Attempt: r.Attempt, Deadline: r.Deadline, Event: r.Event,
	})
	if err == nil {
		return Outcome{Class: Succeeded, Result: bounded(res, g.max), Reply: reply()}
	}
	var perm *sdk.PermanentError
	var thr *sdk.ThrottledError
	switch {
	case errors.As(err, &perm):
		return Outcome{Class: NonRetryable, Err: err.Error()}
	case errors.As(err, &thr):
		return Outcome{Class: Throttled, Err: err.Error(), RetryAfter: thr.RetryAfter}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return Outcome{Class: Retryable, Err: "timeout: " + err.Error()}
	}
	return Outcome{Class: Retryable, Err: err.Error()}
}
