package objectstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/config"
	"github.com/tasklane/tasklane/pkg/ingest"
	"github.com/tasklane/tasklane/pkg/testkit"
	"github.com/tasklane/tasklane/triggers"
	"github.com/tasklane/tasklane/triggers/objectstore/objectstoretest"
	"github.com/tasklane/tasklane/triggers/triggerstest"
)

const (
	testBucket = "images"
	testType   = "com.example.object"
)

type pollBundle struct {
	s3    *objectstoretest.Server
	store *triggers.Store
	sub   *triggerstest.Submitter
}

func setupPoll(t *testing.T) *pollBundle {
	t.Helper()
	b := &pollBundle{s3: objectstoretest.NewServer(t), store: triggerstest.Store(t), sub: triggerstest.NewSubmitter()}
	b.s3.MakeBucket(t, testBucket)
	return b
}

func (b *pollBundle) config(mod func(*PollConfig)) PollConfig {
	cfg := PollConfig{
		Common: Common{
			Name: "images", Tenant: "acme", Bucket: testBucket, EventType: testType,
			Events: []string{Created, Deleted},
		},
		Endpoint:  b.s3.URL,
		Region:    objectstoretest.Region,
		AccessKey: objectstoretest.AccessKey, SecretKey: objectstoretest.SecretKey,
		PollInterval: 20 * time.Millisecond, RetryEvery: 20 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

// poller returns a Poller of owner that holds its lock and has loaded the
// checkpoint, as the elected loop does before its first step.
func (b *pollBundle) poller(t *testing.T, owner string, mod func(*PollConfig)) *Poller {
	t.Helper()
	p, err := NewPoller(b.config(mod), triggers.Env{Submitter: b.sub, Store: b.store, Owner: owner, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	ok, err := p.lock.Acquire(context.Background())
	require.NoError(t, err)
	require.True(t, ok, "lock free")
	t.Cleanup(func() { _ = p.lock.Release(context.Background()) })
	require.NoError(t, p.loadCheckpoint(context.Background()))
	return p
}

// release gives up p's lock, as a stopping replica does.
func release(t *testing.T, p *Poller) {
	t.Helper()
	require.NoError(t, p.lock.Release(context.Background()))
}

// change is what the tests compare: an event's change and key.
func changes(sub *triggerstest.Submitter, from int) []string {
	var out []string
	for _, s := range sub.Events()[from:] {
		out = append(out, strings.TrimPrefix(s.Event.Type(), testType+".")+" "+s.Event.Subject())
	}
	return out
}

func objectOf(t *testing.T, e event.Event) Object {
	t.Helper()
	var o Object
	require.NoError(t, json.Unmarshal(e.Data(), &o))
	return o
}

func TestPollerChanges(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	b.s3.Put(t, testBucket, "old.jpg", "old")

	p := b.poller(t, "a", nil)
	require.NoError(t, p.poll(ctx))
	require.Zero(t, b.sub.Len(), "existing skip: the first poll records what is there without events")

	b.s3.Put(t, testBucket, "new.jpg", "one")
	b.s3.Put(t, testBucket, "old.jpg", "changed")
	require.NoError(t, p.poll(ctx))
	require.Equal(t, []string{"created new.jpg", "created old.jpg"}, changes(b.sub, 0))

	require.NoError(t, p.poll(ctx))
	require.Equal(t, 2, b.sub.Len(), "nothing changed: no events")

	b.s3.Put(t, testBucket, "new.jpg", "one") // same bytes, same ETag
	require.NoError(t, p.poll(ctx))
	require.Equal(t, 2, b.sub.Len(), "an overwrite with the same content keeps its ETag: not a change")

	info := b.s3.Stat(t, testBucket, "new.jpg")
	b.s3.Delete(t, testBucket, "new.jpg")
	require.NoError(t, p.poll(ctx))
	require.Equal(t, []string{"deleted new.jpg"}, changes(b.sub, 2))
	del := b.sub.Events()[2]
	o := objectOf(t, del.Event)
	require.Equal(t, Deleted, o.Change)
	require.Equal(t, info.Size, o.Size, "a deletion carries the last size known")
	require.Equal(t, info.ETag, o.ETag, "and the last ETag")

	// Recreated with the same bytes: a new version, a new event.
	b.s3.Put(t, testBucket, "new.jpg", "one")
	require.NoError(t, p.poll(ctx))
	require.Equal(t, []string{"deleted new.jpg", "created new.jpg"}, changes(b.sub, 2))
	require.Zero(t, b.sub.Duplicates())
}

func TestPollerEventShape(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	p := b.poller(t, "a", nil)
	require.NoError(t, p.poll(ctx))

	b.s3.Put(t, testBucket, "photos/summer 2026/ä.jpg", "jpeg bytes")
	info := b.s3.Stat(t, testBucket, "photos/summer 2026/ä.jpg")
	require.NoError(t, p.poll(ctx))
	require.Equal(t, 1, b.sub.Len())
	s := b.sub.Events()[0]
	e := s.Event
	require.Equal(t, "acme", s.Tenant)
	require.Equal(t, testType+".created", e.Type())
	require.Equal(t, "s3://images", e.Source())
	require.Equal(t, "photos/summer 2026/ä.jpg", e.Subject())
	require.Equal(t, event.ApplicationJSON, e.DataContentType())
	ref, ok := e.Extensions()[ExtDataRef].(string)
	require.True(t, ok, "dataref extension set")
	require.Equal(t, "s3://images/photos/summer%202026/%C3%A4.jpg", ref)
	bucket, key, err := ParseDataRef(ref)
	require.NoError(t, err)
	require.Equal(t, [2]string{"images", "photos/summer 2026/ä.jpg"}, [2]string{bucket, key})
	// The listing has the modification time in ms, a HEAD answer in seconds.
	require.WithinDuration(t, info.LastModified, e.Time(), time.Second, "the event time is the modification time")

	o := objectOf(t, e)
	require.Equal(t, Object{Change: Created, Bucket: "images", Key: "photos/summer 2026/ä.jpg", Size: int64(len("jpeg bytes")), ETag: info.ETag, Time: o.Time}, o)
	require.NotContains(t, info.ETag, `"`)
	require.NotEmpty(t, o.ETag)
	require.NotContains(t, string(e.Data()), "jpeg bytes", "the object's bytes are not in the event")

	// The id names the version: the same version polled again (by another
	// poller without a checkpoint, say) has the same id.
	require.Equal(t, eventID(Created, "images", "photos/summer 2026/ä.jpg", version{ETag: info.ETag, Mod: e.Time().UnixMilli()}.id()), e.ID())
}

func TestPollerPrefixSuffixAndEvents(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	p := b.poller(t, "a", func(c *PollConfig) {
		c.Prefix, c.Suffix = "in/", ".jpg"
		c.Events = []string{Created}
	})
	require.NoError(t, p.poll(ctx))
	for _, k := range []string{"in/a.jpg", "in/a.png", "out/b.jpg", "in/deep/c.jpg"} {
		b.s3.Put(t, testBucket, k, k)
	}
	require.NoError(t, p.poll(ctx))
	require.Equal(t, []string{"created in/a.jpg", "created in/deep/c.jpg"}, changes(b.sub, 0))

	b.s3.Delete(t, testBucket, "in/a.jpg")
	require.NoError(t, p.poll(ctx))
	require.Equal(t, 2, b.sub.Len(), "deleted is not among the events")
	require.NotContains(t, p.known, "in/a.jpg", "but the checkpoint forgets the object")
	b.s3.Put(t, testBucket, "in/a.jpg", "in/a.jpg")
	require.NoError(t, p.poll(ctx))
	require.Equal(t, []string{"created in/a.jpg", "created in/deep/c.jpg", "created in/a.jpg"}, changes(b.sub, 0))
}

func TestPollerExistingEmit(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	for i := range 5 {
		b.s3.Put(t, testBucket, fmt.Sprintf("k%d", i), "x")
	}
	p := b.poller(t, "a", func(c *PollConfig) {
		c.Existing = config.ExistingEmit
		c.BatchSize = 2
		c.Region = "" // asked of the store
	})
	require.NoError(t, p.poll(ctx))
	require.Equal(t, []string{"created k0", "created k1", "created k2", "created k3", "created k4"}, changes(b.sub, 0))
	require.Equal(t, 3, b.sub.Calls(), "in batches of BatchSize")
	require.NoError(t, p.poll(ctx))
	require.Equal(t, 5, b.sub.Len())
}

// TestPollerRestart: what changes while no poller runs is found by the
// next one, from the checkpoint in Redis; nothing is repeated.
func TestPollerRestart(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	b.s3.Put(t, testBucket, "keep", "1")
	b.s3.Put(t, testBucket, "change", "1")
	b.s3.Put(t, testBucket, "remove", "1")
	p := b.poller(t, "a", nil)
	require.NoError(t, p.poll(ctx))
	b.s3.Put(t, testBucket, "seen", "1")
	require.NoError(t, p.poll(ctx))
	require.Equal(t, []string{"created seen"}, changes(b.sub, 0))
	release(t, p)

	b.s3.Put(t, testBucket, "change", "2")
	b.s3.Delete(t, testBucket, "remove")
	b.s3.Put(t, testBucket, "added", "1")

	q := b.poller(t, "b", nil)
	require.NoError(t, q.poll(ctx))
	require.Equal(t, []string{"created added", "created change", "deleted remove"}, changes(b.sub, 1))
	require.Zero(t, b.sub.Duplicates())
	require.Equal(t, 3, b.sub.Calls(), "one submission per change kind and poll")
}

// TestPollerLostLockBetweenSubmitAndCheckpoint: a poller that submitted but
// could not move the checkpoint (it lost the lock, or died) leaves the
// change to its successor, which submits the same event ids again: the
// ingest path deduplicates them, so the change is neither lost nor run
// twice.
func TestPollerLostLockBetweenSubmitAndCheckpoint(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	p := b.poller(t, "a", nil)
	require.NoError(t, p.poll(ctx))
	b.s3.Put(t, testBucket, "a", "1")
	b.s3.Put(t, testBucket, "b", "1")

	rdb := b.store.Redis()
	b.sub.FailFunc = func(string, []*event.Event) error {
		// The submission goes through, but the lock expires under it and
		// another replica takes it.
		b.sub.FailFunc = nil
		require.NoError(t, rdb.Set(ctx, p.lock.Key(), "other#99", time.Minute).Err())
		return nil
	}
	err := p.poll(ctx)
	require.ErrorIs(t, err, triggers.ErrLockLost)
	require.Equal(t, 2, b.sub.Len())
	require.NoError(t, rdb.Del(ctx, p.lock.Key()).Err())

	q := b.poller(t, "b", nil)
	require.NoError(t, q.poll(ctx))
	require.Equal(t, 2, b.sub.Len(), "nothing new")
	require.Equal(t, 2, b.sub.Duplicates(), "the successor submitted the same ids again")
	require.NoError(t, q.poll(ctx))
	require.Equal(t, 2, b.sub.Duplicates(), "and moved the checkpoint")
}

// TestPollerSubmitFailure: a failed submission leaves the checkpoint where
// it was, so the next poll submits the change again.
func TestPollerSubmitFailure(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	p := b.poller(t, "a", nil)
	require.NoError(t, p.poll(ctx))
	b.s3.Put(t, testBucket, "a", "1")

	b.sub.FailFunc = func(string, []*event.Event) error { return errors.New("ledger unavailable") }
	require.ErrorContains(t, p.poll(ctx), "ledger unavailable")
	require.Zero(t, b.sub.Len())
	b.sub.FailFunc = nil
	require.NoError(t, p.poll(ctx))
	require.Equal(t, []string{"created a"}, changes(b.sub, 0))
}

// TestPollerRefusedObject: an object whose event the ingest path refuses
// for good is skipped; the others of its batch go through.
func TestPollerRefusedObject(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	p := b.poller(t, "a", nil)
	require.NoError(t, p.poll(ctx))
	for _, k := range []string{"a", "c", "z-bad"} {
		b.s3.Put(t, testBucket, k, k)
	}
	b.sub.FailFunc = func(_ string, events []*event.Event) error {
		for _, e := range events {
			if e.Subject() == "z-bad" {
				return &ingest.Error{Status: http.StatusUnprocessableEntity, Msg: "no function subscribes"}
			}
		}
		return nil
	}
	require.NoError(t, p.poll(ctx))
	require.Equal(t, []string{"created a", "created c"}, changes(b.sub, 0))
	require.Contains(t, p.Status().LastError, `object "z-bad"`)
	require.NoError(t, p.poll(ctx))
	require.Equal(t, 2, b.sub.Len(), "the refused object is not tried again")
}

// TestPollerListingFailure: a listing that fails changes nothing; it is
// never taken for deletions.
func TestPollerListingFailure(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	b.s3.Put(t, testBucket, "a", "1")
	p := b.poller(t, "a", nil)
	require.NoError(t, p.poll(ctx))
	b.s3.Close()
	require.Error(t, p.poll(ctx))
	require.Zero(t, b.sub.Len())
	require.Contains(t, p.known, "a")
	n, err := b.store.Redis().HLen(ctx, p.keyObj).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

// TestPollerPagination: a bucket of more than one listing page (1,000
// keys) is read whole; a deletion and an overwrite on the second page are
// found, and nothing else is taken for a change.
func TestPollerPagination(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	const n = 1100
	key := func(i int) string { return fmt.Sprintf("k%04d", i) }
	for i := range n {
		b.s3.Put(t, testBucket, key(i), "1")
	}
	page, err := (&minio.Core{Client: b.s3.Client}).ListObjectsV2(testBucket, "", "", "", "", 0)
	require.NoError(t, err)
	require.True(t, page.IsTruncated, "the store pages the listing")
	require.Len(t, page.Contents, 1000)

	p := b.poller(t, "a", nil)
	require.NoError(t, p.poll(ctx))
	require.Zero(t, b.sub.Len())
	require.Len(t, p.known, n, "the checkpoint has both pages")

	b.s3.Delete(t, testBucket, key(1050))
	b.s3.Put(t, testBucket, key(1070), "2")
	require.NoError(t, p.poll(ctx))
	require.Equal(t, []string{"created k1070", "deleted k1050"}, changes(b.sub, 0))
	require.NoError(t, p.poll(ctx))
	require.Equal(t, 2, b.sub.Len(), "nothing more")
	release(t, p)

	// A successor reading the checkpoint from Redis sees no change either.
	q := b.poller(t, "b", nil)
	require.Len(t, q.known, n-1)
	require.NoError(t, q.poll(ctx))
	require.Equal(t, 2, b.sub.Len())
}

// TestPollerScopeChange: a checkpoint of another bucket or endpoint is not
// compared with this listing (that would look like deletions of every old
// object); the trigger starts afresh.
func TestPollerScopeChange(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	b.s3.MakeBucket(t, "other")
	b.s3.Put(t, "other", "x", "1")
	b.s3.Put(t, testBucket, "y", "1")
	p := b.poller(t, "a", func(c *PollConfig) { c.Bucket = "other" })
	require.NoError(t, p.poll(ctx))
	release(t, p)

	q := b.poller(t, "b", nil)
	require.NoError(t, q.poll(ctx))
	require.NoError(t, q.poll(ctx))
	require.Zero(t, b.sub.Len(), "no deletion of other/x, no creation of images/y")
	require.Equal(t, map[string]bool{"y": true}, keysOf(q.known))
}

// TestPollerScopeWidened: widening the prefix or suffix brings objects
// into scope that were there all along; with existing skip they are
// recorded, not emitted as created. What is created afterwards is.
func TestPollerScopeWidened(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	for _, k := range []string{"in/a.jpg", "in/b.png", "out/c.jpg"} {
		b.s3.Put(t, testBucket, k, k)
	}
	p := b.poller(t, "a", func(c *PollConfig) { c.Prefix, c.Suffix = "in/", ".jpg" })
	require.NoError(t, p.poll(ctx))
	b.s3.Put(t, testBucket, "in/d.jpg", "d")
	require.NoError(t, p.poll(ctx))
	require.Equal(t, []string{"created in/d.jpg"}, changes(b.sub, 0))
	release(t, p)

	q := b.poller(t, "b", func(c *PollConfig) { c.Prefix = "" }) // no prefix, no suffix
	require.NoError(t, q.poll(ctx))
	require.NoError(t, q.poll(ctx))
	require.Equal(t, 1, b.sub.Len(), "in/b.png and out/c.jpg existed before they came into scope")
	require.Equal(t, map[string]bool{"in/a.jpg": true, "in/b.png": true, "out/c.jpg": true, "in/d.jpg": true}, keysOf(q.known))
	b.s3.Put(t, testBucket, "out/e.txt", "e")
	require.NoError(t, q.poll(ctx))
	require.Equal(t, []string{"created in/d.jpg", "created out/e.txt"}, changes(b.sub, 0))
	release(t, q)

	// Narrowed again: the objects out of scope are no deletions.
	r := b.poller(t, "c", func(c *PollConfig) { c.Prefix = "out/" })
	require.NoError(t, r.poll(ctx))
	require.NoError(t, r.poll(ctx))
	require.Equal(t, 2, b.sub.Len())
	require.Equal(t, map[string]bool{"out/c.jpg": true, "out/e.txt": true}, keysOf(r.known))
}

func keysOf(m map[string]version) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

// TestPollerRun runs the trigger as the services layer does: two replicas,
// one polls; stopping it hands over to the other without a miss or repeat.
func TestPollerRun(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	ctx := context.Background()
	b.s3.Put(t, testBucket, "before", "1")
	env := func(owner string) triggers.Env {
		return triggers.Env{Submitter: b.sub, Store: b.store, Owner: owner, Logger: slog.New(slog.DiscardHandler)}
	}
	cfg := b.config(func(c *PollConfig) { c.LockTTL = 3 * time.Second })
	p1, err := NewPoller(cfg, env("one"))
	require.NoError(t, err)
	p2, err := NewPoller(cfg, env("two"))
	require.NoError(t, err)
	require.NoError(t, p1.Start(ctx))
	testkit.Eventually(t, 10*time.Second, func() bool { return p1.Status().State == triggers.StateRunning }, "p1 polls")
	require.NoError(t, p2.Start(ctx))
	t.Cleanup(func() { _ = p2.Stop(context.Background()) })
	testkit.Eventually(t, 10*time.Second, func() bool { return p2.Status().State == triggers.StateStandby }, "p2 stands by")

	for i := range 10 {
		b.s3.Put(t, testBucket, fmt.Sprintf("a%02d", i), "1")
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return b.sub.Len() == 10 }, "10 events (got %d)", b.sub.Len())
	require.NoError(t, p1.Stop(ctx))
	require.Equal(t, triggers.StateStopped, p1.Status().State)
	for i := range 10 {
		b.s3.Put(t, testBucket, fmt.Sprintf("b%02d", i), "1")
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return b.sub.Len() == 20 }, "20 events (got %d)", b.sub.Len())
	testkit.Eventually(t, 10*time.Second, func() bool { return p2.Status().State == triggers.StateRunning }, "p2 polls")
	st := p2.Status()
	require.False(t, st.NextFire.IsZero())
	rec, err := b.store.Read(ctx, "images")
	require.NoError(t, err)
	require.Zero(t, b.sub.Duplicates(), "a stopping poller checkpoints what it submitted")
	require.EqualValues(t, 20, rec["images"].Fires)

	ids := b.sub.IDs()
	slices.Sort(ids)
	require.Len(t, slices.Compact(ids), 20)
}

// TestPollerStopDuringSubmission: a poll stopped while it submits finishes
// that submission and checkpoints it, and submits nothing more.
func TestPollerStopDuringSubmission(t *testing.T) {
	t.Parallel()
	b := setupPoll(t)
	p := b.poller(t, "a", func(c *PollConfig) { c.BatchSize = 2 })
	require.NoError(t, p.poll(context.Background()))
	for _, k := range []string{"a", "b", "c", "d"} {
		b.s3.Put(t, testBucket, k, k)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.sub.FailFunc = func(string, []*event.Event) error { cancel(); return nil }
	require.ErrorIs(t, p.poll(ctx), context.Canceled)
	require.Equal(t, []string{"created a", "created b"}, changes(b.sub, 0), "the batch in flight, not the next")
	b.sub.FailFunc = nil
	release(t, p)

	q := b.poller(t, "b", nil)
	require.NoError(t, q.poll(context.Background()))
	require.Equal(t, []string{"created a", "created b", "created c", "created d"}, changes(b.sub, 0))
	require.Zero(t, b.sub.Duplicates())
}
