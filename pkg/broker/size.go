package broker

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Message sizes. RabbitMQ carries a message's properties, its header table
// included (a lane message's metadata: the task's identity and every
// attribute and extension of its event), in one content-header frame, which
// must fit the connection's negotiated frame_max (131072 bytes by default);
// only the body is split across frames. A larger header frame is not
// refused on its own: RabbitMQ closes the whole connection
// (frame_too_large), failing every publish in flight on it, and a publish
// retried on the new connection closes that one too. So the amqp driver
// measures every message against the negotiated frame_max before sending
// it and returns a *TooLargeError (errors.Is ErrTooLarge) instead. The
// redisstream driver bounds metadata by the same default, so a message
// the amqp driver takes (at the default frame_max), the redisstream driver
// takes too (not the reverse: a header frame also carries each entry's
// encoding and the message properties).

// ErrTooLarge is matched (errors.Is) by the error of a publish the broker
// would refuse for the message's size. Nothing was sent, and retrying the
// same message can never succeed: the caller ends the task instead.
var ErrTooLarge = errors.New("message too large for the broker")

// TooLargeError says what part of a message exceeds which broker limit.
type TooLargeError struct {
	// What is the part measured: "header frame" (amqp), "metadata"
	// (redisstream) or "header name" (an AMQP header key over 255 bytes).
	What string
	// Size and Limit are in bytes.
	Size, Limit int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s: %s of %d bytes exceeds the broker's limit of %d bytes", ErrTooLarge, e.What, e.Size, e.Limit)
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// SizeChecker is a publisher that can tell, without sending, whether the
// broker would refuse a message for its size. The publishers the drivers
// hand out implement it.
type SizeChecker interface {
	// CheckSize returns a *TooLargeError for a message the broker would
	// refuse, nil otherwise.
	CheckSize(msg *message.Message) error
}

// CheckSize asks pub whether the broker would refuse msg for its size; nil
// when pub cannot tell.
func CheckSize(pub message.Publisher, msg *message.Message) error {
	if c, ok := pub.(SizeChecker); ok {
		return c.CheckSize(msg)
	}
	return nil
}

// CheckSize passes the question on to the driver's publisher.
func (p sharedPublisher) CheckSize(msg *message.Message) error { return CheckSize(p.Publisher, msg) }

// FrameMaxDefault is RabbitMQ's default frame_max, assumed until a
// connection has negotiated one.
const FrameMaxDefault = 131072

// amqpFrameOverhead is a frame's type, channel and size fields and its end
// byte. frame_max counts them (AMQP 0-9-1 4.2.3); RabbitMQ refuses a frame
// only once its payload exceeds frame_max, 8 bytes later, so a frame the
// check passes always goes through.
const amqpFrameOverhead = 1 + 2 + 4 + 1

// frameMax is the negotiated frame_max of a connection, remembered from the
// last time it was connected (FrameMaxDefault before that); 0 means
// RabbitMQ and the client both set no limit.
type frameMax struct {
	known atomic.Bool
	size  atomic.Int64
}

func (f *frameMax) get(conn *amqpConn) int {
	if conn != nil && conn.IsConnected() {
		if c := conn.Connection(); c != nil {
			// Written by amqp091 while the connection opens, read-only
			// after.
			f.size.Store(int64(c.Config.FrameSize))
			f.known.Store(true)
		}
	}
	if f.known.Load() {
		return int(f.size.Load())
	}
	return FrameMaxDefault
}

// checkAMQPSize returns a *TooLargeError when p's content-header frame (or
// the basic.publish method frame, with exchange and key) would exceed
// limit, or a header name or short string would not fit its one-byte
// length (amqp091 silently truncates those). limit 0: no frame limit.
func checkAMQPSize(p amqp.Publishing, exchange, key string, limit int) error {
	for k := range p.Headers {
		if len(k) > 255 {
			return &TooLargeError{What: fmt.Sprintf("header name %.40q...", k), Size: len(k), Limit: 255}
		}
	}
	for _, s := range []string{exchange, key, p.ContentType, p.ContentEncoding, p.CorrelationId, p.ReplyTo, p.Expiration, p.MessageId, p.Type, p.UserId, p.AppId} {
		if len(s) > 255 {
			return &TooLargeError{What: "short string property", Size: len(s), Limit: 255}
		}
	}
	if limit <= 0 {
		return nil
	}
	if n := amqpHeaderFrameSize(p); n > limit {
		return &TooLargeError{What: "header frame", Size: n, Limit: limit}
	}
	// basic.publish: class, method, ticket, exchange, routing key, bits.
	if n := amqpFrameOverhead + 2 + 2 + 2 + 1 + len(exchange) + 1 + len(key) + 1; n > limit {
		return &TooLargeError{What: "method frame", Size: n, Limit: limit}
	}
	return nil
}

// amqpHeaderFrameSize is the size on the wire of p's content-header frame,
// as amqp091 writes it: class, weight, body size, property flags, then each
// property that is set.
func amqpHeaderFrameSize(p amqp.Publishing) int {
	n := amqpFrameOverhead + 2 + 2 + 8 + 2
	short := func(s string) {
		if s != "" {
			n += 1 + len(s)
		}
	}
	short(p.ContentType)
	short(p.ContentEncoding)
	if len(p.Headers) > 0 {
		n += amqpTableSize(p.Headers)
	}
	if p.DeliveryMode > 0 {
		n++
	}
	if p.Priority > 0 {
		n++
	}
	short(p.CorrelationId)
	short(p.ReplyTo)
	short(p.Expiration)
	short(p.MessageId)
	if !p.Timestamp.IsZero() {
		n += 8
	}
	short(p.Type)
	short(p.UserId)
	short(p.AppId)
	return n
}

// amqpTableSize is the encoded size of a field table: its 4-byte length,
// then per entry a short-string name, a type byte and the value.
func amqpTableSize(t amqp.Table) int {
	n := 4
	for k, v := range t {
		n += 1 + len(k) + 1 + amqpValueSize(v)
	}
	return n
}

// amqpValueSize is the encoded size of a field value, without its type
// byte. Values it does not know are counted generously (a field table is
// never that large in Tasklane's messages).
func amqpValueSize(v any) int {
	switch x := v.(type) {
	case string:
		return 4 + len(x)
	case []byte:
		return 4 + len(x)
	case bool, int8, uint8:
		return 1
	case int16, uint16:
		return 2
	case int32, uint32, float32:
		return 4
	case int, int64, uint64, float64, amqp.Decimal:
		return 8
	case amqp.Table:
		return amqpTableSize(x)
	case []any:
		n := 4
		for _, e := range x {
			n += 1 + amqpValueSize(e)
		}
		return n
	}
	return 4 + len(fmt.Sprint(v))
}

// StreamMaxMetadataBytes bounds a redisstream message's metadata (names
// and values), the same bound as RabbitMQ's default frame_max, so that
// the redisstream driver takes every message the amqp driver takes.
const StreamMaxMetadataBytes = FrameMaxDefault

// checkStreamSize returns a *TooLargeError when msg's metadata exceeds
// StreamMaxMetadataBytes.
func checkStreamSize(msg *message.Message) error {
	n := 0
	for k, v := range msg.Metadata {
		n += len(k) + len(v)
	}
	if n > StreamMaxMetadataBytes {
		return &TooLargeError{What: "metadata", Size: n, Limit: StreamMaxMetadataBytes}
	}
	return nil
}
