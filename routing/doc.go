// Package routing decides which lane carries a tenant's tasks.
//
// Lanes are RabbitMQ queues (or Redis streams). A fixed pool of shared lanes,
// tasklane.lane.shared.00 .. NN, serves every tenant. Each tenant is mapped to
// a shuffle shard: a stable, pseudo-random combination of ShardSize of the
// shared lanes, so that two tenants rarely share all their lanes and one
// tenant's flood or poison load reaches only the few tenants that share its
// exact shard.
//
// # Blast radius
//
// With N shared lanes and shard size S there are C(N,S) shards. Two tenants
// share their whole shard with probability 1/C(N,S):
//
//	N=16, S=2: 120 shards, full overlap 0.83%, no overlap 75.8%
//	N=16, S=3: 560 shards, full overlap 0.18%, no overlap 51.1%
//	N=32, S=4: 35,960 shards, full overlap 0.0028%
//
// TestShardOverlapMatchesBlastRadius checks the first two rows by
// simulation.
//
// # Dynamic routing
//
// The Table interface is what gateways and the scheduler ask. [Dynamic]
// adds to the static shards: the least-backlogged lane of the shard for
// each task, dedicated lanes for hot tenants, and retiring lanes (merged
// back, consumed until deleted empty), from a versioned table in Redis
// ([Store], changed only by compare-and-set). [SampleAndHold] and
// [Reporter] find hot tenants per window; the [Controller] splits and
// merges them.
package routing
