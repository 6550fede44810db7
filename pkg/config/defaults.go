package config

import (
	"cmp"
	"slices"
)

// WithDefaults returns a copy of c with every zero field that has a default set
// to it. Lists are copied, so c is left unchanged.
func (c *Config) WithDefaults() *Config {
	out := *c

	out.Server.Addr = cmp.Or(out.Server.Addr, AddrDefault)
	out.Server.MaxEventBytes = cmp.Or(out.Server.MaxEventBytes, MaxEventBytesDefault)
	out.Server.MaxBatchBytes = cmp.Or(out.Server.MaxBatchBytes, max(MaxBatchBytesDefault, out.Server.MaxEventBytes))
	out.Server.MaxBatchEvents = cmp.Or(out.Server.MaxBatchEvents, MaxBatchEventsDefault)
	out.Server.BulkSyncMax = cmp.Or(out.Server.BulkSyncMax, BulkSyncMaxDefault)
	out.Server.AdminKeys = slices.Clone(out.Server.AdminKeys)
	out.Server.WriteTimeout = cmp.Or(out.Server.WriteTimeout, WriteTimeoutDefault)
	out.Server.MaxHeaderBytes = cmp.Or(out.Server.MaxHeaderBytes, MaxHeaderBytesDefault)

	out.Broker.Driver = cmp.Or(out.Broker.Driver, BrokerDriverDefault)
	if out.Broker.Driver == BrokerDriverAMQP {
		out.Broker.URL = cmp.Or(out.Broker.URL, AMQPURLDefault)
	}
	out.Broker.PublishChannels = cmp.Or(out.Broker.PublishChannels, PublishChannelsDefault)
	out.Broker.Prefetch = cmp.Or(out.Broker.Prefetch, PrefetchDefault)
	out.Broker.Prefix = cmp.Or(out.Broker.Prefix, BrokerPrefixDefault)

	out.Redis.URL = cmp.Or(out.Redis.URL, RedisURLDefault)

	out.Lanes.Shared = cmp.Or(out.Lanes.Shared, LanesSharedDefault)
	out.Lanes.ShardSize = cmp.Or(out.Lanes.ShardSize, min(ShardSizeDefault, max(out.Lanes.Shared, 1)))
	out.Lanes.QueueType = cmp.Or(out.Lanes.QueueType, QueueTypeDefault)

	out.Dispatcher.ConsumersPerLane = cmp.Or(out.Dispatcher.ConsumersPerLane, ConsumersPerLaneDefault)
	out.Notifier.Consumers = cmp.Or(out.Notifier.Consumers, NotifierConsumersDefault)
	out.Notifier.SinkTimeout = cmp.Or(out.Notifier.SinkTimeout, SinkTimeoutDefault)
	out.Notifier.SinkAttempts = cmp.Or(out.Notifier.SinkAttempts, SinkAttemptsDefault)
	out.Notifier.SinkConcurrency = cmp.Or(out.Notifier.SinkConcurrency, SinkConcurrencyDefault)
	out.Notifier.SinkBacklog = cmp.Or(out.Notifier.SinkBacklog, SinkBacklogDefault)
	out.Dispatcher.LeaseTTL = cmp.Or(out.Dispatcher.LeaseTTL, LeaseTTLDefault)
	out.Dispatcher.DrainTimeout = cmp.Or(out.Dispatcher.DrainTimeout, DrainTimeoutDefault)
	out.Dispatcher.MaxResultBytes = cmp.Or(out.Dispatcher.MaxResultBytes, MaxResultBytesDefault)
	out.Dispatcher.MaxRunning = cmp.Or(out.Dispatcher.MaxRunning, MaxRunningDefault)

	// A duplicate submission answers with the tasks first made, so a task
	// must outlive its dedup entry (decision 0019): an unset retention is
	// at least a dedup window set longer than its default, and an unset
	// dedup window at most the retentions set shorter than its default.
	out.Ledger.Retention = cmp.Or(out.Ledger.Retention, max(RetentionDefault, out.Ledger.DedupWindow))
	out.Ledger.DeadRetention = cmp.Or(out.Ledger.DeadRetention, max(DeadRetentionDefault, out.Ledger.DedupWindow))
	out.Ledger.DedupWindow = cmp.Or(out.Ledger.DedupWindow, min(DedupWindowDefault, out.Ledger.Retention, out.Ledger.DeadRetention))
	out.Ledger.PublishGuard = cmp.Or(out.Ledger.PublishGuard, PublishGuardDefault)
	out.Ledger.KeyPrefix = cmp.Or(out.Ledger.KeyPrefix, KeyPrefixDefault)

	out.Routing.Window = cmp.Or(out.Routing.Window, RoutingWindowDefault)
	out.Routing.HotShare = cmp.Or(out.Routing.HotShare, HotShareDefault)
	out.Routing.HotBacklog = cmp.Or(out.Routing.HotBacklog, HotBacklogDefault)
	out.Routing.Cooldown = cmp.Or(out.Routing.Cooldown, CooldownDefault)
	out.Routing.MaxDedicated = cmp.Or(out.Routing.MaxDedicated, MaxDedicatedDefault)
	out.Routing.LaneGrace = cmp.Or(out.Routing.LaneGrace, LaneGraceDefault)

	out.Tenants = slices.Clone(out.Tenants)
	for i := range out.Tenants {
		out.Tenants[i].APIKeys = slices.Clone(out.Tenants[i].APIKeys)
	}

	out.Functions = slices.Clone(out.Functions)
	for i := range out.Functions {
		f := &out.Functions[i]
		f.Events = slices.Clone(f.Events)
		f.Tenants = slices.Clone(f.Tenants)
		f.Timeout = cmp.Or(f.Timeout, FunctionTimeoutDefault)
		f.Retry.MaxAttempts = cmp.Or(f.Retry.MaxAttempts, MaxAttemptsDefault)
		f.Retry.InitialBackoff = cmp.Or(f.Retry.InitialBackoff, InitialBackoffDefault)
		f.Retry.MaxBackoff = cmp.Or(f.Retry.MaxBackoff, max(MaxBackoffDefault, f.Retry.InitialBackoff))
		if f.Adaptive != nil {
			a := *f.Adaptive
			a.Increase = cmp.Or(a.Increase, AdaptiveIncreaseDefault)
			a.Interval = cmp.Or(a.Interval, AdaptiveIntervalDefault)
			a.Decrease = cmp.Or(a.Decrease, AdaptiveDecreaseDefault)
			a.ErrorRate = cmp.Or(a.ErrorRate, AdaptiveErrorRateDefault)
			a.ErrorCount = cmp.Or(a.ErrorCount, AdaptiveErrorCountDefault)
			f.Adaptive = &a
		}
	}

	out.Subscriptions = slices.Clone(out.Subscriptions)
	for i := range out.Subscriptions {
		flt := &out.Subscriptions[i].Filter
		flt.Types = slices.Clone(flt.Types)
		flt.Tenants = slices.Clone(flt.Tenants)
		flt.Functions = slices.Clone(flt.Functions)
	}

	out.Triggers = slices.Clone(out.Triggers)
	for i := range out.Triggers {
		out.Triggers[i] = out.Triggers[i].withDefaults()
	}
	return &out
}
