package cloudevent

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/require"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	e := event.New()
	e.SetID("evt-1")
	e.SetSource("/orders")
	e.SetType("com.example.order.created")
	e.SetSubject("order/42")
	e.SetTime(time.Date(2026, 11, 27, 1, 2, 3, 4, time.UTC))
	e.SetDataSchema("https://example.com/schema")
	e.SetExtension("priority", 7)
	e.SetExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	require.NoError(t, e.SetData("application/json", map[string]any{"n": 1}))

	msg, err := ToMessage("u1", &e)
	require.NoError(t, err)
	require.Equal(t, "7", msg.Metadata.Get("ce_priority"))
	require.JSONEq(t, `{"n":1}`, string(msg.Payload))

	got, err := FromMessage(msg)
	require.NoError(t, err)
	require.Equal(t, e.ID(), got.ID())
	require.Equal(t, e.Source(), got.Source())
	require.Equal(t, e.Type(), got.Type())
	require.Equal(t, e.Subject(), got.Subject())
	require.True(t, e.Time().Equal(got.Time()))
	require.Equal(t, e.DataSchema(), got.DataSchema())
	require.Equal(t, "application/json", got.DataContentType())
	require.Equal(t, "7", got.Extensions()["priority"])
	require.Equal(t, e.Data(), got.Data())
}

func TestFromMessageRejectsNonEvents(t *testing.T) {
	t.Parallel()
	_, err := FromMessage(message.NewMessage("u", []byte("x")))
	require.ErrorIs(t, err, ErrNotAnEvent)

	msg := message.NewMessage("u", nil)
	msg.Metadata.Set(KeySpecVersion, "1.0")
	msg.Metadata.Set(KeyID, "a")
	msg.Metadata.Set(KeySource, "/s")
	msg.Metadata.Set(KeyType, "t")
	msg.Metadata.Set(KeyTime, "yesterday")
	_, err = FromMessage(msg)
	require.ErrorContains(t, err, "ce_time")
}

func BenchmarkBridgeRoundTrip(b *testing.B) {
	e := event.New()
	e.SetID("evt-1")
	e.SetSource("/orders")
	e.SetType("com.example.order.created")
	e.SetExtension("priority", "3")
	_ = e.SetData("application/json", map[string]any{"order": 42, "items": []int{1, 2, 3}})
	b.ReportAllocs()
	for b.Loop() {
		msg, err := ToMessage("u", &e)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := FromMessage(msg); err != nil {
			b.Fatal(err)
		}
	}
}
