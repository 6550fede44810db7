package broker

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/tasklane/tasklane/pkg/taskmsg"
)

// amqpMarshaler maps messages to AMQP publishings and back. Unlike
// watermill-amqp's DefaultMarshaler it never rejects a delivery: headers the
// broker adds with non-string values (x-death, x-delivery-count, x-delay)
// are turned into strings or summarised, so a redelivery reaches the handler
// instead of looping in the subscriber.
type amqpMarshaler struct{}

const amqpUUIDHeader = "_watermill_message_uuid"

func (amqpMarshaler) Marshal(msg *message.Message) (amqp.Publishing, error) {
	headers := make(amqp.Table, len(msg.Metadata)+1)
	for k, v := range msg.Metadata {
		headers[k] = v
	}
	headers[amqpUUIDHeader] = msg.UUID
	p := amqp.Publishing{
		Headers:      headers,
		DeliveryMode: amqp.Persistent,
		MessageId:    msg.UUID,
		Timestamp:    time.Now(),
		Body:         msg.Payload,
	}
	if s := msg.Metadata.Get(taskmsg.KeyPriority); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 255 {
			p.Priority = uint8(n)
		}
	}
	return p, nil
}

// errZeroDelivery is Unmarshal's answer to a delivery from a closed
// consumer channel.
var errZeroDelivery = errors.New("delivery not initialized: the consumer channel closed")

func (amqpMarshaler) Unmarshal(d amqp.Delivery) (*message.Message, error) {
	if d.Acknowledger == nil {
		// A zero delivery: watermill-amqp reads the deliveries channel
		// without checking that it is open, so when RabbitMQ cancels the
		// consumer (its queue was deleted) or the channel closes, it hands
		// over zero values. Failing here makes it drop the channel and
		// reconnect instead of passing an empty message on (which Decode
		// would quarantine as junk).
		return nil, errZeroDelivery
	}
	uuid, _ := d.Headers[amqpUUIDHeader].(string)
	if uuid == "" {
		uuid = d.MessageId
	}
	if uuid == "" {
		uuid = watermill.NewUUID()
	}
	msg := message.NewMessage(uuid, d.Body)
	for k, v := range d.Headers {
		switch k {
		case amqpUUIDHeader:
			continue
		case "x-delivery-count":
			msg.Metadata.Set(taskmsg.KeyDeliveryCount, headerString(v))
			continue
		case "x-death":
			msg.Metadata.Set("tl_x_death_count", strconv.FormatInt(deathCount(v), 10))
			continue
		}
		msg.Metadata.Set(k, headerString(v))
	}
	if d.Redelivered {
		msg.Metadata.Set(taskmsg.KeyRedelivered, "true")
	}
	return msg, nil
}

// headerString renders any AMQP table value as a string.
func headerString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// deathCount sums the count fields of an x-death header.
func deathCount(v any) int64 {
	list, ok := v.([]any)
	if !ok {
		return 0
	}
	var n int64
	for _, e := range list {
		t, ok := e.(amqp.Table)
		if !ok {
			continue
		}
		if c, ok := t["count"].(int64); ok {
			n += c
		}
	}
	return n
}
