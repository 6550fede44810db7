package gateway

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkParse measures decoding a POST /v1/events request into
// CloudEvents (body read, validation, SDK decode) in each content mode, with
// a 64-byte JSON payload.
func BenchmarkParse(b *testing.B) {
	g := New(Config{})
	data := `{"p":"` + strings.Repeat("x", 48) + `","i":1}`
	structured := func(id string) string {
		return `{"specversion":"1.0","id":"` + id + `","source":"/bench","type":"com.example.noop","datacontenttype":"application/json","data":` + data + `}`
	}
	var batch bytes.Buffer
	batch.WriteByte('[')
	for i := range 100 {
		if i > 0 {
			batch.WriteByte(',')
		}
		batch.WriteString(structured(fmt.Sprint("ev-", i)))
	}
	batch.WriteByte(']')
	cases := []struct {
		name, contentType, body string
		header                  map[string]string
		events                  int
	}{
		{name: "Binary", contentType: "application/json", body: data, events: 1,
			header: map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "ev-1", "Ce-Source": "/bench", "Ce-Type": "com.example.noop"}},
		{name: "Structured", contentType: ctStructured, body: structured("ev-1"), events: 1},
		{name: "Batch100", contentType: ctBatch, body: batch.String(), events: 100},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, "/v1/events", strings.NewReader(c.body))
				r.Header.Set("Content-Type", c.contentType)
				for k, v := range c.header {
					r.Header.Set(k, v)
				}
				_, evs, err := g.parse(httptest.NewRecorder(), r)
				if err != nil || len(evs) != c.events {
					b.Fatalf("parse: %d events, %v", len(evs), err)
				}
			}
		})
	}
}
