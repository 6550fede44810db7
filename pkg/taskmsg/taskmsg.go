// Package taskmsg defines the message a lane carries for one task: the
// submitted CloudEvent (see package cloudevent) plus the task's identity in
// "tl_" metadata, and its stored form in the ledger.
package taskmsg

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tasklane/tasklane/pkg/cloudevent"
)

// Metadata keys Tasklane adds to a lane message.
const (
	KeyTaskID   = "tl_task_id"
	KeyTenant   = "tl_tenant"
	KeyFunction = "tl_function"
	KeyPriority = "tl_priority"
	// KeyRedelivered is set to "true" by a broker driver when the broker
	// flags the delivery as a redelivery.
	KeyRedelivered = "tl_redelivered"
	// KeyDeliveryCount carries the broker's delivery count when it has one
	// (RabbitMQ quorum queues' x-delivery-count).
	KeyDeliveryCount = "tl_delivery_count"
	// KeyUndecodable is set by a broker driver that could not read the
	// delivery; its value says why. Such messages are quarantined.
	KeyUndecodable = "tl_undecodable"
	// KeyTraceParent and KeyTraceState carry the W3C trace context of the
	// task's ingest span (set only while tracing is on), so that its
	// attempts, which start from the stored message, continue its trace.
	KeyTraceParent = "tl_traceparent"
	KeyTraceState  = "tl_tracestate"
	// KeyDue is when the task became due (Unix microseconds), for its
	// queue wait in traces.
	KeyDue = "tl_due"
)

// Ref identifies the task a lane message is for.
type Ref struct {
	TaskID   string
	Tenant   string
	Function string
	Priority int
}

// New builds the lane message for task ref made from event e. The message
// UUID is the task id, so broker-level ids and task ids agree.
func New(ref Ref, e *event.Event) (*message.Message, error) {
	msg, err := cloudevent.ToMessage(ref.TaskID, e)
	if err != nil {
		return nil, err
	}
	msg.Metadata.Set(KeyTaskID, ref.TaskID)
	msg.Metadata.Set(KeyTenant, ref.Tenant)
	msg.Metadata.Set(KeyFunction, ref.Function)
	msg.Metadata.Set(KeyPriority, strconv.Itoa(ref.Priority))
	return msg, nil
}

// ErrUndecodable wraps every reason Parse rejects a message for.
var ErrUndecodable = errors.New("undecodable task message")

// Parse reads the task identity and the event back from a lane message.
func Parse(msg *message.Message) (Ref, *event.Event, error) {
	md := msg.Metadata
	if why := md.Get(KeyUndecodable); why != "" {
		return Ref{}, nil, fmt.Errorf("%w: %s", ErrUndecodable, why)
	}
	ref := Ref{TaskID: md.Get(KeyTaskID), Tenant: md.Get(KeyTenant), Function: md.Get(KeyFunction)}
	if ref.TaskID == "" || ref.Tenant == "" || ref.Function == "" {
		return Ref{}, nil, fmt.Errorf("%w: missing %s, %s or %s", ErrUndecodable, KeyTaskID, KeyTenant, KeyFunction)
	}
	if p := md.Get(KeyPriority); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil {
			return Ref{}, nil, fmt.Errorf("%w: %s %q is not a number", ErrUndecodable, KeyPriority, p)
		}
		ref.Priority = n
	}
	e, err := cloudevent.FromMessage(msg)
	if err != nil {
		return Ref{}, nil, fmt.Errorf("%w: %w", ErrUndecodable, err)
	}
	return ref, e, nil
}

// Stored is a lane message as the ledger keeps it, so that the scheduler can
// put a task back on a lane without the original request.
type Stored struct {
	UUID     string            `json:"uuid"`
	Metadata map[string]string `json:"metadata"`
	Payload  []byte            `json:"payload,omitempty"`
}

// Encode serialises msg for the ledger.
func Encode(msg *message.Message) ([]byte, error) {
	return json.Marshal(Stored{UUID: msg.UUID, Metadata: msg.Metadata, Payload: msg.Payload})
}

// Decode rebuilds a message serialised by Encode.
func Decode(b []byte) (*message.Message, error) {
	var s Stored
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding stored message: %w", err)
	}
	msg := message.NewMessage(s.UUID, s.Payload)
	for k, v := range s.Metadata {
		msg.Metadata.Set(k, v)
	}
	return msg, nil
}
