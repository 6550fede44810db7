// Package redisconn checks that the Redis at redis.url is what redis.cluster
// says: one Redis (standalone, or a master with replicas) or a Redis
// Cluster whose slots are all served. A mismatch is reported as a
// *ModeError naming both sides: the start-up shows it as the reason the
// process is not ready and keeps checking (an operator may be fixing the
// Redis side), rather than running the ledger against a server that would
// answer MOVED or CROSSSLOT to its scripts.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterSlots is the number of hash slots a Redis Cluster serves.
const ClusterSlots = 16384

// ClusterStateReload is how often a cluster client should read the slot
// map again (go-redis's ClusterOptions.ClusterStateReloadInterval, 60s by
// default). go-redis reads it again at once on a MOVED or READONLY answer,
// but not when a master stops answering: its slots are routed to the dead
// node (dial errors) until the next periodic read, even after a replica
// took over. One CLUSTER SLOTS a second per client bounds that to a
// second after the failover.
const ClusterStateReload = time.Second

// Node is what one Redis server says about itself.
type Node struct {
	// Addr is the server's address.
	Addr string
	// Cluster is true for a server with cluster support on
	// (cluster-enabled yes).
	Cluster bool
	// State is the cluster's state as the node sees it ("ok" or "fail");
	// SlotsAssigned and SlotsOK count the slots assigned to a node and
	// those served; KnownNodes counts the nodes it knows. Set for a cluster
	// node only.
	State                  string
	SlotsAssigned, SlotsOK int
	KnownNodes             int
}

// ModeError is a Redis that is not what the configuration says.
type ModeError struct {
	// Node is the server that was asked.
	Node Node
	// WantCluster is redis.cluster.
	WantCluster bool
	// Msg says what is wrong and what to change.
	Msg string
}

func (e *ModeError) Error() string { return e.Msg }

// Inspect asks the server behind c (a single-server client) what it is:
// INFO cluster, and CLUSTER INFO on a cluster node. A server that answers
// INFO cluster with an error (an embedded or proxy Redis without that
// section) counts as standalone; a connection error is returned as is.
func Inspect(ctx context.Context, c *redis.Client) (Node, error) {
	n := Node{Addr: c.Options().Addr}
	info, err := c.Info(ctx, "cluster").Result()
	var rerr redis.Error
	switch {
	case errors.As(err, &rerr):
		return n, nil
	case err != nil:
		return n, err
	}
	n.Cluster = field(info, "cluster_enabled") == "1"
	if !n.Cluster {
		return n, nil
	}
	ci, err := c.ClusterInfo(ctx).Result()
	if err != nil {
		return n, fmt.Errorf("reading CLUSTER INFO of %s: %w", n.Addr, err)
	}
	n.State = field(ci, "cluster_state")
	n.SlotsAssigned, _ = strconv.Atoi(field(ci, "cluster_slots_assigned"))
	n.SlotsOK, _ = strconv.Atoi(field(ci, "cluster_slots_ok"))
	n.KnownNodes, _ = strconv.Atoi(field(ci, "cluster_known_nodes"))
	return n, nil
}

// Check returns nil when n fits redis.cluster (wantCluster), else a
// *ModeError: a cluster node configured as one Redis, a standalone Redis
// configured as a cluster, or a cluster that does not serve every slot
// (being created, slots unassigned, a master down without a replica).
func (n Node) Check(wantCluster bool) error {
	fail := func(format string, args ...any) error {
		return &ModeError{Node: n, WantCluster: wantCluster, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case n.Cluster && !wantCluster:
		return fail("redis.url: %s is a Redis Cluster node (cluster_enabled:1) but redis.cluster is false: "+
			"point redis.url at a single Redis, or set redis.cluster: true", n.Addr)
	case !n.Cluster && wantCluster:
		return fail("redis.url: %s is not a Redis Cluster node (cluster support disabled) but redis.cluster is true: "+
			"point redis.url at a cluster's nodes, or set redis.cluster: false", n.Addr)
	case n.Cluster && (n.State != "ok" || n.SlotsOK < ClusterSlots):
		return fail("redis.url: the Redis Cluster is not ready (as %s sees it: cluster_state:%s, %d of %d slots assigned, %d served, %d nodes known)",
			n.Addr, n.State, n.SlotsAssigned, ClusterSlots, n.SlotsOK, n.KnownNodes)
	}
	return nil
}

// CheckURL inspects the first server of rawURL that answers (every seed
// address of a cluster URL, "redis://h1:p1?addr=h2:p2", in turn) and
// checks it against wantCluster. It returns the last connection error when
// none answers, and a *ModeError when the one that answers is not what
// wantCluster says.
func CheckURL(ctx context.Context, rawURL string, wantCluster bool) error {
	addrs, opt, err := seeds(rawURL, wantCluster)
	if err != nil {
		return err
	}
	var last error
	for _, addr := range addrs {
		o := *opt
		o.Addr = addr
		// The caller retries the whole check.
		o.MaxRetries, o.DialerRetries = -1, 1
		c := redis.NewClient(&o)
		n, err := Inspect(ctx, c)
		_ = c.Close()
		if err != nil {
			last = err
			continue
		}
		return n.Check(wantCluster)
	}
	return last
}

// seeds are the addresses of rawURL and the options to reach each.
func seeds(rawURL string, cluster bool) ([]string, *redis.Options, error) {
	if !cluster {
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, nil, err
		}
		return []string{opt.Addr}, opt, nil
	}
	co, err := redis.ParseClusterURL(rawURL)
	if err != nil {
		return nil, nil, err
	}
	opt := &redis.Options{
		Username: co.Username, Password: co.Password, TLSConfig: co.TLSConfig,
		DialTimeout: co.DialTimeout, ReadTimeout: co.ReadTimeout, WriteTimeout: co.WriteTimeout,
	}
	return co.Addrs, opt, nil
}

// field is the value of "name:value" in an INFO-style reply.
func field(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}
