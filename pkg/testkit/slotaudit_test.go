package testkit

import (
	"context"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestCommandKeys(t *testing.T) {
	for _, c := range []struct {
		args []any
		want []string
	}{
		{[]any{"evalsha", "abc", 2, "k1", "k2", "arg"}, []string{"k1", "k2"}},
		{[]any{"eval", "return 1", 0}, nil},
		{[]any{"zunionstore", "dst", 2, "a", "b", "weights", 1, 2}, []string{"dst", "a", "b"}},
		{[]any{"del", "a", "b"}, []string{"a", "b"}},
		{[]any{"mset", "a", 1, "b", 2}, []string{"a", "b"}},
		{[]any{"xreadgroup", "group", "g", "c", "count", 1, "streams", "s1", "s2", ">", ">"}, []string{"s1", "s2"}},
		{[]any{"blpop", "l1", "l2", 0}, []string{"l1", "l2"}},
		{[]any{"hset", "h", "f", "v"}, []string{"h"}},
		{[]any{"publish", "chan", "msg"}, nil},
		{[]any{"ping"}, nil},
	} {
		got := CommandKeys(c.args)
		if !slices.Equal(got, c.want) && (len(got) > 0 || len(c.want) > 0) {
			t.Errorf("CommandKeys(%v) = %q, want %q", c.args, got, c.want)
		}
	}
}

func TestSlotAuditReportsCrossSlotScriptsAndTransactions(t *testing.T) {
	rdb, prefix := Redis(t)
	script := redis.NewScript(`return redis.call('MGET', KEYS[1], KEYS[2])`)
	audit := NewSlotAudit(map[string]*redis.Script{"pair": script}, nil)
	rdb.AddHook(audit)
	ctx := context.Background()
	tagged := prefix + ":{x}:"

	audit.Op("same-slot")
	_ = script.Run(ctx, rdb, []string{tagged + "a", tagged + "b"}).Err()
	_, _ = rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, tagged+"a", 1, 0)
		p.Set(ctx, tagged+"b", 1, 0)
		return nil
	})
	audit.Op("cross-slot")
	_ = script.Run(ctx, rdb, []string{prefix + ":a", prefix + ":b"}).Err()
	_, _ = rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, prefix+":a", 1, 0)
		p.Set(ctx, prefix+":b", 1, 0)
		return nil
	})
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Get(ctx, prefix+":a")
		p.Get(ctx, prefix+":b")
		return nil
	})

	var got []string
	for _, c := range audit.Crossings() {
		got = append(got, c.Op+" "+c.Command)
	}
	want := []string{"cross-slot EVAL pair", "cross-slot MULTI"}
	if !slices.Equal(got, want) {
		t.Fatalf("crossings %q, want %q", got, want)
	}
	if n := audit.PipelineSlots()["cross-slot"]; n != 2 {
		t.Fatalf("the plain pipeline touched %d slots, want 2 (a cost, not a crossing)", n)
	}
}
