package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFollowInterval(t *testing.T) {
	require.Equal(t, FollowIntervalDefault, followInterval(0))
	require.Equal(t, FollowIntervalMin, followInterval(time.Millisecond))
	require.Equal(t, FollowIntervalMax, followInterval(time.Hour))
	require.Equal(t, 2*time.Second, followInterval(2*time.Second))
}
