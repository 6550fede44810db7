package broker

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/testkit"
)

// publishResult publishes msg with the redisstream driver's result
// publisher and returns the entry it appended to the results stream (which
// it deletes when the test ends).
func publishResult(t *testing.T, d Driver, rdb *redis.Client, routingKey string, msg *message.Message) redis.XMessage {
	t.Helper()
	ctx := context.Background()
	last := "0-0"
	if xs, err := rdb.XRevRangeN(ctx, contracts.ResultsExchange, "+", "-", 1).Result(); err == nil && len(xs) > 0 {
		last = xs[0].ID
	}
	msg.SetContext(ctx)
	require.NoError(t, d.ResultPublisher().Publish(routingKey, msg))
	// Other tests append to the same stream: find ours by its uuid.
	xs, err := rdb.XRange(ctx, contracts.ResultsExchange, "("+last, "+").Result()
	require.NoError(t, err)
	for _, x := range xs {
		if x.Values[redisstream.UUIDHeaderKey] == msg.UUID || x.Values[fieldUUID] == msg.UUID {
			t.Cleanup(func() { _ = rdb.XDel(context.Background(), contracts.ResultsExchange, x.ID).Err() })
			return x
		}
	}
	t.Fatalf("no results entry with uuid %s after %s", msg.UUID, last)
	return redis.XMessage{}
}

// Result entries are what watermill-redisstream's default unmarshaller
// reads: the UUID, the metadata (the ce_* attributes and the routing key)
// and the payload, as published; the routing key is also a field.
func TestResultStreamEntriesReadByWatermillDefaultUnmarshaller(t *testing.T) {
	d, rdb, _ := streamDriver(t)
	msg := message.NewMessage(testkit.UniqueName("task")+".succeeded", []byte(`{"id":"t1","state":"succeeded"}`))
	msg.Metadata.Set("ce_id", msg.UUID)
	msg.Metadata.Set("ce_type", "io.tasklane.task.succeeded")
	msg.Metadata.Set("ce_tenantid", "acme")
	entry := publishResult(t, d, rdb, "acme.work.succeeded", msg)

	require.Equal(t, "acme.work.succeeded", entry.Values[FieldRoutingKey])
	for _, got := range []func(map[string]any) (*message.Message, error){
		redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal,
		ResultUnmarshaller{}.Unmarshal,
	} {
		back, err := got(entry.Values)
		require.NoError(t, err)
		require.Equal(t, msg.UUID, back.UUID)
		require.Equal(t, string(msg.Payload), string(back.Payload))
		require.Equal(t, message.Metadata{
			"ce_id": msg.UUID, "ce_type": "io.tasklane.task.succeeded", "ce_tenantid": "acme",
			FieldRoutingKey: "acme.work.succeeded",
		}, back.Metadata)
	}
}

// Entries an earlier release wrote on the results stream (uuid, JSON
// metadata, payload) stay readable with ResultUnmarshaller; an entry in
// neither format is an error, not a message.
func TestResultUnmarshallerReadsEarlierEntries(t *testing.T) {
	t.Parallel()
	rdb, prefix := testkit.Redis(t) // deletes the prefix's keys at the end
	stream := prefix + ":results"
	ctx := context.Background()
	old := message.NewMessage("t1.succeeded", []byte(`{"id":"t1"}`))
	old.Metadata.Set("ce_id", "t1.succeeded")
	old.Metadata.Set(FieldRoutingKey, "acme.work.succeeded")
	values, err := streamMarshaler{}.Marshal(old)
	require.NoError(t, err)
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: values}).Err())
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{"hello": "world"}}).Err())
	require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: map[string]any{fieldUUID: "u", fieldMetadata: "{not json"}}).Err())
	xs, err := rdb.XRange(ctx, stream, "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, xs, 3)

	back, err := ResultUnmarshaller{}.Unmarshal(xs[0].Values)
	require.NoError(t, err)
	require.Equal(t, old.UUID, back.UUID)
	require.Equal(t, `{"id":"t1"}`, string(back.Payload))
	require.Equal(t, message.Metadata{"ce_id": "t1.succeeded", FieldRoutingKey: "acme.work.succeeded"}, back.Metadata)
	_, err = ResultUnmarshaller{}.Unmarshal(xs[1].Values)
	require.ErrorContains(t, err, "neither")
	_, err = ResultUnmarshaller{}.Unmarshal(xs[2].Values)
	require.ErrorContains(t, err, "earlier release")
}
