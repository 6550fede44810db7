#!/usr/bin/env bash
# Tasklane on a local Redis Cluster: starts MASTERS Redis masters (no
# replicas) on ports 7101.. in a temporary directory, `tasklane serve` with
# redis.cluster: true and the redisstream driver (lanes, results and the
# ledger all on the cluster), and runs `tasklane bench` against it: one
# tenant in batches of 100, and 16 tenants with single events. Prints the
# rate, the Redis commands per task summed over the masters, and the CPU
# per task of serve and of all the masters together. Everything it starts
# is stopped at the end. Usage: deploy/bench/cluster.sh (MASTERS=3 N=20000
# PARTITIONS=64 OUT=dir).
set -euo pipefail

cd "$(dirname "$0")/../.."
MASTERS=${MASTERS:-3}
N=${N:-20000}
PARTITIONS=${PARTITIONS:-64}
OUT=${OUT:-$(mktemp -d /tmp/tl-cluster.XXXXXX)}
PORT=${PORT:-18483}
BIN="$OUT/tasklane"
PIDS=()
SERVER_PID=""

cleanup() {
	if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
}
trap cleanup EXIT

HZ=$(getconf CLK_TCK)
ticks_pid() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_redis() {
	local n=0 p
	for p in "${PIDS[@]}"; do n=$((n + $(ticks_pid "$p"))); done
	echo $n
}

go build -o "$BIN" ./cmd/tasklane
echo "binary: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'), out: $OUT"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

addrs=()
for i in $(seq 1 "$MASTERS"); do
	port=$((7100 + i))
	dir="$OUT/node-$port"
	mkdir -p "$dir"
	redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" \
		--dir "$dir" --save "" --appendonly no --daemonize no --logfile "$dir/redis.log" &
	PIDS+=($!)
	addrs+=("127.0.0.1:$port")
done
for a in "${addrs[@]}"; do
	for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p "${a#*:}" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$OUT/create.log"
for _ in $(seq 1 100); do
	redis-cli -p 7101 cluster info | grep -q 'cluster_state:ok' && break
	sleep 0.1
done
url="redis://${addrs[0]}"
for a in "${addrs[@]:1}"; do
	if [[ $url == *\?* ]]; then url="$url&addr=$a"; else url="$url?addr=$a"; fi
done
echo "cluster: $url"

cfg="$OUT/cluster.yaml"
{
	echo "server: {addr: \"127.0.0.1:$PORT\", max_batch_events: 1000}"
	echo "broker: {driver: redisstream, prefix: tlcluster}"
	echo "redis: {url: \"$url\", cluster: true}"
	echo "ledger: {key_prefix: tlcluster, partitions: $PARTITIONS}"
	echo "tenants:"
	for i in $(seq 0 15); do echo "  - {id: bench-$i, api_keys: [bench-key-$i]}"; done
	echo "functions:"
	echo "  - {name: noop, events: [com.example.noop], endpoint: \"builtin:noop\"}"
} >"$cfg"
"$BIN" serve --config "$cfg" --log-level warn >"$OUT/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 150); do
	"$BIN" health "http://127.0.0.1:$PORT" >/dev/null 2>&1 && break
	sleep 0.2
done
"$BIN" health "http://127.0.0.1:$PORT" >/dev/null

measure() {
	local name=$1
	shift
	local s0 r0 s1 r1
	s0=$(ticks_pid "$SERVER_PID") r0=$(ticks_redis)
	"$BIN" bench --server "http://127.0.0.1:$PORT" --broker-prefix tlcluster --results "$url" --count-ops --ops-redis "$url" --json "$@" \
		>"$OUT/$name.json" 2>>"$OUT/progress.log"
	s1=$(ticks_pid "$SERVER_PID") r1=$(ticks_redis)
	jq -r --arg name "$name" --argjson s $((s1 - s0)) --argjson r $((r1 - r0)) --argjson hz "$HZ" '
		.completed as $n
		| def us(x): if $n > 0 then (x * 1e6 / $hz / $n | floor) else 0 end;
		"\($name): completed \($n), completion \(.completion_rate|floor)/s, submit->start p50/p99 \(.submit_to_start_ms.p50 * 10 | round / 10)/\(.submit_to_start_ms.p99 * 10 | round / 10) ms"
		+ "; CPU us/task: serve \(us($s)) redis (all masters) \(us($r)); redis cmds/task \(.ops.redis.commands_per_task * 10 | round / 10), EVALSHA/task \([.ops.redis.top[] | select(.command == "evalsha") | .per_task][0] // 0 | . * 100 | round / 100)"
		+ (if (.errors // {}) != {} then "; errors \(.errors)" else "" end)
	' "$OUT/$name.json"
}

"$BIN" bench --server "http://127.0.0.1:$PORT" --broker-prefix tlcluster --results "$url" --key bench-key-0 -n 2000 --json >/dev/null 2>>"$OUT/progress.log" # warm-up
measure batch100-1tenant --key bench-key-0 -n "$N" --batch 100 --concurrency 4
measure single-16tenants --tenants 16 --key-template 'bench-key-%d' -n "$((N / 2))" --concurrency 32
for a in "${addrs[@]}"; do
	echo "$a: $(redis-cli -p "${a#*:}" dbsize) keys, $(redis-cli -p "${a#*:}" info memory | grep '^used_memory_human' | tr -d '\r')"
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
