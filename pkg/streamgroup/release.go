package streamgroup

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// releaseScript moves entry ARGV[3] of stream KEYS[1], group ARGV[1], to
// consumer ARGV[4] only if it is still pending on ARGV[2]: another reader
// may have taken it over meanwhile (this one's heartbeat stalled), and
// moving it then would have it handled a third time.
var releaseScript = redis.NewScript(`
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if p[1] and p[1][2] == ARGV[2] then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[4], 0, ARGV[3], 'JUSTID')
  return 1
end
return 0`)

// release moves an entry this consumer holds to OrphanConsumer (see
// Release). If that fails the entry stays pending here, as after Leave.
func (r *Reader) release(k entryKey) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := releaseScript.Run(ctx, r.cfg.Client, []string{k.stream}, r.cfg.Group, r.Consumer(), k.id, OrphanConsumer).Err()
	if err != nil {
		r.cfg.Logger.Warn("releasing a "+r.cfg.What+" entry; it stays pending here", "stream", k.stream, "entry", k.id, "error", err)
	}
}
