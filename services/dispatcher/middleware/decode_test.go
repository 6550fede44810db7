package middleware_test

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/taskmsg"
	"github.com/tasklane/tasklane/services/dispatcher/internal/chantest"
	"github.com/tasklane/tasklane/services/dispatcher/middleware"
)

func TestDecodePassesDeliveryOn(t *testing.T) {
	t.Parallel()
	ps := chantest.New(t)
	got := make(chan *middleware.Delivery, 1)
	topic, _ := route(t, ps, func(msg *message.Message) error {
		got <- middleware.DeliveryFrom(msg.Context())
		return nil
	}, middleware.Decode())

	require.NoError(t, ps.Publish(topic, taskMessage(t, "acme", "t1", "fn")))
	d := receive(t, got)
	require.NotNil(t, d)
	require.Equal(t, taskmsg.Ref{TaskID: "t1", Tenant: "acme", Function: "fn", Priority: 7}, d.Ref)
	require.Equal(t, "ev-t1", d.Event.ID())
	require.True(t, ps.WaitSettled(t, "t1", 1, within)[0].Acked)
}

// What is not a task message reaches the next middleware with the parse
// error recorded and no task reference; Decode itself quarantines nothing.
func TestDecodeRecordsParseError(t *testing.T) {
	t.Parallel()
	ps := chantest.New(t)
	got := make(chan *middleware.Delivery, 1)
	topic, _ := route(t, ps, func(msg *message.Message) error {
		got <- middleware.DeliveryFrom(msg.Context())
		return nil
	}, middleware.Decode())

	require.NoError(t, ps.Publish(topic, message.NewMessage("m-bare", []byte("x"))))
	d := receive(t, got)
	require.NotNil(t, d)
	require.ErrorContains(t, d.ParseErr, taskmsg.KeyTaskID)
	require.Equal(t, taskmsg.Ref{}, d.Ref)
	require.Nil(t, d.Event)
	require.True(t, ps.WaitSettled(t, "m-bare", 1, within)[0].Acked)
}
