package objectstore

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/triggers"
)

// MaxNotificationBytesDefault is the default NotifyConfig.MaxBodyBytes.
const MaxNotificationBytesDefault = 4 << 20

// NotifyConfig configures a Notifier.
type NotifyConfig struct {
	Common
	// Path is the hook path under /hooks/, without surrounding slashes.
	// Required.
	Path string
	// Token, when set, must arrive as "Authorization: Bearer <token>" (the
	// MinIO webhook target's auth_token). Default none.
	Token string
	// MaxBodyBytes bounds a notification. Default 4 MiB.
	MaxBodyBytes int64
}

// Notifier is an object-store trigger in notify mode: an http.Handler for
// S3/MinIO bucket-notification JSON.
type Notifier struct {
	cfg NotifyConfig
	env triggers.Env
	rep *triggers.Reporter
	triggers.HookLife
}

// NewNotifier returns a notify-mode trigger.
func NewNotifier(cfg NotifyConfig, env triggers.Env) (*Notifier, error) {
	env = env.WithDefaults()
	cfg.withDefaults()
	cfg.Path = strings.Trim(cfg.Path, "/")
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = MaxNotificationBytesDefault
	}
	errs := []error{cfg.validate(), env.Validate()}
	if cfg.Path == "" {
		errs = append(errs, fmt.Errorf("object-store trigger %s: Path is required in notify mode", cfg.Name))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	env.Logger = env.Logger.With("component", "trigger", "trigger", cfg.Name, "kind", config.TriggerKindObjectStore, "bucket", cfg.Bucket)
	rep := triggers.NewReporter(env, cfg.Name, config.TriggerKindObjectStore)
	return &Notifier{cfg: cfg, env: env, rep: rep, HookLife: triggers.HookLife{Rep: rep, Background: triggers.Background{What: "object-store trigger " + cfg.Name}}}, nil
}

// Name is the trigger's name.
func (n *Notifier) Name() string { return n.cfg.Name }

// Kind is "objectstore".
func (n *Notifier) Kind() string { return config.TriggerKindObjectStore }

// Path is the hook path.
func (n *Notifier) Path() string { return n.cfg.Path }

// Status is the trigger's state in this process.
func (n *Notifier) Status() triggers.Status { return n.rep.Status() }

// Notification is an S3 (or MinIO) bucket notification: the fields of
// https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html
// the trigger reads.
type Notification struct {
	// EventName is MinIO's summary of the first record.
	EventName string `json:"EventName"`
	// Records are the changes.
	Records []Record `json:"Records"`
}

// Record is one change of a Notification.
type Record struct {
	// EventName is "s3:ObjectCreated:Put" (MinIO) or "ObjectCreated:Put"
	// (S3), ObjectRemoved:Delete, ...
	EventName string `json:"eventName"`
	// EventTime is when the change happened (ISO 8601).
	EventTime string `json:"eventTime"`
	// S3 names the bucket and object.
	S3 struct {
		Bucket struct {
			Name string `json:"name"`
		} `json:"bucket"`
		Object struct {
			// Key is URL-encoded (form encoding: "+" is a space).
			Key       string `json:"key"`
			Size      int64  `json:"size"`
			ETag      string `json:"eTag"`
			VersionID string `json:"versionId"`
			Sequencer string `json:"sequencer"`
		} `json:"object"`
	} `json:"s3"`
}

// Objects reads the changes of a notification body: the records of
// bucket, with keys decoded, as Created or Deleted (other events, such as
// ObjectAccessed, are left out), with the version string that identifies
// each change.
func Objects(body []byte, bucket string) ([]Object, []string, error) {
	var nt Notification
	if err := json.Unmarshal(body, &nt); err != nil {
		return nil, nil, fmt.Errorf("reading bucket notification: %w", err)
	}
	var objs []Object
	var versions []string
	for i, r := range nt.Records {
		name := strings.TrimPrefix(r.EventName, "s3:")
		var change string
		switch {
		case strings.HasPrefix(name, "ObjectCreated:"):
			change = Created
		case strings.HasPrefix(name, "ObjectRemoved:"):
			change = Deleted
		default:
			continue
		}
		if r.S3.Bucket.Name != bucket {
			continue
		}
		key, err := url.QueryUnescape(r.S3.Object.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("reading bucket notification: Records[%d].s3.object.key: %w", i, err)
		}
		t, _ := time.Parse(time.RFC3339Nano, r.EventTime)
		o := r.S3.Object
		objs = append(objs, Object{Change: change, Bucket: bucket, Key: key, Size: o.Size, ETag: strings.Trim(o.ETag, `"`), Time: t})
		v := o.Sequencer
		if v == "" {
			v = o.VersionID + "@" + o.ETag + "@" + r.EventTime
		}
		versions = append(versions, v)
	}
	return objs, versions, nil
}

// ServeHTTP takes one bucket notification: 202 with the tasks made, 200
// with none when no record is for this trigger, 401 without the token, 400
// for a body that is not a notification.
func (n *Notifier) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodHead || r.Method == http.MethodGet:
		rw.WriteHeader(http.StatusOK) // reachability checks of notification targets
		return
	case r.Method != http.MethodPost:
		rw.Header().Set("Allow", "POST, HEAD")
		triggers.WriteError(rw, http.StatusMethodNotAllowed, "method: use POST")
		return
	case n.Stopped():
		rw.Header().Set("Retry-After", "1")
		triggers.WriteError(rw, http.StatusServiceUnavailable, "trigger "+n.cfg.Name+" is stopped")
		return
	case n.cfg.Token != "" && !n.authorized(r):
		rw.Header().Set("WWW-Authenticate", `Bearer realm="tasklane"`)
		triggers.WriteError(rw, http.StatusUnauthorized, "authorization: missing or wrong token")
		return
	}
	ctx := r.Context()
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, n.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			triggers.WriteError(rw, http.StatusRequestEntityTooLarge, fmt.Sprintf("body: larger than %d bytes", n.cfg.MaxBodyBytes))
			return
		}
		triggers.WriteError(rw, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	objs, versions, err := Objects(body, n.cfg.Bucket)
	if err != nil {
		triggers.WriteError(rw, http.StatusBadRequest, err.Error())
		return
	}
	var events []*event.Event
	for i, o := range objs {
		if n.cfg.matches(o.Key) && n.cfg.wants(o.Change) {
			events = append(events, n.cfg.cloudEvent(o, eventID(o.Change, o.Bucket, o.Key, versions[i])))
		}
	}
	if len(events) == 0 {
		triggers.WriteJSON(rw, http.StatusOK, contracts.SubmitResponse{Tasks: []contracts.SubmittedTask{}})
		return
	}
	tasks, err := n.env.Submit(ctx, n.cfg.Tenant, events)
	if err != nil {
		n.rep.Failed(ctx, "submitting bucket-notification events", err)
		if refused, ok := triggers.Refused(err); ok {
			triggers.WriteRefused(rw, refused)
			return
		}
		var ie *ingest.Error
		if errors.As(err, &ie) {
			triggers.WriteError(rw, ie.Status, ie.Msg)
			return
		}
		rw.Header().Set("Retry-After", "1")
		triggers.WriteError(rw, http.StatusServiceUnavailable, "the events could not be recorded; retry")
		return
	}
	n.rep.Fired(ctx, events[len(events)-1].ID(), len(events))
	triggers.WriteJSON(rw, http.StatusAccepted, contracts.SubmitResponse{Tasks: tasks})
}

// authorized compares the bearer token in constant time.
func (n *Notifier) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	a, b := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256([]byte(n.cfg.Token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}
