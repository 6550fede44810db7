package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/tasklane/tasklane/contracts"
)

// Content types of the CloudEvents HTTP binding's structured and batch
// modes.
const (
	ContentTypeStructured = "application/cloudevents+json"
	ContentTypeBatch      = "application/cloudevents-batch+json"
)

// coreAttributes are the CloudEvents attributes an extension must not
// name.
var coreAttributes = map[string]bool{
	"specversion": true, "id": true, "source": true, "type": true, "subject": true, "time": true,
	"datacontenttype": true, "dataschema": true, "data": true, "data_base64": true,
}

// SubmitStructured submits ev in structured mode (POST /v1/events with
// Content-Type application/cloudevents+json): the event is one JSON object,
// its data JSON when DataContentType is JSON (or empty) and Data is valid
// JSON, a string when DataContentType is not JSON and Data is UTF-8 text,
// data_base64 otherwise (the bytes as they are).
func (c *Client) SubmitStructured(ctx context.Context, ev Event) (*contracts.SubmitResponse, error) {
	obj, err := ev.structured()
	if err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	return do[contracts.SubmitResponse](ctx, c, http.MethodPost, "/v1/events", nil, http.Header{"Content-Type": {ContentTypeStructured}}, body)
}

// SubmitBatch submits evs in one request in batch mode (Content-Type
// application/cloudevents-batch+json), each encoded as SubmitStructured
// does. The server accepts all of them or none; the answer lists the
// tasks of every event in order.
func (c *Client) SubmitBatch(ctx context.Context, evs []Event) (*contracts.SubmitResponse, error) {
	if len(evs) == 0 {
		return nil, errors.New("batch: no events")
	}
	objs := make([]map[string]any, len(evs))
	for i, ev := range evs {
		obj, err := ev.structured()
		if err != nil {
			return nil, fmt.Errorf("events[%d]: %w", i, err)
		}
		objs[i] = obj
	}
	body, err := json.Marshal(objs)
	if err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}
	return c.SubmitBatchJSON(ctx, body)
}

// SubmitBatchJSON submits batch, a JSON array of CloudEvents in the
// CloudEvents JSON format, as it is in batch mode. The server checks each
// event and names the first one it refuses (events[i]: ...).
func (c *Client) SubmitBatchJSON(ctx context.Context, batch []byte) (*contracts.SubmitResponse, error) {
	if t := bytes.TrimSpace(batch); len(t) == 0 || t[0] != '[' {
		return nil, errors.New("batch: want a JSON array of CloudEvents")
	}
	return do[contracts.SubmitResponse](ctx, c, http.MethodPost, "/v1/events", nil, http.Header{"Content-Type": {ContentTypeBatch}}, batch)
}

// structured is ev in the CloudEvents JSON format.
func (ev Event) structured() (map[string]any, error) {
	var missing []string
	for _, a := range []struct{ name, v string }{{"id", ev.ID}, {"source", ev.Source}, {"type", ev.Type}} {
		if a.v == "" {
			missing = append(missing, a.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s required", strings.Join(missing, ", "))
	}
	obj := map[string]any{"specversion": "1.0", "id": ev.ID, "source": ev.Source, "type": ev.Type}
	if ev.Subject != "" {
		obj["subject"] = ev.Subject
	}
	if ev.DataContentType != "" {
		obj["datacontenttype"] = ev.DataContentType
	}
	for k, v := range ev.Extensions {
		name := strings.ToLower(k)
		if coreAttributes[name] {
			return nil, fmt.Errorf("extension %q: a CloudEvents attribute, not an extension", k)
		}
		obj[name] = v
	}
	switch {
	case len(ev.Data) == 0:
	case isJSON(ev.DataContentType) && json.Valid(ev.Data):
		obj["data"] = json.RawMessage(ev.Data)
	case !isJSON(ev.DataContentType) && utf8.Valid(ev.Data):
		obj["data"] = string(ev.Data)
	default:
		obj["data_base64"] = base64.StdEncoding.EncodeToString(ev.Data)
	}
	return obj, nil
}

// isJSON reports whether media type ct is JSON (empty counts: the
// CloudEvents JSON format's default).
func isJSON(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}
