package broker

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// TrimAcked deletes the entries of a Redis stream that every consumer group
// of it has delivered and acknowledged, and nothing else: the stream keeps
// its oldest pending entry and everything after it, and everything after
// the least-advanced group's last delivered entry. A stream with no group
// is left alone (nobody has read it yet). Trimming by length instead would
// delete work nobody has done.
func TrimAcked(ctx context.Context, rdb redis.UniversalClient, stream string) (int64, error) {
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			return 0, nil
		}
		return 0, fmt.Errorf("reading groups of %s: %w", stream, err)
	}
	if len(groups) == 0 {
		return 0, nil
	}
	keep := ""
	for _, g := range groups {
		id := g.LastDeliveredID
		if g.Pending > 0 {
			p, err := rdb.XPending(ctx, stream, g.Name).Result()
			if err != nil {
				return 0, fmt.Errorf("reading pending entries of %s: %w", stream, err)
			}
			id = p.Lower
		}
		if keep == "" || lessID(id, keep) {
			keep = id
		}
	}
	if keep == "" || keep == "0-0" {
		return 0, nil
	}
	n, err := rdb.XTrimMinID(ctx, stream, keep).Result()
	if err != nil {
		return 0, fmt.Errorf("trimming %s: %w", stream, err)
	}
	return n, nil
}

// lessID compares stream ids "<ms>-<seq>".
func lessID(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	if len(am) != len(bm) {
		return len(am) < len(bm)
	}
	if am != bm {
		return am < bm
	}
	if len(as) != len(bs) {
		return len(as) < len(bs)
	}
	return as < bs
}
