package notifier

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/tasklane/tasklane/pkg/executor"
)

// maxSinkWait caps one wait between sink attempts (Retry-After included).
const maxSinkWait = 30 * time.Second

// deliver sends e to s's sink with bounded retries. 2xx is delivered;
// 408, 429, 5xx and connection errors are retried; any other answer (and
// 410 Gone) ends delivery to that sink for this result.
func (n *Notifier) deliver(ctx context.Context, s Subscription, e *event.Event) {
	wait := n.cfg.SinkBackoff
	for attempt := 1; ; attempt++ {
		status, retryAfter, err := n.post(ctx, s.Sink, e)
		switch {
		case err == nil && status/100 == 2:
			n.cfg.Metrics.SinkDeliveries.WithLabelValues(s.Name, "ok").Inc()
			return
		case err == nil && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests && status < 500:
			n.cfg.Metrics.SinkDeliveries.WithLabelValues(s.Name, "rejected").Inc()
			n.cfg.Logger.Warn("sink rejected result event", "subscription", s.Name, "event", e.ID(), "status", status)
			return
		}
		if attempt >= n.cfg.SinkAttempts {
			n.cfg.Metrics.SinkDeliveries.WithLabelValues(s.Name, "dropped").Inc()
			n.cfg.Logger.Error("giving up on sink delivery", "subscription", s.Name, "event", e.ID(), "attempts", attempt, "status", status, "error", err)
			return
		}
		n.cfg.Metrics.SinkDeliveries.WithLabelValues(s.Name, "retry").Inc()
		d := wait
		if retryAfter > 0 {
			d = retryAfter
		}
		t := time.NewTimer(min(d, maxSinkWait))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait *= 2
	}
}

func (n *Notifier) post(ctx context.Context, url string, e *event.Event) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return 0, 0, err
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(e), req); err != nil {
		return 0, 0, fmt.Errorf("encoding event: %w", err)
	}
	resp, err := n.cfg.Client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, executor.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), nil
}
