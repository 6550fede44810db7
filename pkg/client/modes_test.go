package client_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/client"
)

// TestSubmitStructuredAndBatch: the CloudEvents JSON format each mode
// sends, data encoded by its content type.
func TestSubmitStructuredAndBatch(t *testing.T) {
	t.Parallel()
	c, last := server(t, http.StatusAccepted, `{"tasks":[{"id":"T1","event_id":"e1","function":"f","state":"queued","duplicate":false}]}`)
	ctx := context.Background()

	sr, err := c.SubmitStructured(ctx, client.Event{ID: "e1", Source: "/s", Type: "t", Subject: "sub", DataContentType: "application/json",
		Data: []byte(`{"a":1}`), Extensions: map[string]string{"TTL": "60", "priority": "5"}})
	require.NoError(t, err)
	require.Equal(t, "T1", sr.Tasks[0].ID)
	r := last()
	require.Equal(t, http.MethodPost, r.method)
	require.Equal(t, "/v1/events", r.path)
	require.Equal(t, client.ContentTypeStructured, r.header.Get("Content-Type"))
	require.JSONEq(t, `{"specversion":"1.0","id":"e1","source":"/s","type":"t","subject":"sub","datacontenttype":"application/json",
		"ttl":"60","priority":"5","data":{"a":1}}`, r.body)

	_, err = c.SubmitBatch(ctx, []client.Event{
		{ID: "1", Source: "/s", Type: "t", Data: []byte(`[1,2]`)},                                     // JSON by default
		{ID: "2", Source: "/s", Type: "t", DataContentType: "text/plain", Data: []byte(`hello`)},      // text
		{ID: "3", Source: "/s", Type: "t", DataContentType: "application/json", Data: []byte(`not{`)}, // not JSON after all
		{ID: "4", Source: "/s", Type: "t", DataContentType: "image/png", Data: []byte{0x89, 0xff, 0x00}},
		{ID: "5", Source: "/s", Type: "t"},
	})
	require.NoError(t, err)
	r = last()
	require.Equal(t, client.ContentTypeBatch, r.header.Get("Content-Type"))
	require.JSONEq(t, `[
		{"specversion":"1.0","id":"1","source":"/s","type":"t","data":[1,2]},
		{"specversion":"1.0","id":"2","source":"/s","type":"t","datacontenttype":"text/plain","data":"hello"},
		{"specversion":"1.0","id":"3","source":"/s","type":"t","datacontenttype":"application/json","data_base64":"bm90ew=="},
		{"specversion":"1.0","id":"4","source":"/s","type":"t","datacontenttype":"image/png","data_base64":"if8A"},
		{"specversion":"1.0","id":"5","source":"/s","type":"t"}]`, r.body)

	raw := `[{"specversion":"1.0","id":"x","source":"/s","type":"t"}]`
	_, err = c.SubmitBatchJSON(ctx, []byte(raw))
	require.NoError(t, err)
	require.Equal(t, raw, last().body)

	// Refused before sending.
	before := last()
	_, err = c.SubmitBatch(ctx, []client.Event{{ID: "1", Source: "/s", Type: "t"}, {Source: "/s"}})
	require.EqualError(t, err, "events[1]: id, type required")
	_, err = c.SubmitBatch(ctx, nil)
	require.EqualError(t, err, "batch: no events")
	_, err = c.SubmitStructured(ctx, client.Event{ID: "1", Source: "/s", Type: "t", Extensions: map[string]string{"ID": "2"}})
	require.EqualError(t, err, `event: extension "ID": a CloudEvents attribute, not an extension`)
	_, err = c.SubmitBatchJSON(ctx, []byte(`{"id":"1"}`))
	require.EqualError(t, err, "batch: want a JSON array of CloudEvents")
	require.Equal(t, before, last(), "nothing sent")
}

// TestReady: 200 is ready; a 503 names each check that is not ok.
func TestReady(t *testing.T) {
	t.Parallel()
	c, last := server(t, http.StatusOK, `{"redis":"ok","broker":"ok"}`)
	checks, err := c.Ready(context.Background())
	require.NoError(t, err)
	require.Equal(t, map[string]string{"redis": "ok", "broker": "ok"}, checks)
	require.Equal(t, "/readyz", last().path)

	c, _ = server(t, http.StatusServiceUnavailable, `{"redis":"dial tcp 127.0.0.1:1: connect: connection refused","broker":"ok","lanes":"not declared yet"}`)
	checks, err = c.Ready(context.Background())
	require.EqualError(t, err, "server answered 503: not ready: lanes: not declared yet; redis: dial tcp 127.0.0.1:1: connect: connection refused")
	require.Equal(t, http.StatusServiceUnavailable, client.StatusCode(err))
	require.Equal(t, "ok", checks["broker"])

	c, _ = server(t, http.StatusNotFound, `404 page not found`)
	_, err = c.Ready(context.Background())
	require.EqualError(t, err, "server answered 404: 404 page not found")
}
