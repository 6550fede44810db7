package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/admission"
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
		var refused *admission.RefusedError
		if errors.As(err, &refused) {
			g.cfg.Metrics.EventsRejected.WithLabelValues("429").Inc()
			WriteRefused(w, refused)
			return
		}
		var ie *ingest.Error
		if !errors.As(err, &ie) {
			ie = &ingest.Error{Status: http.StatusInternalServerError, Msg: err.Error()}
		}
		g.reject(w, ie)
		return
	}
	g.cfg.Metrics.IngestSeconds.WithLabelValues(mode).Observe(time.Since(start).Seconds())
	if len(tasks) == 1 {
		w.Header().Set("Location", "/v1/tasks/"+url.PathEscape(tasks[0].ID))
	}
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
	// The media type as the SDK reads it (format.Lookup): a parameter list
	// mime.ParseMediaType refuses must not turn a structured request into a
	// binary-mode one that the SDK then reads as structured after all.
	ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	ct = strings.ToLower(strings.TrimSpace(ct))
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
		if err := g.checkBinaryHeaders(r.Header); err != nil {
			return modeBinary, nil, err
		}
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

// maxBinaryAttributes bounds the ce- headers of a binary-mode request: the
// CloudEvents attributes (specversion, id, source, type, subject, time,
// dataschema, and 0.3's schemaurl and datacontentencoding) and the
// extensions the ingester takes.
const maxBinaryAttributes = 9 + ingest.MaxExtensions

// checkBinaryHeaders bounds a binary-mode request's attributes before the
// SDK reads them: the number of ce- headers, and their size with the
// Content-Type (datacontenttype), counted as the ingester counts attributes
// (the name without "ce-", plus the value). The ingester bounds the whole
// event again with its data; this refuses 20,000 headers, or a 140 KB one,
// without building an event of them.
func (g *Gateway) checkBinaryHeaders(h http.Header) *ingest.Error {
	n, size := 0, int64(0)
	for k, vs := range h {
		name, ok := cutPrefixFold(k, "ce-")
		if !ok {
			continue
		}
		for _, v := range vs {
			n++
			size += int64(len(name) + len(v))
		}
	}
	for _, v := range h.Values("Content-Type") {
		size += int64(len("datacontenttype") + len(v))
	}
	if n > maxBinaryAttributes {
		return bad(http.StatusRequestEntityTooLarge, "binary mode: %d ce- headers; an event has at most %d attributes and extensions (%d extensions)", n, maxBinaryAttributes, ingest.MaxExtensions)
	}
	if size > g.cfg.Limits.MaxEventBytes {
		return bad(http.StatusRequestEntityTooLarge, "binary mode: attributes of %d bytes (ce- headers and Content-Type) exceed the limit of %d bytes (server.max_event_bytes)", size, g.cfg.Limits.MaxEventBytes)
	}
	return nil
}

// cutPrefixFold is strings.CutPrefix, ignoring ASCII case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
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
	if errors.Is(err, binding.ErrUnknownEncoding) {
		// Neither a structured content type nor a specversion the SDK knows.
		return nil, bad(http.StatusBadRequest, "specversion: unknown value %q in ce-specversion (supported: 1.0, 0.3)", r.Header.Get("Ce-Specversion"))
	}
	if err != nil {
		return nil, bad(http.StatusBadRequest, "invalid event: %s", errText(err))
	}
	return e, nil
}

func parseStructured(body []byte) (*event.Event, *ingest.Error) {
	if !json.Valid(body) {
		return nil, bad(http.StatusBadRequest, "malformed JSON: %s", jsonProblem(body))
	}
	if kind := jsonKind(body); kind != "an object" {
		return nil, bad(http.StatusBadRequest, "invalid event: an event is a JSON object, got %s", kind)
	}
	if err := checkIntExtensions(body); err != nil {
		return nil, err
	}
	var e event.Event
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, bad(http.StatusBadRequest, "invalid event: %s", errText(err))
	}
	return &e, nil
}

// intExtensions are Tasklane's integer attributes.
var intExtensions = []string{contracts.ExtPriority, contracts.ExtDelay, contracts.ExtTTL}

// checkIntExtensions refuses a JSON number that is not a whole int32 in an
// integer attribute: the SDK reads such a number as an int32 and silently
// drops its fraction (priority 4.5 would be 4, delay 0.5 would be 0). The
// SDK lower-cases attribute names, so they are compared that way.
func checkIntExtensions(body []byte) *ingest.Error {
	lower := bytes.ToLower(body)
	named := func(name string) bool { return bytes.Contains(lower, []byte(`"`+name+`"`)) }
	if !slices.ContainsFunc(intExtensions, named) && !bytes.Contains(body, []byte(`\u`)) {
		return nil // quick path: no such attribute, not even escaped
	}
	var attrs map[string]json.RawMessage
	if json.Unmarshal(body, &attrs) != nil {
		return nil // the SDK says what is wrong
	}
	for _, key := range slices.Sorted(maps.Keys(attrs)) {
		name, raw := strings.ToLower(key), attrs[key]
		if !slices.Contains(intExtensions, name) || len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
			continue // not one of them, or not a number: checked later
		}
		x, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || x != math.Trunc(x) || x < math.MinInt32 || x > math.MaxInt32 {
			return bad(http.StatusBadRequest, "%s: must be an integer, got %s", name, raw)
		}
	}
	return nil
}

// jsonKind names the kind of the valid JSON value body holds.
func jsonKind(body []byte) string {
	b := bytes.TrimLeft(body, " \t\r\n")
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// errText renders an SDK error on one line: its validation errors come one
// attribute a line, in map order.
func errText(err error) string {
	var ve event.ValidationError
	if errors.As(err, &ve) {
		parts := make([]string, 0, len(ve))
		for attr, e := range ve {
			parts = append(parts, attr+": "+e.Error())
		}
		slices.Sort(parts)
		return strings.Join(parts, "; ")
	}
	return strings.TrimSpace(err.Error())
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
