// Package jobs runs bulk task operations in the background (decision
// 0016): a job's state lives in Redis, so any gateway answers for it, and
// a lease in the record lets another gateway resume a job whose gateway
// stopped, from the cursor of its last finished step.
//
// Keys (<p> is the ledger's key prefix):
//
//	<p>:{<tenant>}:job:<id>      hash: the job (tenant-scoped: another tenant's id is not found)
//	<p>:{<tenant>}:jobs:running  sorted set: the tenant's running jobs (bounds how many)
//	<p>:jobs:leases              sorted set: "<tenant>/<id>" of running jobs, by lease expiry (ms)
//
// The hash is the truth; the two sets are indexes a script keeps in step
// where it can and the sweeper repairs where it cannot (an entry whose
// job ended is dropped).
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
)

// ErrNotFound is returned for a job the tenant does not have (or whose
// record expired).
var ErrNotFound = errors.New("job not found")

// ErrTooMany is returned by Create when the tenant already runs its
// maximum of jobs.
var ErrTooMany = errors.New("too many running jobs")

// ErrLeaseLost is returned when another owner took the job over (or it
// ended): the caller stops working on it.
var ErrLeaseLost = errors.New("job lease lost")

// Record is a job as stored: its answer, and what running it needs.
type Record struct {
	contracts.Job
	// Tenant owns the job.
	Tenant string
	// Request is the bulk call's body, as the job's step reads it.
	Request json.RawMessage
	// Cursor is where the next step starts ("" at the start).
	Cursor string
	// Owner is the runner working on it; LeaseUntil when its claim ends
	// unless renewed.
	Owner      string
	LeaseUntil time.Time
}

// Store keeps jobs in Redis.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	// Retention is how long an ended job stays readable.
	retention time.Duration
}

// RetentionDefault is how long an ended job's record is kept.
const RetentionDefault = 24 * time.Hour

// NewStore returns a store of jobs under prefix (the ledger's key
// prefix); retention 0 takes RetentionDefault.
func NewStore(rdb redis.UniversalClient, prefix string, retention time.Duration) *Store {
	if retention <= 0 {
		retention = RetentionDefault
	}
	return &Store{rdb: rdb, prefix: prefix, retention: retention}
}

func (s *Store) jobKey(tenant, id string) string {
	return s.prefix + ":{" + tenant + "}:job:" + id
}
func (s *Store) runningKey(tenant string) string { return s.prefix + ":{" + tenant + "}:jobs:running" }

// LeasesKey is the sorted set of running jobs by lease expiry.
func (s *Store) LeasesKey() string { return s.prefix + ":jobs:leases" }

func member(tenant, id string) string { return tenant + "/" + id }

// splitMember splits "<tenant>/<id>" at its last "/" (ids have none).
func splitMember(m string) (string, string, bool) {
	i := strings.LastIndexByte(m, '/')
	if i < 0 {
		return "", "", false
	}
	return m[:i], m[i+1:], true
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// createScript records a job unless the tenant runs max already.
// KEYS: 1 running, 2 job. ARGV: 1 max, 2 id, 3 started ms, then field,
// value pairs. Returns 1, or 0 when at the maximum.
var createScript = redis.NewScript(`
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
local f = {}
for i = 4, #ARGV do f[#f+1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(f))
return 1
`)

// Create records a running job of kind for tenant, owned by owner with a
// lease until leaseUntil, unless the tenant already runs max jobs
// (ErrTooMany).
func (s *Store) Create(ctx context.Context, tenant string, kind contracts.JobKind, request []byte, owner string, now, leaseUntil time.Time, max int) (Record, error) {
	r := Record{
		Job:    contracts.Job{ID: ulid.Make().String(), Kind: kind, State: contracts.JobRunning, StartedAt: now.UTC()},
		Tenant: tenant, Request: request, Owner: owner, LeaseUntil: leaseUntil,
	}
	args := []any{max, r.ID, ms(now),
		"kind", string(kind), "state", string(r.State), "matched", 0, "done", 0, "errors", 0, "resumed", 0,
		"started", r.StartedAt.Format(time.RFC3339Nano), "request", string(request), "cursor", "",
		"owner", owner, "lease", ms(leaseUntil)}
	ok, err := createScript.Run(ctx, s.rdb, []string{s.runningKey(tenant), s.jobKey(tenant, r.ID)}, args...).Int()
	if err != nil {
		return Record{}, fmt.Errorf("recording job: %w", err)
	}
	if ok == 0 {
		return Record{}, ErrTooMany
	}
	if err := s.rdb.ZAdd(ctx, s.LeasesKey(), redis.Z{Score: float64(ms(leaseUntil)), Member: member(tenant, r.ID)}).Err(); err != nil {
		return Record{}, fmt.Errorf("indexing job lease: %w", err)
	}
	return r, nil
}

// Get returns the tenant's job id.
func (s *Store) Get(ctx context.Context, tenant, id string) (Record, error) {
	if id == "" || strings.ContainsAny(id, "{}/") {
		return Record{}, ErrNotFound
	}
	h, err := s.rdb.HGetAll(ctx, s.jobKey(tenant, id)).Result()
	if err != nil {
		return Record{}, fmt.Errorf("reading job: %w", err)
	}
	if len(h) == 0 {
		return Record{}, ErrNotFound
	}
	return fromHash(tenant, id, h), nil
}

func fromHash(tenant, id string, h map[string]string) Record {
	atoi := func(k string) int { n, _ := strconv.Atoi(h[k]); return n }
	r := Record{
		Job: contracts.Job{ID: id, Kind: contracts.JobKind(h["kind"]), State: contracts.JobState(h["state"]),
			Matched: atoi("matched"), Done: atoi("done"), Errors: atoi("errors"), Resumed: atoi("resumed"),
			Error: h["error"], NextCursor: h["next_cursor"]},
		Tenant: tenant, Request: json.RawMessage(h["request"]), Cursor: h["cursor"], Owner: h["owner"],
	}
	r.StartedAt, _ = time.Parse(time.RFC3339Nano, h["started"])
	if f, err := time.Parse(time.RFC3339Nano, h["finished"]); err == nil {
		r.FinishedAt = &f
	}
	if l, err := strconv.ParseInt(h["lease"], 10, 64); err == nil {
		r.LeaseUntil = time.UnixMilli(l)
	}
	return r
}

// progressScript saves a running job's progress and renews its lease, if
// owner still holds it.
// KEYS: 1 job. ARGV: 1 owner, 2 lease ms, 3 matched, 4 done, 5 errors,
// 6 cursor. Returns 1, or 0 when the lease is lost.
var progressScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'owner', 'state')
if f[1] ~= ARGV[1] or f[2] ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'lease', ARGV[2], 'matched', ARGV[3], 'done', ARGV[4], 'errors', ARGV[5], 'cursor', ARGV[6])
return 1
`)

// Progress saves r's counts and cursor and renews r.Owner's lease until
// leaseUntil; ErrLeaseLost when another owner has the job.
func (s *Store) Progress(ctx context.Context, r *Record, leaseUntil time.Time) error {
	ok, err := progressScript.Run(ctx, s.rdb, []string{s.jobKey(r.Tenant, r.ID)},
		r.Owner, ms(leaseUntil), r.Matched, r.Done, r.Errors, r.Cursor).Int()
	if err != nil {
		return fmt.Errorf("saving job progress: %w", err)
	}
	if ok == 0 {
		return ErrLeaseLost
	}
	r.LeaseUntil = leaseUntil
	return s.rdb.ZAdd(ctx, s.LeasesKey(), redis.Z{Score: float64(ms(leaseUntil)), Member: member(r.Tenant, r.ID)}).Err()
}

// finishScript ends a job owner holds, keeps its record for the
// retention and takes it out of the tenant's running jobs.
// KEYS: 1 job, 2 running. ARGV: 1 owner, 2 id, 3 retention ms, then
// field, value pairs. Returns 1, or 0 when the lease is lost.
var finishScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'owner', 'state')
if f[1] ~= ARGV[1] or f[2] ~= 'running' then return 0 end
local kv = {}
for i = 4, #ARGV do kv[#kv+1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(kv))
redis.call('HDEL', KEYS[1], 'lease', 'owner', 'request')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
`)

// Finish ends r in state (succeeded or failed, with r.Error) at now.
func (s *Store) Finish(ctx context.Context, r *Record, state contracts.JobState, now time.Time) error {
	fin := now.UTC()
	ok, err := finishScript.Run(ctx, s.rdb, []string{s.jobKey(r.Tenant, r.ID), s.runningKey(r.Tenant)},
		r.Owner, r.ID, s.retention.Milliseconds(),
		"state", string(state), "finished", fin.Format(time.RFC3339Nano), "error", r.Error,
		"matched", r.Matched, "done", r.Done, "errors", r.Errors, "cursor", r.Cursor, "next_cursor", r.NextCursor).Int()
	if err != nil {
		return fmt.Errorf("ending job: %w", err)
	}
	if ok == 0 {
		return ErrLeaseLost
	}
	r.State, r.FinishedAt = state, &fin
	return s.rdb.ZRem(ctx, s.LeasesKey(), member(r.Tenant, r.ID)).Err()
}

// releaseScript ends owner's lease now, so that the next sweep takes the
// job over. KEYS: 1 job. ARGV: 1 owner. Returns 1, or 0 when not held.
var releaseScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'owner', 'state')
if f[1] ~= ARGV[1] or f[2] ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'lease', '0')
return 1
`)

// Release gives up r's lease (a runner stopping): another runner resumes
// the job at its next sweep.
func (s *Store) Release(ctx context.Context, r *Record) error {
	ok, err := releaseScript.Run(ctx, s.rdb, []string{s.jobKey(r.Tenant, r.ID)}, r.Owner).Int()
	if err != nil || ok == 0 {
		return err
	}
	return s.rdb.ZAdd(ctx, s.LeasesKey(), redis.Z{Score: 0, Member: member(r.Tenant, r.ID)}).Err()
}

// takeoverScript gives a running job whose lease has expired to a new
// owner. KEYS: 1 job. ARGV: 1 owner, 2 now ms, 3 lease ms.
// Returns {"ok", field, value, ...}, {"held"} while the lease runs, or
// {"ended"} for a job that ended or is gone.
var takeoverScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'state', 'lease')
if f[1] ~= 'running' then return {'ended'} end
if tonumber(f[2] or '0') > tonumber(ARGV[2]) then return {'held'} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'resumed', 1)
local out = {'ok'}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out+1] = v end
return out
`)

// Expired returns up to n running jobs whose lease ended before now, as
// (tenant, id) pairs.
func (s *Store) Expired(ctx context.Context, now time.Time, n int64) ([][2]string, error) {
	ms, err := s.rdb.ZRangeByScore(ctx, s.LeasesKey(), &redis.ZRangeBy{
		Min: "-inf", Max: "(" + strconv.FormatInt(now.UnixMilli(), 10), Count: n,
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("reading job leases: %w", err)
	}
	out := make([][2]string, 0, len(ms))
	for _, m := range ms {
		if t, id, ok := splitMember(m); ok {
			out = append(out, [2]string{t, id})
		} else {
			s.rdb.ZRem(ctx, s.LeasesKey(), m)
		}
	}
	return out, nil
}

// Takeover gives the tenant's job id to owner with a lease until
// leaseUntil if its lease has expired by now. It answers the record and
// true when owner now holds it; false when the lease still runs or the
// job has ended (its index entry is dropped then).
func (s *Store) Takeover(ctx context.Context, tenant, id, owner string, now, leaseUntil time.Time) (Record, bool, error) {
	res, err := takeoverScript.Run(ctx, s.rdb, []string{s.jobKey(tenant, id)}, owner, ms(now), ms(leaseUntil)).StringSlice()
	if err != nil {
		return Record{}, false, fmt.Errorf("taking job %s over: %w", id, err)
	}
	switch res[0] {
	case "ended":
		return Record{}, false, s.rdb.ZRem(ctx, s.LeasesKey(), member(tenant, id)).Err()
	case "held":
		return Record{}, false, nil
	}
	h := map[string]string{}
	for i := 1; i+1 < len(res); i += 2 {
		h[res[i]] = res[i+1]
	}
	r := fromHash(tenant, id, h)
	if err := s.rdb.ZAdd(ctx, s.LeasesKey(), redis.Z{Score: float64(ms(leaseUntil)), Member: member(tenant, id)}).Err(); err != nil {
		return r, true, fmt.Errorf("indexing job lease: %w", err)
	}
	return r, true, nil
}
