package broker

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/taskmsg"
)

func TestAMQPMarshalerRoundTripCarriesPriority(t *testing.T) {
	t.Parallel()
	msg := message.NewMessage("task-1", []byte(`{"a":1}`))
	msg.Metadata.Set(taskmsg.KeyPriority, "7")
	msg.Metadata.Set("ce_id", "evt-1")
	pub, err := amqpMarshaler{}.Marshal(msg)
	require.NoError(t, err)
	require.Equal(t, uint8(7), pub.Priority)
	require.Equal(t, amqp.Persistent, pub.DeliveryMode)
	require.Equal(t, "task-1", pub.MessageId)

	back, err := amqpMarshaler{}.Unmarshal(amqp.Delivery{Acknowledger: nopAck{}, Headers: pub.Headers, Body: pub.Body, MessageId: pub.MessageId})
	require.NoError(t, err)
	require.Equal(t, "task-1", back.UUID)
	require.Equal(t, "evt-1", back.Metadata.Get("ce_id"))
	require.Equal(t, "7", back.Metadata.Get(taskmsg.KeyPriority))
	require.Equal(t, `{"a":1}`, string(back.Payload))
}

// Broker-added headers are not strings. watermill-amqp's default marshaler
// rejects such a delivery before any middleware runs, and the subscriber
// nacks it forever; this one must turn them into metadata.
func TestAMQPMarshalerToleratesBrokerHeaders(t *testing.T) {
	t.Parallel()
	d := amqp.Delivery{
		Acknowledger: nopAck{},
		Redelivered:  true,
		Headers: amqp.Table{
			"_watermill_message_uuid": "task-1",
			"x-delivery-count":        int64(3),
			"x-death": []any{
				amqp.Table{"count": int64(2), "queue": "a", "reason": "rejected"},
				amqp.Table{"count": int64(1), "queue": "b", "reason": "expired"},
			},
			"x-delay":  int32(5000),
			"flag":     true,
			"when":     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
			"raw":      []byte("bytes"),
			"nothing":  nil,
			"ce_type":  "com.example.t",
			"floating": 1.5,
		},
	}
	msg, err := amqpMarshaler{}.Unmarshal(d)
	require.NoError(t, err)
	require.Equal(t, "task-1", msg.UUID)
	md := msg.Metadata
	require.Equal(t, "3", md.Get(taskmsg.KeyDeliveryCount))
	require.Equal(t, "3", md.Get("tl_x_death_count"))
	require.Equal(t, "true", md.Get(taskmsg.KeyRedelivered))
	require.Equal(t, "5000", md.Get("x-delay"))
	require.Equal(t, "true", md.Get("flag"))
	require.Equal(t, "2026-01-02T03:04:05Z", md.Get("when"))
	require.Equal(t, "bytes", md.Get("raw"))
	require.Equal(t, "com.example.t", md.Get("ce_type"))
	require.Equal(t, "1.5", md.Get("floating"))
	require.NotContains(t, md, "x-delivery-count")
}

func TestAMQPMarshalerFallsBackForMissingUUID(t *testing.T) {
	t.Parallel()
	msg, err := amqpMarshaler{}.Unmarshal(amqp.Delivery{Acknowledger: nopAck{}, MessageId: "from-props"})
	require.NoError(t, err)
	require.Equal(t, "from-props", msg.UUID)
	msg, err = amqpMarshaler{}.Unmarshal(amqp.Delivery{Acknowledger: nopAck{}, Body: []byte("hand-published")})
	require.NoError(t, err)
	require.NotEmpty(t, msg.UUID, "a delivery from a non-Watermill producer still reaches the handler")
}

// A closed consumer channel yields zero deliveries; they are refused, not
// passed on as empty messages (which would be quarantined as junk).
func TestAMQPMarshalerRefusesZeroDeliveries(t *testing.T) {
	t.Parallel()
	_, err := amqpMarshaler{}.Unmarshal(amqp.Delivery{})
	require.ErrorIs(t, err, errZeroDelivery)
}

// nopAck stands in for the channel a real delivery came on.
type nopAck struct{}

func (nopAck) Ack(uint64, bool) error        { return nil }
func (nopAck) Nack(uint64, bool, bool) error { return nil }
func (nopAck) Reject(uint64, bool) error     { return nil }

func TestStreamMarshalerFlagsUndecodableEntries(t *testing.T) {
	t.Parallel()
	msg := message.NewMessage("task-1", []byte("p"))
	msg.Metadata.Set("k", "v")
	fields, err := streamMarshaler{}.Marshal(msg)
	require.NoError(t, err)
	values := map[string]any{}
	for k, v := range fields {
		switch x := v.(type) {
		case []byte:
			values[k] = string(x)
		default:
			values[k] = x
		}
	}
	back, err := streamMarshaler{}.Unmarshal(values)
	require.NoError(t, err)
	require.Equal(t, "task-1", back.UUID)
	require.Equal(t, "v", back.Metadata.Get("k"))
	require.Empty(t, back.Metadata.Get(taskmsg.KeyUndecodable))

	for name, v := range map[string]map[string]any{
		"no uuid":        {"payload": "x"},
		"bad metadata":   {"uuid": "u", "metadata": "{not json"},
		"from redis-cli": {"hello": "world"},
	} {
		m, err := streamMarshaler{}.Unmarshal(v)
		require.NoError(t, err, name)
		require.NotEmpty(t, m.Metadata.Get(taskmsg.KeyUndecodable), name)
	}
}

func BenchmarkAMQPMarshal(b *testing.B) {
	msg := message.NewMessage("01J0000000000000000000000", make([]byte, 256))
	for _, k := range []string{"ce_id", "ce_source", "ce_type", "ce_specversion", "ce_datacontenttype", "tl_task_id", "tl_tenant", "tl_function", "tl_priority"} {
		msg.Metadata.Set(k, "value-"+k)
	}
	b.ReportAllocs()
	for b.Loop() {
		pub, _ := amqpMarshaler{}.Marshal(msg)
		_, _ = amqpMarshaler{}.Unmarshal(amqp.Delivery{Acknowledger: nopAck{}, Headers: pub.Headers, Body: pub.Body})
	}
}
