package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"
)

// Fields of a raw Redis stream entry.
const (
	streamFieldIndex = "i"
	streamFieldSent  = "sent"
	streamFieldBody  = "p"
	streamGroup      = "bench"
)

// streamsTarget is the raw broker on Redis streams, the ceiling the
// redisstream driver is measured against: entries XADDed to --raw-queues
// streams and read by --raw-consumers consumers per stream of one consumer
// group, each XREADGROUP taking up to --raw-prefetch entries, the entries
// of a read acknowledged with one XACK.
type streamsTarget struct {
	*rawResults
	f       *benchFlags
	rdb     *redis.Client
	streams []string
	body    string
	// batches, with a window, feeds the pipelining publishers: each sends
	// the requests waiting, up to the window's entries, in one pipeline.
	batches chan *streamBatch
}

// streamBatch is one submit request waiting for a publisher.
type streamBatch struct {
	lo, hi int
	ok     int
	done   chan struct{}
}

func (t *streamsTarget) xadd(ctx context.Context, p redis.Pipeliner, i int) *redis.StringCmd {
	return p.XAdd(ctx, &redis.XAddArgs{
		Stream: t.streams[i%len(t.streams)],
		Values: []any{streamFieldIndex, i, streamFieldSent, time.Now().UnixNano(), streamFieldBody, t.body},
	})
}

// submit appends entries [lo,hi): in one pipeline of its own without a
// window (the lanes shape), else through the pipelining publishers.
func (t *streamsTarget) submit(ctx context.Context, lo, hi int) (int, string) {
	if t.batches == nil {
		return t.publish(ctx, []*streamBatch{{lo: lo, hi: hi}})
	}
	b := &streamBatch{lo: lo, hi: hi, done: make(chan struct{})}
	select {
	case t.batches <- b:
	case <-ctx.Done():
		return 0, "cancelled"
	}
	<-b.done
	if b.ok < hi-lo {
		return b.ok, "xadd"
	}
	return b.ok, ""
}

// publish sends the batches' XADDs in one pipeline and sets each batch's
// ok count; it returns the total and an error kind.
func (t *streamsTarget) publish(ctx context.Context, batches []*streamBatch) (int, string) {
	cmds := make([][]*redis.StringCmd, len(batches))
	_, _ = t.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, b := range batches {
			for i := b.lo; i < b.hi; i++ {
				cmds[k] = append(cmds[k], t.xadd(ctx, p, i))
			}
		}
		return nil
	})
	total, kind := 0, ""
	for k, b := range batches {
		b.ok = 0
		for _, c := range cmds[k] {
			if c.Err() == nil {
				b.ok++
			} else {
				kind = "xadd"
			}
		}
		total += b.ok
	}
	return total, kind
}

// publisher is one pipelining publisher: it takes a waiting request, adds
// the others waiting up to the window's entries, and sends them in one
// pipeline.
func (t *streamsTarget) publisher(ctx context.Context) {
	for {
		var first *streamBatch
		select {
		case first = <-t.batches:
		case <-ctx.Done():
			return
		}
		batches, n := []*streamBatch{first}, first.hi-first.lo
	more:
		for n < t.f.raw.window {
			select {
			case b := <-t.batches:
				batches = append(batches, b)
				n += b.hi - b.lo
			default:
				break more
			}
		}
		t.publish(ctx, batches)
		for _, b := range batches {
			close(b.done)
		}
	}
}

// consume reads the group's new entries of stream as consumer name until
// ctx ends, acknowledging each read's entries with one XACK.
func (t *streamsTarget) consume(ctx context.Context, stream, name string, fail func(error)) {
	count := int64(max(t.f.raw.prefetch, 1))
	for ctx.Err() == nil {
		res, err := t.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: streamGroup, Consumer: name, Streams: []string{stream, ">"}, Count: count, Block: 100 * time.Millisecond,
		}).Result()
		if errors.Is(err, redis.Nil) || ctx.Err() != nil {
			continue
		}
		if err != nil {
			fail(fmt.Errorf("XREADGROUP %s: %w", stream, err))
			return
		}
		started := time.Now()
		var ids []string
		var idx, sent []int64
		for _, s := range res {
			for _, m := range s.Messages {
				ids = append(ids, m.ID)
				idx = append(idx, fieldInt(m.Values[streamFieldIndex]))
				sent = append(sent, fieldInt(m.Values[streamFieldSent]))
			}
		}
		if len(ids) == 0 {
			continue
		}
		if err := t.rdb.XAck(ctx, stream, streamGroup, ids...).Err(); err != nil {
			if ctx.Err() == nil {
				fail(fmt.Errorf("XACK %s: %w", stream, err))
			}
			return
		}
		finished := time.Now()
		for k := range ids {
			t.record(idx[k], sent[k], started, finished)
		}
	}
}

func fieldInt(v any) int64 {
	s, _ := v.(string)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func runRawStreams(ctx context.Context, f *benchFlags, url string, progress io.Writer) (*Report, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("raw broker: %w", err)
	}
	// Every blocked reader holds a connection, and so does every
	// publisher (lanes shape: every submitter).
	opt.PoolSize = f.raw.queues*f.raw.consumers + f.concurrency + f.raw.channels + 4
	t := &streamsTarget{
		rawResults: newRawResults(f.count),
		f:          f,
		rdb:        redis.NewClient(opt),
		body:       string(rawBody(f)),
	}
	defer t.rdb.Close()
	if err := t.rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("raw broker: connecting to Redis: %w", err)
	}
	run := strings.ToLower(ulid.Make().String())
	defer func() {
		// The run's context may have ended: delete on a fresh one.
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		if len(t.streams) > 0 {
			if err := t.rdb.Del(dctx, t.streams...).Err(); err != nil {
				fmt.Fprintf(progress, "raw broker: deleting streams %s: %v\n", strings.Join(t.streams, " "), err)
			}
		}
	}()
	for i := range f.raw.queues {
		s := fmt.Sprintf("tasklane.bench.%s.%02d", run, i)
		t.streams = append(t.streams, s)
		if err := t.rdb.XGroupCreateMkStream(ctx, s, streamGroup, "0").Err(); err != nil {
			return nil, fmt.Errorf("raw broker: creating stream %s: %w", s, err)
		}
	}

	failed := make(chan error, 1)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	workCtx, stopWork := context.WithCancel(ctx)
	var workers sync.WaitGroup
	defer func() {
		stopWork()
		workers.Wait()
	}()
	if !f.submitOnly {
		for _, s := range t.streams {
			for c := range f.raw.consumers {
				workers.Go(func() { t.consume(workCtx, s, fmt.Sprintf("c%d", c), fail) })
			}
		}
	}
	if f.raw.window > 0 {
		t.batches = make(chan *streamBatch)
		for range f.raw.channels {
			workers.Go(func() { t.publisher(workCtx) })
		}
	}

	st, submitDur, err := runLoad(ctx, f, t, progress, failed)
	if err != nil {
		return nil, fmt.Errorf("raw broker: %w", err)
	}
	return t.report(f, st, submitDur, t.streams), nil
}
