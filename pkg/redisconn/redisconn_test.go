package redisconn_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/pkg/redisconn"
	"github.com/tasklane/tasklane/pkg/testkit"
)

func TestCheckNamesTheMismatch(t *testing.T) {
	ready := redisconn.Node{Addr: "h:1", Cluster: true, State: "ok", SlotsAssigned: 16384, SlotsOK: 16384, KnownNodes: 6}
	unassigned := redisconn.Node{Addr: "h:1", Cluster: true, State: "fail", KnownNodes: 1}
	standalone := redisconn.Node{Addr: "h:1"}
	for _, c := range []struct {
		node    redisconn.Node
		cluster bool
		want    string // "" for nil
	}{
		{standalone, false, ""},
		{ready, true, ""},
		{ready, false, "h:1 is a Redis Cluster node (cluster_enabled:1) but redis.cluster is false"},
		{standalone, true, "h:1 is not a Redis Cluster node (cluster support disabled) but redis.cluster is true"},
		{unassigned, true, "the Redis Cluster is not ready (as h:1 sees it: cluster_state:fail, 0 of 16384 slots assigned, 0 served, 1 nodes known)"},
	} {
		err := c.node.Check(c.cluster)
		if c.want == "" {
			require.NoError(t, err)
			continue
		}
		var me *redisconn.ModeError
		require.ErrorAs(t, err, &me)
		require.Contains(t, err.Error(), c.want)
		require.True(t, strings.HasPrefix(err.Error(), "redis.url: "), "the error names the setting: %v", err)
	}
}

func TestInspectStandalone(t *testing.T) {
	rdb, _ := testkit.Redis(t)
	n, err := redisconn.Inspect(context.Background(), rdb)
	require.NoError(t, err)
	require.False(t, n.Cluster, "the test Redis is one server")
	require.NoError(t, n.Check(false))
	require.Error(t, n.Check(true))
}

func TestCheckURLReturnsTheConnectionError(t *testing.T) {
	// A port nothing listens on: the error is the dial's, for the start-up
	// to retry, not a ModeError.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	for _, cluster := range []bool{false, true} {
		err := redisconn.CheckURL(context.Background(), "redis://"+addr+"?addr="+addr, cluster)
		if !cluster {
			err = redisconn.CheckURL(context.Background(), "redis://"+addr, cluster)
		}
		require.Error(t, err)
		var me *redisconn.ModeError
		require.False(t, errors.As(err, &me), "a connection error is not a mode error: %v", err)
	}
}
