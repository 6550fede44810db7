// Package objectstore is the object-store trigger: it turns changes to the
// objects of an S3-compatible bucket (AWS S3, MinIO, Ceph, OSS through its
// S3 API) into CloudEvents, in one of two modes.
//
//   - Poll ([Poller]) lists the bucket every interval with minio-go and
//     compares the listing with a checkpoint in Redis (per object key: its
//     ETag, modification time and size). New and overwritten objects (ETag
//     changed) are "created", keys gone from the listing "deleted". The
//     checkpoint moves only after the events of a change are submitted, and
//     event ids derive from the object version (key, ETag, modification
//     time), so a restart neither misses a change nor repeats one: a change
//     submitted twice is deduplicated. One replica polls at a time (a
//     [triggers.Lock]); a listing that fails part way changes nothing, so a
//     short listing never looks like deletions.
//   - Notify ([Notifier]) takes S3/MinIO bucket-notification JSON POSTed
//     to a hook path (MinIO's webhook target, or S3 notifications relayed
//     to it) and makes the same events from its records.
//
// # Events
//
// Both modes make the same event shape. Its type is the configured type
// plus ".created" or ".deleted"; its subject the object key; its time the
// object's modification time (poll) or the notification's event time
// (notify; a poll learns of a deletion only when it lists, and uses that
// time); its data an [Object] in JSON. The object's bytes are not copied:
// the CloudEvents dataref extension points at it, "s3://<bucket>/<key>"
// (the key path-escaped), for the function to fetch.
package objectstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tasklane/tasklane/pkg/config"
)

// ExtDataRef is the CloudEvents dataref extension (claim check): where the
// event's real data lives.
const ExtDataRef = "dataref"

// Changes, as Object.Change and the event type's last part name them.
const (
	// Created is a new or overwritten object.
	Created = config.ObjectCreated
	// Deleted is a deleted object.
	Deleted = config.ObjectDeleted
)

// Common is the configuration both modes share.
type Common struct {
	// Name is the trigger's name. Required.
	Name string
	// Tenant owns the events. Required.
	Tenant string
	// Bucket is the bucket watched. Required.
	Bucket string
	// Prefix and Suffix, when set, limit the trigger to matching keys.
	Prefix string
	// Suffix: see Prefix.
	Suffix string
	// Events are the changes that emit events, Created and/or Deleted.
	// Default [Created].
	Events []string
	// EventType is the prefix of the event types: EventType + ".created",
	// EventType + ".deleted". Required.
	EventType string
	// EventSource is the events' source. Default "s3://<bucket>".
	EventSource string
}

func (c *Common) withDefaults() {
	if len(c.Events) == 0 {
		c.Events = []string{Created}
	}
	if c.EventSource == "" && c.Bucket != "" {
		c.EventSource = "s3://" + c.Bucket
	}
}

func (c *Common) validate() error {
	var errs []error
	if c.Name == "" || c.Tenant == "" || c.Bucket == "" || c.EventType == "" {
		errs = append(errs, errors.New("object-store trigger: Name, Tenant, Bucket and EventType are required"))
	}
	for _, e := range c.Events {
		if e != Created && e != Deleted {
			errs = append(errs, errors.New("object-store trigger "+c.Name+": unknown event "+e))
		}
	}
	return errors.Join(errs...)
}

// matches reports whether key is within the prefix and suffix.
func (c *Common) matches(key string) bool {
	return strings.HasPrefix(key, c.Prefix) && strings.HasSuffix(key, c.Suffix)
}

// wants reports whether change emits events.
func (c *Common) wants(change string) bool { return slices.Contains(c.Events, change) }

// Object is the data of an object-store event (JSON).
type Object struct {
	// Change is "created" or "deleted".
	Change string `json:"change"`
	// Bucket is the object's bucket.
	Bucket string `json:"bucket"`
	// Key is the object's key.
	Key string `json:"key"`
	// Size is the object's size in bytes (for a deletion, the last size
	// known; 0 when unknown).
	Size int64 `json:"size"`
	// ETag is the object's ETag, without quotes (for a deletion, the last
	// known; empty when unknown).
	ETag string `json:"etag,omitempty"`
	// Time is when the object was last modified (created), or when the
	// change was seen or notified.
	Time time.Time `json:"time"`
}

// DataRef returns "s3://<bucket>/<key>", the key path-escaped.
func DataRef(bucket, key string) string {
	return (&url.URL{Scheme: "s3", Host: bucket, Path: "/" + key}).String()
}

// ParseDataRef reads a dataref made by DataRef back into bucket and key.
func ParseDataRef(ref string) (bucket, key string, err error) {
	u, err := url.Parse(ref)
	if err != nil {
		return "", "", err
	}
	if u.Scheme != "s3" || u.Host == "" || len(u.Path) < 2 {
		return "", "", errors.New("dataref " + ref + " is not s3://<bucket>/<key>")
	}
	return u.Host, u.Path[1:], nil
}

// eventID identifies one change of one object version: the change, the
// bucket and key, and version, which names the version (ETag and
// modification time when polling, the sequencer when notified).
func eventID(change, bucket, key, version string) string {
	sum := sha256.Sum256([]byte(bucket + "\x00" + key + "\x00" + version))
	return change + "-" + hex.EncodeToString(sum[:16])
}

// cloudEvent builds the event of o.
func (c *Common) cloudEvent(o Object, id string) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource(c.EventSource)
	e.SetType(c.EventType + "." + o.Change)
	e.SetSubject(o.Key)
	if !o.Time.IsZero() {
		e.SetTime(o.Time)
	}
	e.SetExtension(ExtDataRef, DataRef(o.Bucket, o.Key))
	_ = e.SetData(event.ApplicationJSON, o)
	return &e
}
