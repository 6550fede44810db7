package routing

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/fnv"
)

// SharedLanePrefix prefixes every shared lane name under the default broker
// prefix; Names.SharedPrefix gives it for any prefix.
const SharedLanePrefix = "tasklane.lane.shared."

// SharedLaneName is the name of shared lane i under the default broker
// prefix; Names.Shared gives it for any prefix.
func SharedLaneName(i int) string { return Names{}.Shared(i) }

// Table maps tenants to lanes.
type Table interface {
	// LaneFor returns the lane for one task of tenant; key (the task id)
	// spreads a tenant's tasks over its shard.
	LaneFor(tenant, key string) string
	// Shard returns the lanes tenant's tasks may go to.
	Shard(tenant string) []string
	// Lanes lists every lane that must be declared and consumed.
	Lanes() []string
}

// Static is a Table over a fixed pool of shared lanes.
type Static struct {
	names     Names
	lanes     []string
	shardSize int
}

// NewStatic builds a table of shared lanes under the default broker prefix
// with shards of shardSize lanes. shared must be at least 1 and shardSize
// between 1 and shared.
func NewStatic(shared, shardSize int) (*Static, error) {
	return NewStaticNamed(Names{}, shared, shardSize)
}

// NewStaticNamed is NewStatic with lanes named by names (config
// broker.prefix).
func NewStaticNamed(names Names, shared, shardSize int) (*Static, error) {
	if shared < 1 || shardSize < 1 || shardSize > shared {
		return nil, fmt.Errorf("invalid lanes: shared=%d shard_size=%d (need 1 <= shard_size <= shared)", shared, shardSize)
	}
	lanes := make([]string, shared)
	for i := range lanes {
		lanes[i] = names.Shared(i)
	}
	return &Static{names: names, lanes: lanes, shardSize: shardSize}, nil
}

// Names returns how the table names its lanes.
func (s *Static) Names() Names { return s.names }

// Lanes lists the shared lanes.
func (s *Static) Lanes() []string { return append([]string(nil), s.lanes...) }

// Shard returns tenant's lanes.
func (s *Static) Shard(tenant string) []string {
	idx := ShardIndexes(tenant, len(s.lanes), s.shardSize)
	out := make([]string, len(idx))
	for i, j := range idx {
		out[i] = s.lanes[j]
	}
	return out
}

// LaneFor picks one lane of tenant's shard by hashing key.
func (s *Static) LaneFor(tenant, key string) string {
	idx := ShardIndexes(tenant, len(s.lanes), s.shardSize)
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return s.lanes[idx[h.Sum32()%uint32(len(idx))]]
}

// ShardIndexes returns k distinct indexes in [0,n) chosen for tenant. The
// choice depends only on (tenant, n, k): it is the same in every process and
// must stay the same across versions, or tenants would move lanes on upgrade.
//
// Algorithm: a partial Fisher-Yates shuffle of 0..n-1 driven by the 64-bit
// words of SHA-256(tenant || counter).
func ShardIndexes(tenant string, n, k int) []int {
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	var block [sha256.Size]byte
	var counter uint32
	word := len(block) // exhausted
	next := func() uint64 {
		if word+8 > len(block) {
			buf := make([]byte, 0, len(tenant)+4)
			buf = append(buf, tenant...)
			buf = binary.BigEndian.AppendUint32(buf, counter)
			counter++
			block = sha256.Sum256(buf)
			word = 0
		}
		v := binary.BigEndian.Uint64(block[word:])
		word += 8
		return v
	}
	for i := 0; i < k; i++ {
		j := i + int(next()%uint64(n-i))
		perm[i], perm[j] = perm[j], perm[i]
	}
	return perm[:k]
}
