package ledger

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/contracts"
)

// Task logs. Each task has a log, a list in its tenant's slot:
//
//	<p>:{t}:log:<id>   list: entries "<at µs>|<kind>|<attempt>|<status>|<duration ms>|<message>"
//
// appended by the scripts that change the task (create, admit, take,
// finish, retry, the terminal transition, redrive) inside the same call,
// and by AppendLog for what happens outside them (lines an HTTP function
// posts, the lane a task was published to, result deliveries). Past
// LogMaxBytes the oldest entries go and the first entry becomes a marker
// saying how many; the task hash keeps that count (log_dropped). The log expires with the record: the
// terminal transition gives both the same TTL, a redrive persists both,
// a purge deletes both.

// LogMaxBytes bounds a task's log; older entries are dropped first.
const LogMaxBytes = 64 << 10

// LogMessageMaxBytes bounds one entry's message (a longer one is cut and
// marked).
const LogMessageMaxBytes = 2 << 10

// LogLinesMax bounds the lines of one append (one POST, or one Go
// handler's attempt).
const LogLinesMax = 256

// logEntryMax bounds one stored entry: a message of LogMessageMaxBytes and
// its header (time, kind, attempt, status, duration). Entries the Go side
// encodes are within it; a longer one a script builds (an ending's message
// with a long error) is cut to it.
const logEntryMax = LogMessageMaxBytes + 128

// luaLog appends entries to a task's log (the task hash h must exist),
// keeping it within LogMaxBytes. Up to LOGSAFE entries of at most
// LOGENTRY bytes cannot pass the bound, so a short log (most tasks' five
// or six entries) costs one RPUSH and no accounting; a longer one is
// measured after each append (one LRANGE: the log is at most LogMaxBytes)
// and trimmed. logkey derives the log key from a task's state-index
// prefix ("<p>:{t}:st:").
var luaLog = `
local LOGMAX = ` + strconv.Itoa(LogMaxBytes) + `
local LOGENTRY = ` + strconv.Itoa(logEntryMax) + `
local LOGSAFE = math.floor(LOGMAX / LOGENTRY)
local function logkey(stprefix, id) return string.sub(stprefix, 1, -4) .. 'log:' .. id end
-- logcut cuts an entry to LOGENTRY bytes without splitting a UTF-8 sequence.
local function logcut(e)
  if #e <= LOGENTRY then return e end
  local n = LOGENTRY
  while n > 0 and string.byte(e, n + 1) and string.byte(e, n + 1) >= 128 and string.byte(e, n + 1) < 192 do n = n - 1 end
  return string.sub(e, 1, n)
end
-- logpush returns the log's new dropped count when it trimmed it.
local function logpush(h, lk, entries)
  if #entries == 0 then return end
  for i, e in ipairs(entries) do entries[i] = logcut(e) end
  if redis.call('RPUSH', lk, unpack(entries)) <= LOGSAFE then return end
  local all = redis.call('LRANGE', lk, 0, -1)
  local total = 0
  for _, e in ipairs(all) do total = total + #e end
  if total <= LOGMAX then return end
  local dropped = tonumber(redis.call('HGET', h, 'log_dropped') or '0')
  local last, i = '0', 1
  if dropped > 0 then
    -- The old marker goes: the new one counts what it stood for.
    total = total - #all[1]
    last = all[1]
    i = 2
  end
  while total > LOGMAX - 160 and #all - i >= 1 do
    total = total - #all[i]
    dropped = dropped + 1
    last = all[i]
    i = i + 1
  end
  redis.call('LTRIM', lk, i - 1, -1)
  local at = string.match(last, '^([^|]*)') or '0'
  local marker = at .. '|truncated|0|0||' .. dropped .. ' earlier entries dropped (a task log keeps its last ' .. LOGMAX .. ' bytes)'
  redis.call('LPUSH', lk, marker)
  redis.call('HSET', h, 'log_dropped', dropped)
  return dropped
end
local function logone(h, lk, at, kind, attempt, msg)
  return logpush(h, lk, {at .. '|' .. kind .. '|' .. attempt .. '|0||' .. msg})
end
`

// appendLog appends entries to an existing task's log; a log whose task has
// a TTL (it ended) gets the same TTL.
// KEYS: 1 task hash, 2 log. ARGV: entries. Returns 0 when the task is gone.
var appendLogScript = redis.NewScript(luaLog + `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
logpush(KEYS[1], KEYS[2], ARGV)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
`)

func (l *Ledger) logKey(tenant, id string) string { return l.tenantPrefix(tenant) + "log:" + id }

// cutMessage bounds a message to LogMessageMaxBytes of valid UTF-8: bytes
// that are not UTF-8 go, and a longer message is cut at a rune boundary
// and marked.
func cutMessage(s string) string {
	long := len(s) > LogMessageMaxBytes
	if long {
		s = s[:LogMessageMaxBytes] // a rune split here goes with the bad bytes
	}
	s = strings.ToValidUTF8(s, "")
	if !long {
		return s
	}
	const mark = " [cut]"
	n := min(LogMessageMaxBytes-len(mark), len(s))
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}

// encodeLog is an entry's stored form. A zero At is now.
func (l *Ledger) encodeLog(e contracts.LogEntry) string {
	at := e.At
	if at.IsZero() {
		at = l.cfg.Now()
	}
	d := ""
	if e.DurationMS != nil {
		d = strconv.FormatInt(*e.DurationMS, 10)
	}
	return strconv.FormatInt(us(at), 10) + "|" + string(e.Kind) + "|" + strconv.Itoa(e.Attempt) + "|" +
		strconv.Itoa(e.Status) + "|" + d + "|" + cutMessage(e.Message)
}

func decodeLog(s string) (contracts.LogEntry, bool) {
	f := strings.SplitN(s, "|", 6)
	if len(f) != 6 {
		return contracts.LogEntry{}, false
	}
	at, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return contracts.LogEntry{}, false
	}
	e := contracts.LogEntry{At: time.UnixMicro(at).UTC(), Kind: contracts.LogKind(f[1]), Message: f[5]}
	e.Attempt, _ = strconv.Atoi(f[2])
	e.Status, _ = strconv.Atoi(f[3])
	if f[4] != "" {
		if n, err := strconv.ParseInt(f[4], 10, 64); err == nil {
			e.DurationMS = &n
		}
	}
	return e, true
}

// encodeLogs returns the stored forms of entries, at most LogLinesMax
// function lines among them (the rest are summed up in one entry).
func (l *Ledger) encodeLogs(entries []contracts.LogEntry) []any {
	out := make([]any, 0, len(entries))
	lines, skipped := 0, 0
	var last contracts.LogEntry
	for _, e := range entries {
		if e.Kind == contracts.LogLine {
			if lines++; lines > LogLinesMax {
				skipped++
				last = e
				continue
			}
		}
		out = append(out, l.encodeLog(e))
	}
	if skipped > 0 {
		out = append(out, l.encodeLog(contracts.LogEntry{At: last.At, Kind: contracts.LogTruncated, Attempt: last.Attempt,
			Message: fmt.Sprintf("%d more lines of this append dropped (at most %d lines per append)", skipped, LogLinesMax)}))
	}
	return out
}

// Log returns a task's log in time order, or ErrNotFound when the tenant
// has no such task.
func (l *Ledger) Log(ctx context.Context, tenant, id string) ([]contracts.LogEntry, error) {
	entries, _, err := l.LogAfter(ctx, tenant, id, 0)
	return entries, err
}

// LogAfter returns the entries of a task's log whose seq is above after,
// in time order, and the seq of the log's newest entry (0: none yet): the
// after of the next call, which then returns exactly the entries appended
// since, none twice and none missed (short of the bound: see below). It
// returns ErrNotFound when the tenant has no such task.
//
// An entry's seq is its place in the order of appends: the n-th entry ever
// appended to the task's log has seq n. The list is only appended to (at
// its tail) and trimmed from its head, and the task hash counts the
// entries trimmed (log_dropped), so the entry at index i of the list has
// seq log_dropped + i + 1, or log_dropped + i when the head is the
// truncation marker, which itself has seq log_dropped (it stands for the
// entries dropped, 1 to log_dropped, and is returned when after is below
// that). Nothing is stored per entry: seq is derived from the position the
// list keeps anyway, and the same entry has the same seq on every read.
// Seq order is append order; the answer is in time order, in which an
// entry appended outside the scripts (a publish confirmed late) can come
// before entries appended earlier.
func (l *Ledger) LogAfter(ctx context.Context, tenant, id string, after int64) ([]contracts.LogEntry, int64, error) {
	var fields *redis.SliceCmd
	var list *redis.StringSliceCmd
	// One transaction (the task hash and its log share the tenant's slot):
	// the drop count and the list are read at the same point, so the seqs
	// derived from them are the entries' own.
	_, err := l.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		fields = p.HMGet(ctx, l.taskKey(tenant, id), fID, "log_dropped")
		list = p.LRange(ctx, l.logKey(tenant, id), 0, -1)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("reading log of task %s: %w", id, err)
	}
	if v := fields.Val(); len(v) != 2 || v[0] == nil {
		return nil, 0, ErrNotFound
	}
	var d int64
	if s, ok := fields.Val()[1].(string); ok {
		d, _ = strconv.ParseInt(s, 10, 64)
	}
	raw := list.Val()
	base := d + 1 // seq of raw[0]
	if d > 0 && len(raw) > 0 {
		base = d // raw[0] is the marker
	}
	last := int64(0)
	if len(raw) > 0 {
		last = base + int64(len(raw)) - 1
	}
	out := make([]contracts.LogEntry, 0, len(raw))
	for i, s := range raw {
		seq := base + int64(i)
		if seq <= after {
			continue
		}
		if e, ok := decodeLog(s); ok {
			e.Seq = seq
			out = append(out, e)
		}
	}
	// Entries appended outside the scripts (a publish confirmed late, a
	// function's lines) may land after later ones: order by time, keeping
	// the truncation marker (always the list's head) first.
	rest := out
	if len(rest) > 0 && rest[0].Kind == contracts.LogTruncated {
		rest = rest[1:]
	}
	slices.SortStableFunc(rest, func(a, b contracts.LogEntry) int { return a.At.Compare(b.At) })
	return out, last, nil
}

// AppendLog appends entries to an existing task's log (a zero At is now).
// It returns ErrNotFound when the task is gone.
func (l *Ledger) AppendLog(ctx context.Context, tenant, id string, entries ...contracts.LogEntry) error {
	if len(entries) == 0 {
		return nil
	}
	n, err := l.run(ctx, appendLogScript, []string{l.taskKey(tenant, id), l.logKey(tenant, id)}, l.encodeLogs(entries)...).Int()
	if err != nil {
		return fmt.Errorf("appending to the log of task %s: %w", id, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// tokenSecretKey holds the task token secret (see TokenSecret).
func (l *Ledger) tokenSecretKey() string { return l.cfg.Prefix + ":task_token_secret" }

// TokenSecret returns the secret task tokens are signed with: 32 random
// bytes written to Redis by the first process that needs them (SET NX), so
// every gateway and dispatcher of a deployment shares one secret without
// configuration. Deleting the key rotates it (tokens in flight then fail;
// processes read it once, so restart them).
func (l *Ledger) TokenSecret(ctx context.Context) ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("making a task token secret: %w", err)
	}
	if err := l.rdb.SetNX(ctx, l.tokenSecretKey(), hex.EncodeToString(b), 0).Err(); err != nil {
		return nil, fmt.Errorf("storing the task token secret: %w", err)
	}
	s, err := l.rdb.Get(ctx, l.tokenSecretKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("reading the task token secret: %w", err)
	}
	secret, err := hex.DecodeString(s)
	if err != nil || len(secret) < 16 {
		return nil, cmp.Or(err, errors.New("task token secret too short"))
	}
	return secret, nil
}
