package ledger

import (
	"strconv"

	"github.com/tasklane/tasklane/pkg/keyslot"
)

// The key layout: every key name of the ledger comes from the functions of
// this file (scripts get them, or the prefixes they build them from, as
// KEYS and ARGV). Two layouts (docs/decisions/0017-ledger-on-redis-cluster.md):
//
// Legacy (Config.Partitions 0, one Redis): a tenant's keys carry the tenant
// as hash tag, the sets every tenant shares are single keys:
//
//	<p>:{<tenant>}:task:<id>  ...:tasks  ...:st:<state>  ...:log:<id>  ...
//	<p>:delay  <p>:expiry  <p>:outbox  <p>:routing  <p>:routing:log
//	<p>:fn:<fn>:rate
//
// Partitioned (Config.Partitions P >= 1): tenant t lives in partition
// k = CRC16(t) mod P (keyslot.Partition); its keys and the partition's
// share of the shared sets carry the partition's hash tag, so that a
// script that changes a task and the delay set, the expiry set or the
// outbox touches one cluster slot:
//
//	<p>:{p<k>}:<tenant>:task:<id>  ...:tasks  ...:st:<state>  ...
//	<p>:{p<k>}:delay  <p>:{p<k>}:expiry  <p>:{p<k>}:outbox
//	<p>:{routing}  <p>:{routing}:log  <p>:{f:<fn>}:rate
//
// The function keys (<p>:{f:<fn>}:...) are the same in both.

// PartitionsMax bounds Config.Partitions (the config file's bound).
const PartitionsMax = 1024

// Partitioned reports whether the ledger uses the partitioned layout.
func (l *Ledger) Partitioned() bool { return l.cfg.Partitions > 0 }

// Partitions is the number of partitions of the delay set, the expiry set
// and the outbox: Config.Partitions, 1 in the legacy layout.
func (l *Ledger) Partitions() int { return max(l.cfg.Partitions, 1) }

// partition is the partition tenant's keys live in.
func (l *Ledger) partition(tenant string) int { return keyslot.Partition(tenant, l.Partitions()) }

// partPrefix starts the shared keys of partition k: "<p>:" in the legacy
// layout, "<p>:{p<k>}:" in the partitioned one.
func (l *Ledger) partPrefix(k int) string {
	if !l.Partitioned() {
		return l.cfg.Prefix + ":"
	}
	return l.cfg.Prefix + ":{p" + strconv.Itoa(k) + "}:"
}

// TenantKeyPrefix starts every key of tenant's tasks ("task:<id>",
// "tasks", "st:<state>", ... follow it): for tests and tools that look at
// the keys themselves.
func (l *Ledger) TenantKeyPrefix(tenant string) string { return l.tenantPrefix(tenant) }

// tenantPrefix starts every key of tenant's tasks.
func (l *Ledger) tenantPrefix(tenant string) string {
	if !l.Partitioned() {
		return l.cfg.Prefix + ":{" + tenant + "}:"
	}
	return l.partPrefix(l.partition(tenant)) + tenant + ":"
}

// DelayKey is the delay set of tenant's partition: members
// "<tenant>/<id>" scored by due µs.
func (l *Ledger) DelayKey(tenant string) string { return l.delayKeyAt(l.partition(tenant)) }

// ExpiryKey is the set of tenant's partition's waiting tasks with a ttl:
// members "<tenant>/<id>" scored by expiry µs; the scheduler ends them
// expired when the time passes, even while they sit in a backed-up lane.
func (l *Ledger) ExpiryKey(tenant string) string { return l.expiryKeyAt(l.partition(tenant)) }

// OutboxStream is the results outbox of tenant's partition: one entry per
// terminal transition; the notifier consumes it.
func (l *Ledger) OutboxStream(tenant string) string { return l.outboxAt(l.partition(tenant)) }

// DelayKeys, ExpiryKeys and OutboxStreams list every partition's delay
// set, expiry set and outbox stream, in partition order.
func (l *Ledger) DelayKeys() []string     { return l.perPartition(l.delayKeyAt) }
func (l *Ledger) ExpiryKeys() []string    { return l.perPartition(l.expiryKeyAt) }
func (l *Ledger) OutboxStreams() []string { return l.perPartition(l.outboxAt) }

// OutboxBase names what belongs to the outbox as a whole, whatever the
// layout: "<p>:outbox" (the legacy layout's stream). The notifier's sink
// queues and consumer heartbeats are named after it.
func (l *Ledger) OutboxBase() string { return l.cfg.Prefix + ":outbox" }

// RoutingKey is the routing table's key (routing.NewStoreAt); its log is
// the key and ":log", in the same slot in the partitioned layout.
func (l *Ledger) RoutingKey() string {
	if !l.Partitioned() {
		return l.cfg.Prefix + ":routing"
	}
	return l.cfg.Prefix + ":{routing}"
}

func (l *Ledger) delayKeyAt(k int) string  { return l.partPrefix(k) + "delay" }
func (l *Ledger) expiryKeyAt(k int) string { return l.partPrefix(k) + "expiry" }
func (l *Ledger) outboxAt(k int) string    { return l.partPrefix(k) + "outbox" }

func (l *Ledger) perPartition(key func(int) string) []string {
	out := make([]string, l.Partitions())
	for k := range out {
		out[k] = key(k)
	}
	return out
}

// fnRateKey is the function's GCRA rate state: untagged in the legacy
// layout, in the function's slot in the partitioned one.
func (l *Ledger) fnRateKey(function string) string {
	if !l.Partitioned() {
		return l.cfg.Prefix + ":fn:" + function + ":rate"
	}
	return l.fnPrefix(function) + "rate"
}

// luaPartitions is the partition count a script that builds tenant keys
// from the ledger prefix gets (luaTenantPrefix): 0 in the legacy layout.
func (l *Ledger) luaPartitions() int { return l.cfg.Partitions }

// luaTenantPrefix is tenantPrefix for the scripts that find tenants in a
// function's keys (take, the fast start's high-band count, backlog) and
// build their keys from the ledger prefix P: parts is luaPartitions. The
// partition is CRC16-XMODEM of the tenant (keyslot.CRC16) in arithmetic
// only, since the embedded Redis of dev mode has no bit library; each
// tenant's partition is computed once per call. TestLuaTenantPrefix holds it
// to tenantPrefix; tshared is DelayKey, OutboxStream and ExpiryKey.
const luaTenantPrefix = `
local function crc16(s)
  local crc = 0
  for i = 1, #s do
    local c = string.byte(s, i)
    for b = 7, 0, -1 do
      local top = math.floor(crc / 32768)
      crc = (crc * 2) % 65536
      if top ~= math.floor(c / 2 ^ b) % 2 then
        -- XOR 0x1021: bits 0 (0 after the shift), 5 and 12.
        crc = crc + 1
        if math.floor(crc / 32) % 2 == 1 then crc = crc - 32 else crc = crc + 32 end
        if math.floor(crc / 4096) % 2 == 1 then crc = crc - 4096 else crc = crc + 4096 end
      end
    end
  end
  return crc
end
local TPART = {}
local function tpart(parts, tenant)
  local k = TPART[tenant]
  if not k then
    k = string.format('%d', crc16(tenant) % parts)
    TPART[tenant] = k
  end
  return k
end
local function tprefix(P, parts, tenant)
  if parts <= 0 then return P .. ':{' .. tenant .. '}:' end
  return P .. ':{p' .. tpart(parts, tenant) .. '}:' .. tenant .. ':'
end
-- The delay set, outbox and expiry set of tenant's partition: d, o and e
-- (the script's KEYS) in the legacy layout.
local function tshared(P, parts, tenant, d, o, e)
  if parts <= 0 then return d, o, e end
  local pp = P .. ':{p' .. tpart(parts, tenant) .. '}:'
  return pp .. 'delay', pp .. 'outbox', pp .. 'expiry'
end
`

// WakeChannel is the Pub/Sub channel dispatchers listen on: each message
// is the name of a function that may have work to start.
func (l *Ledger) WakeChannel() string { return l.cfg.Prefix + ":wake" }

func (l *Ledger) tenantInflightKey(tenant string) string { return l.tenantPrefix(tenant) + "inflight" }
func (l *Ledger) parkedKey(tenant string) string         { return l.tenantPrefix(tenant) + "parked" }

// unparkingKey (partitioned layout) is the members of tenant's parked set
// a tenant step cleared, scored by when: the next tenant step after
// unparkGrace sends their unpark.f again (release_split.go).
func (l *Ledger) unparkingKey(tenant string) string { return l.tenantPrefix(tenant) + "unparking" }

// Function-scoped keys carry a {f:<function>} hash tag, so that a
// function's ready queues, in-flight set and control state share a slot.
func (l *Ledger) fnPrefix(function string) string { return l.cfg.Prefix + ":{f:" + function + "}:" }

// inflightKey is the function's in-flight set: members "<tenant>/<id>"
// scored by lease end µs (an entry past its lease frees its slot).
func (l *Ledger) inflightKey(function string) string { return l.fnPrefix(function) + "inflight" }

// inflightNHKey is the partitioned layout's subset of the function's
// in-flight set started from the normal or low band (same members and
// scores): the high-band reservation counts it without reading records.
func (l *Ledger) inflightNHKey(function string) string { return l.fnPrefix(function) + "inflight:nh" }

// fnStateKey is the function's control state (hash): the adaptive limit
// ("limit"), whether it ran at its limit with tasks ready since the last
// adaptive update ("sat"), the band passes and the adaptive counters.
func (l *Ledger) fnStateKey(function string) string { return l.fnPrefix(function) + "state" }
