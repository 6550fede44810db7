package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/ingest"
)

// Content modes of the CloudEvents HTTP binding.
const (
	modeBinary     = "binary"
	modeStructured = "structured"
	modeBatch      = "batch"

	ctStructured = "application/cloudevents+json"
	ctBatch      = "application/cloudevents-batch+json"
)

func (g *Gateway) handleEvents(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	tenant, ok := g.tenant(w, r)
	if !ok {
		g.cfg.Metrics.EventsRejected.WithLabelValues("401").Inc()
		return
	}
	mode, events, perr := g.parse(w, r)
	if perr != nil {
		g.reject(w, perr)
		return
	}
	g.cfg.Metrics.EventsReceived.WithLabelValues(tenant, mode).Add(float64(len(events)))
	tasks, err := g.cfg.Ingester.Submit(r.Context(), tenant, events)
	if err != nil {
		var ie *ingest.Error
		if !errors.As(err, &ie) {
			ie = &ingest.Error{Status: http.StatusInternalServerError, Msg: err.Error()}
		}
		g.reject(w, ie)
		return
	}
	g.cfg.Metrics.IngestSeconds.WithLabelValues(mode).Observe(time.Since(start).Seconds())
	WriteJSON(w, http.StatusAccepted, contracts.SubmitResponse{Tasks: tasks})
}

func (g *Gateway) reject(w http.ResponseWriter, e *ingest.Error) {
	g.cfg.Metrics.EventsRejected.WithLabelValues(fmt.Sprint(e.Status)).Inc()
	if e.Status == http.StatusServiceUnavailable || e.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	WriteError(w, e.Status, e.Msg)
}

func bad(status int, format string, args ...any) *ingest.Error {
	return &ingest.Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// parse reads the request's events in whichever content mode it uses.
func (g *Gateway) parse(w http.ResponseWriter, r *http.Request) (string, []*event.Event, *ingest.Error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case ct == ctBatch:
		body, err := readBody(w, r, g.cfg.Limits.MaxBatchBytes)
		if err != nil {
			return modeBatch, nil, err
		}
		evs, err := g.parseBatch(body)
		return modeBatch, evs, err
	case ct == ctStructured:
		body, err := readBody(w, r, g.cfg.Limits.MaxEventBytes)
		if err != nil {
			return modeStructured, nil, err
		}
		e, err := parseStructured(body)
		return modeStructured, []*event.Event{e}, err
	case r.Header.Get("Ce-Specversion") != "":
		body, err := readBody(w, r, g.cfg.Limits.MaxEventBytes)
		if err != nil {
			return modeBinary, nil, err
		}
		e, err := parseBinary(r, body)
		return modeBinary, []*event.Event{e}, err
	case hasCEHeaders(r.Header):
		return modeBinary, nil, bad(http.StatusBadRequest, "specversion: missing ce-specversion header (binary mode needs it, e.g. ce-specversion: 1.0)")
	}
	return "", nil, bad(http.StatusUnsupportedMediaType,
		"not a CloudEvent: send binary mode (ce-specversion, ce-id, ce-source, ce-type headers), structured mode (Content-Type: %s) or batch mode (Content-Type: %s); got Content-Type %q",
		ctStructured, ctBatch, r.Header.Get("Content-Type"))
}

func hasCEHeaders(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "ce-") {
			return true
		}
	}
	return false
}

// readBody reads at most limit bytes; a larger body answers 413 without
// being read to its end.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *ingest.Error) {
	if r.ContentLength > limit {
		return nil, bad(http.StatusRequestEntityTooLarge, "body of %d bytes exceeds the limit of %d bytes", r.ContentLength, limit)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, bad(http.StatusRequestEntityTooLarge, "body exceeds the limit of %d bytes", limit)
	case err != nil:
		return nil, bad(http.StatusBadRequest, "reading body: %v", err)
	}
	return b, nil
}

func parseBinary(r *http.Request, body []byte) (*event.Event, *ingest.Error) {
	msg := cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(body)))
	e, err := binding.ToEvent(context.Background(), msg)
	if err != nil {
		return nil, bad(http.StatusBadRequest, "invalid event: %v", err)
	}
	return e, nil
}

func parseStructured(body []byte) (*event.Event, *ingest.Error) {
	if !json.Valid(body) {
		return nil, bad(http.StatusBadRequest, "malformed JSON: %s", jsonProblem(body))
	}
	var e event.Event
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, bad(http.StatusBadRequest, "invalid event: %v", err)
	}
	return &e, nil
}

func (g *Gateway) parseBatch(body []byte) ([]*event.Event, *ingest.Error) {
	if !json.Valid(body) {
		return nil, bad(http.StatusBadRequest, "malformed JSON: %s", jsonProblem(body))
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, bad(http.StatusBadRequest, "batch must be a JSON array of CloudEvents")
	}
	if len(raws) == 0 {
		return nil, bad(http.StatusBadRequest, "batch is empty")
	}
	if len(raws) > g.cfg.Limits.MaxBatchEvents {
		return nil, bad(http.StatusRequestEntityTooLarge, "batch has %d events; the limit is %d", len(raws), g.cfg.Limits.MaxBatchEvents)
	}
	out := make([]*event.Event, len(raws))
	for i, raw := range raws {
		if int64(len(raw)) > g.cfg.Limits.MaxEventBytes {
			return nil, bad(http.StatusRequestEntityTooLarge, "events[%d]: event of %d bytes exceeds the limit of %d bytes", i, len(raw), g.cfg.Limits.MaxEventBytes)
		}
		e, err := parseStructured(raw)
		if err != nil {
			err.Msg = fmt.Sprintf("events[%d]: %s", i, err.Msg)
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

// jsonProblem says where JSON parsing stopped.
func jsonProblem(body []byte) string {
	var v any
	err := json.Unmarshal(body, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%v (at byte %d)", se, se.Offset)
	}
	if err != nil {
		return err.Error()
	}
	return "invalid JSON"
}
