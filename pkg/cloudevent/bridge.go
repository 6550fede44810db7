// Package cloudevent converts CloudEvents to Watermill messages and back.
//
// The mapping is binary-mode style: the message payload is the event's data
// bytes, unchanged, and every context attribute and extension travels as a
// string in metadata under the "ce_" prefix. Extension values come back as
// strings, which is what the HTTP binary binding carries anyway.
package cloudevent

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// MetadataPrefix prefixes every CloudEvents attribute in message metadata.
const MetadataPrefix = "ce_"

// Metadata keys of the context attributes.
const (
	KeySpecVersion     = MetadataPrefix + "specversion"
	KeyID              = MetadataPrefix + "id"
	KeySource          = MetadataPrefix + "source"
	KeyType            = MetadataPrefix + "type"
	KeySubject         = MetadataPrefix + "subject"
	KeyTime            = MetadataPrefix + "time"
	KeyDataSchema      = MetadataPrefix + "dataschema"
	KeyDataContentType = MetadataPrefix + "datacontenttype"
)

// ErrNotAnEvent is returned by FromMessage for a message that does not carry
// the required CloudEvents attributes.
var ErrNotAnEvent = errors.New("message carries no CloudEvent")

// ToMessage converts e into a Watermill message with the given UUID. The
// event's data bytes become the payload as they are.
func ToMessage(uuid string, e *event.Event) (*message.Message, error) {
	msg := message.NewMessage(uuid, e.Data())
	if err := SetMetadata(msg.Metadata, e); err != nil {
		return nil, err
	}
	return msg, nil
}

// SetMetadata writes e's context attributes and extensions into md.
func SetMetadata(md message.Metadata, e *event.Event) error {
	md.Set(KeySpecVersion, e.SpecVersion())
	md.Set(KeyID, e.ID())
	md.Set(KeySource, e.Source())
	md.Set(KeyType, e.Type())
	setIf(md, KeySubject, e.Subject())
	if t := e.Time(); !t.IsZero() {
		md.Set(KeyTime, t.UTC().Format(time.RFC3339Nano))
	}
	setIf(md, KeyDataSchema, e.DataSchema())
	setIf(md, KeyDataContentType, e.DataContentType())
	for name, v := range e.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			return fmt.Errorf("formatting extension %q: %w", name, err)
		}
		md.Set(MetadataPrefix+name, s)
	}
	return nil
}

func setIf(md message.Metadata, k, v string) {
	if v != "" {
		md.Set(k, v)
	}
}

// FromMessage rebuilds the CloudEvent carried by msg and validates it.
func FromMessage(msg *message.Message) (*event.Event, error) {
	md := msg.Metadata
	sv := md.Get(KeySpecVersion)
	if sv == "" || md.Get(KeyID) == "" || md.Get(KeyType) == "" || md.Get(KeySource) == "" {
		return nil, ErrNotAnEvent
	}
	e := event.New(sv)
	e.SetID(md.Get(KeyID))
	e.SetSource(md.Get(KeySource))
	e.SetType(md.Get(KeyType))
	if v := md.Get(KeySubject); v != "" {
		e.SetSubject(v)
	}
	if v := md.Get(KeyTime); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", KeyTime, err)
		}
		e.SetTime(t)
	}
	if v := md.Get(KeyDataSchema); v != "" {
		e.SetDataSchema(v)
	}
	if v := md.Get(KeyDataContentType); v != "" {
		e.SetDataContentType(v)
	}
	for k, v := range md {
		name, ok := strings.CutPrefix(k, MetadataPrefix)
		if !ok || isContextAttribute(name) {
			continue
		}
		e.SetExtension(name, v)
	}
	if len(msg.Payload) > 0 {
		e.DataEncoded = msg.Payload
	}
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("validating event: %w", err)
	}
	return &e, nil
}

func isContextAttribute(name string) bool {
	switch name {
	case "specversion", "id", "source", "type", "subject", "time", "dataschema", "datacontenttype":
		return true
	}
	return false
}
