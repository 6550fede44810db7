package testkit

import (
	"context"
	"crypto/sha1" //nolint:gosec // Redis names scripts by SHA1
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/tasklane/tasklane/pkg/keyslot"
)

// SlotAudit is a go-redis hook that finds what would not run on a Redis
// Cluster: every script call (EVAL, EVALSHA), multi-key command and
// MULTI/EXEC transaction whose declared keys hash to more than one cluster
// slot (a cluster answers CROSSSLOT, or, for a transaction go-redis splits by
// slot, runs it as several transactions). Plain pipelines are not
// crossings: a cluster client splits them by node, at one round trip per
// node; SlotAudit counts the slots they touch (PipelineSlots) as a cost.
//
// It sees the keys a command declares, not the keys a script builds from
// its arguments inside Lua: those must be audited by reading the script.
//
// Label the operation being run with Op before running it; the crossings
// are reported by operation.
type SlotAudit struct {
	mu        sync.Mutex
	op        string
	scripts   map[string]string // sha1 -> name
	crossings map[string]Crossing
	pipelines map[string]int // op -> most slots one plain pipeline touched
	normalize func(string) string
}

// Crossing is one command whose keys span several slots.
type Crossing struct {
	// Op is the operation label (SlotAudit.Op) it ran under.
	Op string
	// Command is the command: "EVAL <script name>" for a script (sent as
	// EVAL or EVALSHA), "MULTI" for a transaction.
	Command string
	// Keys are the keys it declared, normalized, sorted, without repeats.
	Keys []string
	// Tags are the distinct hash tags (or whole keys) the keys hash by.
	Tags []string
}

// String is the crossing on one line: "op: command: key key ...".
func (c Crossing) String() string {
	return c.Op + ": " + c.Command + ": " + strings.Join(c.Keys, " ")
}

// NewSlotAudit returns an audit that names scripts by their SHA1 from
// scripts (name -> script) and rewrites each key with normalize (nil:
// unchanged) before reporting it, so that the report does not depend on a
// test's unique key prefix.
func NewSlotAudit(scripts map[string]*redis.Script, normalize func(string) string) *SlotAudit {
	a := &SlotAudit{scripts: map[string]string{}, crossings: map[string]Crossing{}, pipelines: map[string]int{}, normalize: normalize}
	for name, s := range scripts {
		a.scripts[s.Hash()] = name
	}
	if a.normalize == nil {
		a.normalize = func(k string) string { return k }
	}
	return a
}

// Op labels the commands that follow with op.
func (a *SlotAudit) Op(op string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.op = op
}

// Crossings returns every crossing seen, sorted by their String.
func (a *SlotAudit) Crossings() []Crossing {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Crossing, 0, len(a.crossings))
	for _, c := range a.crossings {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// PipelineSlots returns, by operation, the most slots one plain pipeline
// of it touched (operations whose pipelines stayed in one slot are left
// out).
func (a *SlotAudit) PipelineSlots() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]int{}
	for op, n := range a.pipelines {
		if n > 1 {
			out[op] = n
		}
	}
	return out
}

// DialHook implements redis.Hook.
func (a *SlotAudit) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (a *SlotAudit) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		a.command(cmd)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook: each command is audited on its
// own; a transaction (MULTI first) also as a whole.
func (a *SlotAudit) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		tx := len(cmds) > 0 && strings.EqualFold(cmds[0].Name(), "multi")
		var all []string
		for _, c := range cmds {
			all = append(all, a.command(c)...)
		}
		if tx {
			a.record("MULTI", all)
		} else {
			a.mu.Lock()
			a.pipelines[a.op] = max(a.pipelines[a.op], len(slots(all)))
			a.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// command audits one command and returns its keys.
func (a *SlotAudit) command(cmd redis.Cmder) []string {
	args := cmd.Args()
	keys := CommandKeys(args)
	name := strings.ToUpper(cmd.Name())
	if strings.HasPrefix(name, "EVAL") && len(args) > 1 {
		// EVAL and EVALSHA of one script (as redis.Script.Run sends them)
		// are one entry: "EVAL <script name>", or "EVAL (unnamed)" for a
		// script NewSlotAudit was not given (the operation names it).
		sha := fmt.Sprint(args[1])
		if !strings.HasPrefix(name, "EVALSHA") {
			sum := sha1.Sum([]byte(sha))
			sha = hex.EncodeToString(sum[:])
		}
		s, ok := a.scripts[sha]
		if !ok {
			s = "(unnamed)"
		}
		name = "EVAL " + s
	}
	a.record(name, keys)
	return keys
}

func (a *SlotAudit) record(command string, keys []string) {
	if len(slots(keys)) <= 1 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	c := Crossing{Op: a.op, Command: command}
	tags := map[string]bool{}
	for _, k := range keys {
		n := a.normalize(k)
		if !slices.Contains(c.Keys, n) {
			c.Keys = append(c.Keys, n)
		}
		tags[keyslot.HashTag(n)] = true
	}
	sort.Strings(c.Keys)
	for t := range tags {
		c.Tags = append(c.Tags, t)
	}
	sort.Strings(c.Tags)
	a.crossings[c.String()] = c
}

func slots(keys []string) map[int]bool {
	s := map[int]bool{}
	for _, k := range keys {
		s[keyslot.Of(k)] = true
	}
	return s
}

// keyless are commands that name no key.
var keyless = map[string]bool{
	"ping": true, "info": true, "script": true, "publish": true, "subscribe": true,
	"psubscribe": true, "unsubscribe": true, "punsubscribe": true, "client": true, "hello": true,
	"cluster": true, "time": true, "wait": true, "select": true, "command": true, "scan": true,
	"keys": true, "dbsize": true, "multi": true, "exec": true, "discard": true, "function": true,
	"auth": true, "readonly": true, "echo": true, "config": true, "memory": true, "quit": true,
	"unwatch": true, "flushdb": true, "flushall": true, "role": true,
}

// CommandKeys returns the keys a command names, by the key positions
// Redis documents for it: numkeys-prefixed lists (EVAL, EVALSHA, FCALL,
// ZUNIONSTORE...), every argument (DEL, MGET, SINTER...), pairs (MSET),
// STREAMS lists (XREAD, XREADGROUP), and the first argument otherwise.
func CommandKeys(args []any) []string {
	if len(args) == 0 {
		return nil
	}
	s := make([]string, len(args))
	for i, a := range args {
		s[i] = fmt.Sprint(a)
	}
	name := strings.ToLower(s[0])
	numkeys := func(at int) []string {
		if at >= len(s) {
			return nil
		}
		n, err := strconv.Atoi(s[at])
		if err != nil || at+1+n > len(s) {
			return nil
		}
		return s[at+1 : at+1+n]
	}
	switch name {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
		return numkeys(2)
	case "zunion", "zinter", "zdiff", "zintercard", "sintercard", "lmpop", "zmpop":
		return numkeys(1)
	case "zunionstore", "zinterstore", "zdiffstore":
		return append([]string{s[1]}, numkeys(2)...)
	case "del", "unlink", "exists", "mget", "touch", "watch", "sunion", "sinter", "sdiff",
		"sunionstore", "sinterstore", "sdiffstore", "pfcount", "pfmerge":
		return s[1:]
	case "blpop", "brpop", "bzpopmin", "bzpopmax":
		return s[1 : len(s)-1]
	case "mset", "msetnx":
		var keys []string
		for i := 1; i < len(s); i += 2 {
			keys = append(keys, s[i])
		}
		return keys
	case "rename", "renamenx", "smove", "rpoplpush", "lmove", "blmove", "copy", "zrangestore", "brpoplpush":
		return s[1:min(3, len(s))]
	case "xread", "xreadgroup":
		for i, a := range s {
			if strings.EqualFold(a, "streams") {
				rest := s[i+1:]
				return rest[:len(rest)/2]
			}
		}
		return nil
	case "xinfo", "object", "xgroup":
		if len(s) > 2 {
			return s[2:3]
		}
		return nil
	}
	if keyless[name] || len(s) < 2 {
		return nil
	}
	return s[1:2]
}
