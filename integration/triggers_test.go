//go:build integration

package integration

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ledger"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/triggers"
	"github.com/tasklane/tasklane/triggers/cron"
	"github.com/tasklane/tasklane/triggers/objectstore"
	"github.com/tasklane/tasklane/triggers/objectstore/objectstoretest"
)

// eventRecorder is a function that records the CloudEvents it is called
// with (binary mode) and answers 200.
type eventRecorder struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []recordedEvent
}

type recordedEvent struct {
	ID, Type, Source, Subject, DataRef string
	Header                             http.Header
	Data                               []byte
}

func newEventRecorder(t *testing.T) *eventRecorder {
	r := &eventRecorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, recordedEvent{
			ID: req.Header.Get("Ce-Id"), Type: req.Header.Get("Ce-Type"), Source: req.Header.Get("Ce-Source"),
			Subject: req.Header.Get("Ce-Subject"), DataRef: req.Header.Get("Ce-Dataref"), Header: req.Header.Clone(), Data: body,
		})
		r.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *eventRecorder) events() []recordedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func (r *eventRecorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// callsByID counts the calls per event id.
func (r *eventRecorder) callsByID() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, e := range r.got {
		out[e.ID]++
	}
	return out
}

// countTasks counts the tenant's tasks in the ledger.
func countTasks(t *testing.T, e *env, tenant string) int {
	t.Helper()
	n, cursor := 0, ""
	for {
		page, err := e.ledger().List(context.Background(), tenant, ledger.ListFilter{Limit: ledger.ListLimitMax, Cursor: cursor})
		require.NoError(t, err)
		n += len(page.Tasks)
		if page.NextCursor == "" {
			return n
		}
		cursor = page.NextCursor
	}
}

func githubSignature(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// TestIntegrationTriggerWebhookSignatures posts to a signed webhook: only
// the request with a valid signature is queued; a missing or wrong
// signature and a replay of the valid request under a new delivery id are
// refused with 401, another body under the used delivery id with 409, and
// nothing of them reaches the ledger or the function; the identical
// delivery again (a provider's retry after a lost answer) is answered 202
// with the task it made, marked duplicate.
func TestIntegrationTriggerWebhookSignatures(t *testing.T) {
	const secret = "whsec-integration"
	t.Setenv("TL_IT_SIGNUP_SECRET", secret)
	fn := newEventRecorder(t)
	e := startTasklane(t, config.BrokerDriverAMQP, fmt.Sprintf(`
functions:
  - {name: welcome, events: [com.example.user.signedup], endpoint: %q}
triggers:
  - name: signup
    http:
      path: signup
      id_header: X-GitHub-Delivery
      signature: {secret_env: TL_IT_SIGNUP_SECRET}
    event: {type: com.example.user.signedup, source: /hooks/signup}
`, fn.srv.URL))
	body := `{"email":"ada@example.com"}`
	hook := func(header map[string]string, b string) (int, string) {
		status, out := e.post("/hooks/signup", "", "application/json", header, []byte(b))
		return status, string(out)
	}
	valid := map[string]string{"X-Hub-Signature-256": githubSignature(secret, body), "X-GitHub-Delivery": "delivery-1"}

	status, out := hook(map[string]string{"X-GitHub-Delivery": "delivery-2"}, body)
	require.Equal(t, http.StatusUnauthorized, status, "missing signature: %s", out)
	require.Contains(t, out, "missing signature")
	status, out = hook(map[string]string{"X-Hub-Signature-256": githubSignature("not-the-secret", body), "X-GitHub-Delivery": "delivery-3"}, body)
	require.Equal(t, http.StatusUnauthorized, status, "wrong secret: %s", out)
	status, out = hook(map[string]string{"X-Hub-Signature-256": githubSignature(secret, body), "X-GitHub-Delivery": "delivery-4"}, `{"email":"eve@example.com"}`)
	require.Equal(t, http.StatusUnauthorized, status, "body changed after signing: %s", out)

	status, out = hook(valid, body)
	require.Equal(t, http.StatusAccepted, status, out)
	var sr contracts.SubmitResponse
	require.NoError(t, json.Unmarshal([]byte(out), &sr))
	require.Len(t, sr.Tasks, 1)
	require.Equal(t, "delivery-1", sr.Tasks[0].EventID)

	status, out = hook(valid, body)
	require.Equal(t, http.StatusAccepted, status, "identical retry: %s", out)
	var again contracts.SubmitResponse
	require.NoError(t, json.Unmarshal([]byte(out), &again))
	require.Len(t, again.Tasks, 1)
	require.True(t, again.Tasks[0].Duplicate, "identical retry: %s", out)
	require.Equal(t, sr.Tasks[0].ID, again.Tasks[0].ID)
	other := `{"email":"eve@example.com"}`
	status, out = hook(map[string]string{"X-Hub-Signature-256": githubSignature(secret, other), "X-GitHub-Delivery": "delivery-1"}, other)
	require.Equal(t, http.StatusConflict, status, "another body under a used delivery id: %s", out)
	require.Contains(t, out, "already accepted with another body")
	// The delivery id is not signed: replaying the captured request under
	// a new one is still a replay.
	status, out = hook(map[string]string{"X-Hub-Signature-256": valid["X-Hub-Signature-256"], "X-GitHub-Delivery": "delivery-5"}, body)
	require.Equal(t, http.StatusUnauthorized, status, "replay with a new delivery id: %s", out)
	require.Contains(t, out, "replayed request")

	testkit.Eventually(t, 30*time.Second, func() bool { return fn.len() >= 1 }, "the valid request's task ran")
	task, err := e.ledger().Get(context.Background(), config.DefaultTenant, sr.Tasks[0].ID)
	require.NoError(t, err)
	testkit.Eventually(t, 30*time.Second, func() bool {
		task, err = e.ledger().Get(context.Background(), config.DefaultTenant, sr.Tasks[0].ID)
		return err == nil && task.State == contracts.StateSucceeded
	}, "the task succeeded")
	require.Equal(t, 1, countTasks(t, e, config.DefaultTenant), "only the valid request was queued")
	got := fn.events()
	require.Len(t, got, 1)
	require.Equal(t, "delivery-1", got[0].ID)
	require.Equal(t, "com.example.user.signedup", got[0].Type)
	require.Equal(t, "/hooks/signup", got[0].Source)
	require.JSONEq(t, body, string(got[0].Data), "the body is the event's data, unchanged")
}

// TestIntegrationTriggerCronTwoProcesses runs an @every 1s cron trigger in
// two Tasklane processes (triggers role) for 10 s, stopping the one that
// fires half way: every second fires exactly once, without gaps, counted
// by event id at the function, and no fire is even submitted twice.
func TestIntegrationTriggerCronTwoProcesses(t *testing.T) {
	fn := newEventRecorder(t)
	e := newStack(t, config.BrokerDriverAMQP, fmt.Sprintf(`
functions:
  - {name: tick, events: [com.example.tick], endpoint: %q}
triggers:
  - name: every-second
    cron: {schedule: "@every 1s"}
    event: {type: com.example.tick, source: /triggers/every-second}
`, fn.srv.URL))
	e.start("gateway", "dispatcher", "scheduler", "notifier")
	one := e.spawn("triggers")
	two := e.spawn("triggers")
	procs := map[int]*proc{one.cmd.Process.Pid: one, two.cmd.Process.Pid: two}
	store := triggers.NewStore(e.rdb, e.prefix)

	// The holder: the owner in the trigger's state is "<host>:<pid>:<id>".
	holder := func() *proc {
		recs, err := store.Read(context.Background(), "every-second")
		require.NoError(t, err)
		parts := strings.Split(recs["every-second"].Owner, ":")
		if len(parts) < 3 {
			return nil
		}
		pid, _ := strconv.Atoi(parts[len(parts)-2])
		return procs[pid]
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return holder() != nil && fn.len() > 0 }, "a process fires")
	start := time.Now().Truncate(time.Second).Add(time.Second)
	end := start.Add(9 * time.Second) // fires start..end: 10 of them

	testkit.Eventually(t, 15*time.Second, func() bool { return time.Now().After(start.Add(4 * time.Second)) }, "half way")
	first := holder()
	first.stop() // SIGTERM: releases the lock, the other takes over
	testkit.Eventually(t, 20*time.Second, func() bool {
		h := holder()
		return h != nil && h != first
	}, "the other process took over")
	testkit.Eventually(t, 30*time.Second, func() bool {
		ids := fn.callsByID()
		_, ok := ids[cron.EventID("every-second", end)]
		return ok
	}, "the fire at %s ran", end)

	calls := fn.callsByID()
	for ts := start; !ts.After(end); ts = ts.Add(time.Second) {
		id := cron.EventID("every-second", ts)
		require.Equal(t, 1, calls[id], "fire %s ran exactly once", id)
	}
	for id, n := range calls {
		require.Equal(t, 1, n, "fire %s ran %d times", id, n)
	}
	// Not only deduplicated: each fire was submitted once, by one process.
	// Both processes stopped, nothing submits any more: compare once.
	for _, p := range procs {
		if p.running() {
			p.stop()
		}
	}
	recs, err := store.Read(context.Background(), "every-second")
	require.NoError(t, err)
	require.Equal(t, countTasks(t, e, config.DefaultTenant), int(recs["every-second"].Fires), "submissions equal tasks")
}

// TestIntegrationTriggerObjectStorePoll polls an in-process S3 server
// (gofakes3, through minio-go) from a Tasklane process that is restarted
// twice: 200 uploads, 20 overwrites and 10 deletes make exactly 230
// events, each run once, none lost or repeated.
func TestIntegrationTriggerObjectStorePoll(t *testing.T) {
	s3 := objectstoretest.NewServer(t)
	s3.MakeBucket(t, "images")
	t.Setenv("TL_IT_S3_KEY", objectstoretest.AccessKey)
	t.Setenv("TL_IT_S3_SECRET", objectstoretest.SecretKey)
	fn := newEventRecorder(t)
	e := newStack(t, config.BrokerDriverAMQP, fmt.Sprintf(`
functions:
  - {name: thumbnail, events: [com.example.image.created, com.example.image.deleted], endpoint: %q}
triggers:
  - name: images
    objectstore:
      endpoint: %q
      region: %s
      bucket: images
      events: [created, deleted]
      poll_interval: 1s
      access_key_env: TL_IT_S3_KEY
      secret_key_env: TL_IT_S3_SECRET
    event: {type: com.example.image}
`, fn.srv.URL, s3.URL, objectstoretest.Region))
	e.start("gateway", "dispatcher", "scheduler", "notifier")
	trig := e.spawn("triggers")
	store := triggers.NewStore(e.rdb, e.prefix)
	polls := func() int64 { // the trigger's next poll, as a counter of polls done
		recs, err := store.Read(context.Background(), "images")
		require.NoError(t, err)
		return recs["images"].NextFire.UnixMilli()
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return polls() > 0 }, "the first poll recorded the (empty) bucket")

	type change struct{ Type, Key, ETag string }
	want := map[change]int{}
	put := func(key, body string) {
		info := s3.Put(t, "images", key, body)
		want[change{"com.example.image.created", key, info.ETag}]++
	}
	del := func(key string) {
		info := s3.Stat(t, "images", key)
		s3.Delete(t, "images", key)
		want[change{"com.example.image.deleted", key, info.ETag}]++
	}
	key := func(i int) string { return fmt.Sprintf("uploads/img-%03d.jpg", i) }
	got := func() map[change]int {
		out := map[change]int{}
		for _, ev := range fn.events() {
			var o objectstore.Object
			require.NoError(t, json.Unmarshal(ev.Data, &o), "data of %s", ev.ID)
			out[change{ev.Type, ev.Subject, o.ETag}]++
		}
		return out
	}

	for i := range 100 {
		put(key(i), "v1 of "+key(i))
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return fn.len() > 0 }, "the first uploads are seen")
	trig.stop() // restart 1, while the first uploads may be in flight
	for i := 100; i < 200; i++ {
		put(key(i), "v1 of "+key(i))
	}
	trig.start()
	testkit.Eventually(t, 60*time.Second, func() bool { return fn.len() >= 200 }, "200 uploads seen (%d)", fn.len())

	for i := range 10 {
		put(key(i), "v2 of "+key(i)) // overwrites 1-10
	}
	for i := 100; i < 105; i++ {
		del(key(i)) // deletes 1-5
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return fn.len() > 200 }, "the first changes are seen")
	trig.stop() // restart 2, while they may be in flight
	for i := 10; i < 20; i++ {
		put(key(i), "v2 of "+key(i)) // overwrites 11-20
	}
	for i := 105; i < 110; i++ {
		del(key(i)) // deletes 6-10
	}
	trig.start()
	require.Equal(t, 230, sum(want), "200 uploads, 20 overwrites, 10 deletes")
	testkit.Eventually(t, 60*time.Second, func() bool { return fn.len() >= 230 }, "230 events (%d)", fn.len())

	// Let the trigger poll twice more: nothing else may come.
	p := polls()
	testkit.Eventually(t, 30*time.Second, func() bool { return polls() > p }, "a poll after the last event")
	p = polls()
	testkit.Eventually(t, 30*time.Second, func() bool { return polls() > p }, "and another")
	require.Equal(t, want, got(), "exactly the expected events")
	for id, n := range fn.callsByID() {
		require.Equal(t, 1, n, "event %s ran once", id)
	}
	require.Equal(t, 230, countTasks(t, e, config.DefaultTenant))
	for _, ev := range fn.events() {
		require.Equal(t, objectstore.DataRef("images", ev.Subject), ev.DataRef)
		require.Equal(t, "s3://images", ev.Source)
	}
}

func sum[K comparable](m map[K]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestIntegrationTriggerObjectStoreNotify posts a MinIO bucket notification
// to a notify trigger and checks the event has the shape of a poll event
// for the same object.
func TestIntegrationTriggerObjectStoreNotify(t *testing.T) {
	s3 := objectstoretest.NewServer(t)
	s3.MakeBucket(t, "images")
	t.Setenv("TL_IT_MINIO_TOKEN", "minio-webhook-token")
	fn := newEventRecorder(t)
	e := startTasklane(t, config.BrokerDriverAMQP, fmt.Sprintf(`
functions:
  - {name: thumbnail, events: [com.example.image.created, com.example.image.deleted], endpoint: %q}
triggers:
  - name: images-poll
    objectstore: {endpoint: %q, region: %s, bucket: images, prefix: "photos/", poll_interval: 1s}
    event: {type: com.example.image}
  - name: images-notify
    objectstore: {mode: notify, bucket: images, path: s3/images, token_env: TL_IT_MINIO_TOKEN, events: [created, deleted]}
    event: {type: com.example.image}
`, fn.srv.URL, s3.URL, objectstoretest.Region))
	store := triggers.NewStore(e.rdb, e.prefix)
	testkit.Eventually(t, 30*time.Second, func() bool {
		recs, err := store.Read(context.Background(), "images-poll")
		return err == nil && !recs["images-poll"].NextFire.IsZero()
	}, "the first poll recorded the bucket")

	const key = "photos/summer 2026/ä.jpg"
	s3.Put(t, "images", key, "jpeg bytes")
	testkit.Eventually(t, 30*time.Second, func() bool { return fn.len() == 1 }, "the poll event ran")

	body, err := os.ReadFile("../triggers/objectstore/testdata/minio-put.json")
	require.NoError(t, err)
	status, out := e.post("/hooks/s3/images", "", "application/json", nil, body)
	require.Equal(t, http.StatusUnauthorized, status, "without the token: %s", out)
	status, out = e.post("/hooks/s3/images", "", "application/json", map[string]string{"Authorization": "Bearer minio-webhook-token"}, body)
	require.Equal(t, http.StatusAccepted, status, string(out))
	testkit.Eventually(t, 30*time.Second, func() bool { return fn.len() == 2 }, "the notified event ran")

	evs := fn.events()
	polled, notified := evs[0], evs[1]
	require.Equal(t, "com.example.image.created", notified.Type)
	require.Equal(t, key, notified.Subject)
	require.Equal(t, "s3://images/photos/summer%202026/%C3%A4.jpg", notified.DataRef)
	for _, f := range []func(recordedEvent) string{
		func(r recordedEvent) string { return r.Type },
		func(r recordedEvent) string { return r.Source },
		func(r recordedEvent) string { return r.Subject },
		func(r recordedEvent) string { return r.DataRef },
		func(r recordedEvent) string { return r.Header.Get("Content-Type") },
	} {
		require.Equal(t, f(polled), f(notified))
	}
	var po, no map[string]any
	require.NoError(t, json.Unmarshal(polled.Data, &po))
	require.NoError(t, json.Unmarshal(notified.Data, &no))
	require.Equal(t, slices.Sorted(maps.Keys(po)), slices.Sorted(maps.Keys(no)), "the same data fields")
	for _, k := range []string{"change", "bucket", "key", "size"} {
		require.Equal(t, po[k], no[k], k)
	}
	// The recorded notification's ETag is of other bytes; both are bare.
	require.NotContains(t, po["etag"], `"`)
	require.Equal(t, "6c1b2b56a9e0b5a7a4f4e1e3e2d8c1b0", no["etag"])
	require.Equal(t, 2, countTasks(t, e, config.DefaultTenant))

	// GET /v1/triggers lists both with their state.
	status, out = e.get("/v1/triggers", "")
	require.Equal(t, http.StatusOK, status, string(out))
	var list contracts.TriggerList
	require.NoError(t, json.Unmarshal(out, &list))
	require.Len(t, list.Triggers, 2)
	for _, v := range list.Triggers {
		require.Equal(t, "running", v.State, v.Name)
		require.EqualValues(t, 1, v.Fires, v.Name)
	}
}

// TestIntegrationTriggerThumbnailDemo runs the demo of examples/: the
// config examples/triggers.yaml (its store and function addresses pointed
// at the test's), the example function examples/thumbnail as a process of
// its own, and an image uploaded to the bucket: the poll trigger makes a
// task, the function writes the thumbnail next to the image.
func TestIntegrationTriggerThumbnailDemo(t *testing.T) {
	s3 := objectstoretest.NewServer(t)
	s3.MakeBucket(t, "images")
	t.Setenv("AWS_ACCESS_KEY_ID", objectstoretest.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", objectstoretest.SecretKey)
	t.Setenv("GITHUB_WEBHOOK_SECRET", "change-me")
	t.Setenv("MINIO_WEBHOOK_TOKEN", "change-me-too")

	// The example function, built and run as the README says.
	bin := filepath.Join(t.TempDir(), "thumbnail")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/tasklane/tasklane/examples/thumbnail").CombinedOutput()
	require.NoError(t, err, "%s", out)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	fnAddr := ln.Addr().String()
	require.NoError(t, ln.Close())
	fn := exec.Command(bin, "-addr", fnAddr, "-s3-endpoint", s3.URL, "-s3-region", objectstoretest.Region)
	var fnLog strings.Builder
	fn.Stdout, fn.Stderr = &fnLog, &fnLog
	require.NoError(t, fn.Start())
	t.Cleanup(func() {
		_ = fn.Process.Kill()
		_ = fn.Wait()
		if t.Failed() {
			t.Logf("thumbnail function log:\n%s", fnLog.String())
		}
	})
	testkit.Eventually(t, 20*time.Second, func() bool {
		c, err := net.Dial("tcp", fnAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "the thumbnail function listens")

	doc, err := os.ReadFile("../examples/triggers.yaml")
	require.NoError(t, err)
	yamlBody := strings.ReplaceAll(string(doc), "http://127.0.0.1:9090", s3.URL)
	yamlBody = strings.ReplaceAll(yamlBody, "http://127.0.0.1:9000/thumbnail", "http://"+fnAddr+"/thumbnail")
	require.NotEqual(t, string(doc), yamlBody)
	e := startTasklane(t, config.BrokerDriverAMQP, yamlBody)
	store := triggers.NewStore(e.rdb, e.prefix)
	testkit.Eventually(t, 30*time.Second, func() bool {
		recs, err := store.Read(context.Background(), "images")
		return err == nil && !recs["images"].NextFire.IsZero()
	}, "the first poll recorded the bucket")

	var img bytes.Buffer
	require.NoError(t, png.Encode(&img, image.NewGray(image.Rect(0, 0, 1024, 768))))
	s3.Put(t, "images", "uploads/cat.png", img.String())
	testkit.Eventually(t, 60*time.Second, func() bool {
		_, err := s3.Client.StatObject(context.Background(), "images", "thumbnails/uploads/cat.png.png", minio.StatObjectOptions{})
		return err == nil
	}, "the thumbnail was written")
	obj, err := s3.Client.GetObject(context.Background(), "images", "thumbnails/uploads/cat.png.png", minio.GetObjectOptions{})
	require.NoError(t, err)
	th, err := png.Decode(obj)
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, 128, 96), th.Bounds())

	var task contracts.Task
	testkit.Eventually(t, 30*time.Second, func() bool {
		page, err := e.ledger().List(context.Background(), "acme", ledger.ListFilter{Function: "thumbnail"})
		if err != nil || len(page.Tasks) != 1 {
			return false
		}
		task = page.Tasks[0]
		return task.State == contracts.StateSucceeded
	}, "one thumbnail task, succeeded")
	require.Equal(t, "com.example.image.created", task.Event.Type)
	require.Equal(t, "uploads/cat.png", task.Event.Subject)
	require.JSONEq(t, `{"source":"s3://images/uploads/cat.png","thumbnail":"s3://images/thumbnails/uploads/cat.png.png","width":128,"height":96}`, string(task.Result))
}

// TestIntegrationTriggerReloadSIGHUP edits the config of a running
// triggers process and sends SIGHUP: the webhook moves to its new path,
// and the cron trigger, replaced because its config changed, fires every
// second across the reload exactly once, without a gap.
func TestIntegrationTriggerReloadSIGHUP(t *testing.T) {
	fn := newEventRecorder(t)
	e := newStack(t, config.BrokerDriverAMQP, fmt.Sprintf(`
functions:
  - {name: tick, events: [com.example.tick, com.example.signup], endpoint: %q}
triggers:
  - name: every-second
    cron: {schedule: "@every 1s"}
    event: {type: com.example.tick, source: /triggers/every-second}
  - name: signup
    http: {path: signup}
    event: {type: com.example.signup, source: /hooks/signup}
`, fn.srv.URL))
	e.start("gateway", "dispatcher", "scheduler", "notifier")
	trig := e.spawn("triggers")
	base := trig.url()
	hook := func(path string) int {
		resp, err := http.Post(base+"/hooks/"+path, "application/json", strings.NewReader(`{"a":1}`))
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return fn.len() > 0 }, "the cron fires")
	start := time.Now().Truncate(time.Second).Add(time.Second)
	require.Equal(t, http.StatusAccepted, hook("signup"))

	doc, err := os.ReadFile(trig.config)
	require.NoError(t, err)
	edited := strings.Replace(string(doc), `cron: {schedule: "@every 1s"}`, `cron: {schedule: "@every 1s", missed: catch_up}`, 1)
	edited = strings.Replace(edited, `http: {path: signup}`, `http: {path: signup/v2}`, 1)
	require.NotEqual(t, string(doc), edited)
	require.NoError(t, os.WriteFile(trig.config, []byte(edited), 0o600))
	testkit.Eventually(t, 10*time.Second, func() bool { return time.Now().After(start.Add(2 * time.Second)) }, "two fires before the reload")
	require.NoError(t, trig.cmd.Process.Signal(syscall.SIGHUP))
	testkit.Eventually(t, 20*time.Second, func() bool {
		b, _ := os.ReadFile(trig.logPath)
		return strings.Contains(string(b), "config reloaded")
	}, "the process reloaded its triggers")
	require.Equal(t, http.StatusNotFound, hook("signup"))
	require.Equal(t, http.StatusAccepted, hook("signup/v2"))

	end := start.Add(7 * time.Second)
	testkit.Eventually(t, 30*time.Second, func() bool {
		_, ok := fn.callsByID()[cron.EventID("every-second", end)]
		return ok
	}, "the fire at %s ran", end)
	calls := fn.callsByID()
	for ts := start; !ts.After(end); ts = ts.Add(time.Second) {
		id := cron.EventID("every-second", ts)
		require.Equal(t, 1, calls[id], "fire %s ran exactly once", id)
	}
	for id, n := range calls {
		require.Equal(t, 1, n, "event %s ran %d times", id, n)
	}
	signups := 0
	for _, ev := range fn.events() {
		if ev.Type == "com.example.signup" {
			signups++
		}
	}
	require.Equal(t, 2, signups, "both accepted webhook requests ran")
}
