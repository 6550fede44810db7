#!/usr/bin/env bash
# The performance targets' runs (BENCHMARKS.md, "Targets, one script"): for each driver, a Tasklane
# server of its own and, in the same invocation of `tasklane bench`, the raw broker used directly
# (tuned shape) with the same load. Prints one summary line per run and the CPU each process spent
# per task; the raw JSON reports go to $OUT.
#
#   bash deploy/bench/targets.sh            # both drivers
#   DRIVERS=redisstream bash deploy/bench/targets.sh
#
# Needs RabbitMQ on 127.0.0.1:5672 (guest/guest, rabbitmqctl on PATH) and Redis on 127.0.0.1:6379.
# Uses its own vhost (tltargets), Redis DB 3 and key/broker prefix tltargets; removes them at the end.
# Operations per task are counted when the RabbitMQ management API answers on :15672 (Redis
# INFO commandstats always): both are server-wide, so run it on a quiet machine.
set -euo pipefail

cd "$(dirname "$0")/../.."
DRIVERS=${DRIVERS:-"amqp redisstream"}
OUT=${OUT:-$(mktemp -d /tmp/tl-targets.XXXXXX)}
PORT=${PORT:-18481}
# SCALE divides every run's event count (SCALE=10: a quick check of the script, no figures).
SCALE=${SCALE:-1}
VHOST=tltargets
A="amqp://guest:guest@127.0.0.1:5672/$VHOST"
R="redis://127.0.0.1:6379/3"
BIN="$OUT/tasklane"
SERVER_PID=""

cleanup() {
	if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
	rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
	redis-cli -n 3 flushdb >/dev/null 2>&1 || true
}
trap cleanup EXIT

# ticks NAME: user+system clock ticks of the oldest process with that command name (0 if none).
ticks() {
	local pid
	pid=$(pgrep -o -x "$1" || true)
	[[ -z $pid ]] && { echo 0; return; }
	awk '{print $14 + $15}' "/proc/$pid/stat"
}
ticks_pid() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

go build -o "$BIN" ./cmd/tasklane
echo "binary: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'), out: $OUT"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
rabbitmqctl -q add_vhost "$VHOST" >/dev/null
rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null

# measure NAME ARGS...: one bench invocation with the CPU that serve, redis-server and beam.smp
# spent over it; prints its summary line.
measure() {
	local name=$1
	shift
	local s0=0 r0 b0 s1=0 r1 b1
	[[ -n $SERVER_PID ]] && s0=$(ticks_pid "$SERVER_PID")
	r0=$(ticks redis-server) b0=$(ticks beam.smp)
	"$BIN" bench --server "http://127.0.0.1:$PORT" --broker-prefix tltargets --json "$@" >"$OUT/$name.json" 2>>"$OUT/progress.log"
	[[ -n $SERVER_PID ]] && s1=$(ticks_pid "$SERVER_PID")
	r1=$(ticks redis-server) b1=$(ticks beam.smp)
	jq -r --arg name "$name" --argjson s $((s1 - s0)) --argjson r $((r1 - r0)) --argjson b $((b1 - b0)) --argjson hz "$HZ" '
		(if .completed > 0 then .completed else .accepted end) as $n
		| def us(x): if $n > 0 then (x * 1e6 / $hz / $n | floor) else 0 end;
		  def f(x): (x * 10 | round) / 10;
		"\($name): submit \(.submit_rate|floor)/s"
		+ (if .completed > 0 then ", completion \(.completion_rate|floor)/s, submit->start p50/p99 \(f(.submit_to_start_ms.p50))/\(f(.submit_to_start_ms.p99)) ms, submit->finish p50/p99 \(f(.submit_to_finish_ms.p50))/\(f(.submit_to_finish_ms.p99)) ms" else "" end)
		+ "; CPU us/task: serve \(us($s)) redis \(us($r)) rabbitmq \(us($b))"
		+ (if .ops.redis then "; redis cmds/task \(.ops.redis.commands_per_task * 10 | round / 10)" else "" end)
		+ (if .ops.rabbitmq then "; rabbitmq ops \(.ops.rabbitmq)" else "" end)
		+ (if (.errors // {}) != {} then "; errors \(.errors)" else "" end)
	' "$OUT/$name.json"
}

# pair NAME RAW ARGS...: the raw broker at RAW, then Tasklane, with the same load; prints both
# lines and Tasklane's rates as a ratio of the raw broker's.
pair() {
	local name=$1 raw=$2
	shift 2
	local saved=$SERVER_PID
	SERVER_PID="" measure "$name-raw" --raw-broker "$raw" "$@"
	SERVER_PID=$saved measure "$name" "$@"
	jq -rn --slurpfile r "$OUT/$name-raw.json" --slurpfile t "$OUT/$name.json" '
		def ratio(a; b): if b > 0 then (a / b * 100 | round / 100) else 0 end;
		"\($r[0].raw_shape // "tuned") shape: tasklane / raw submit \(ratio($t[0].submit_rate; $r[0].submit_rate))x, completion \(ratio($t[0].completion_rate; $r[0].completion_rate))x"'
}

for driver in $DRIVERS; do
	cfg="$OUT/$driver.yaml"
	{
		echo "server: {addr: \"127.0.0.1:$PORT\", max_batch_events: 1000}"
		if [[ $driver == amqp ]]; then
			echo "broker: {driver: amqp, url: \"$A\", prefix: tltargets}"
		else
			echo "broker: {driver: redisstream, prefix: tltargets}"
		fi
		echo "redis: {url: \"$R\"}"
		echo "ledger: {key_prefix: tltargets}"
		echo "tenants:"
		for i in $(seq 0 15); do echo "  - {id: bench-$i, api_keys: [bench-key-$i]}"; done
		echo "functions:"
		echo "  - {name: noop, events: [com.example.noop], endpoint: \"builtin:noop\"}"
	} >"$cfg"
	redis-cli -n 3 flushdb >/dev/null
	"$BIN" serve --config "$cfg" --log-level warn >"$OUT/$driver.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 1 100); do
		"$BIN" health "http://127.0.0.1:$PORT" >/dev/null 2>&1 && break
		sleep 0.2
	done
	"$BIN" health "http://127.0.0.1:$PORT" >/dev/null
	results=$A raw=$A
	[[ $driver == redisstream ]] && results=$R raw=$R
	T=(--tenants 16 --key-template 'bench-key-%d' --results "$results")
	echo "== $driver"
	"$BIN" bench --server "http://127.0.0.1:$PORT" --broker-prefix tltargets "${T[@]}" -n $((5000 / SCALE)) --json >/dev/null # warm-up
	pair "$driver-batch100-1tenant" "$raw" --key bench-key-0 --results "$results" -n $((30000 / SCALE)) --batch 100 --concurrency 4 --count-ops
	pair "$driver-single-16tenants" "$raw" "${T[@]}" -n $((20000 / SCALE)) --concurrency 32
	pair "$driver-ingest-batch100" "$raw" --key bench-key-1 --results "$results" -n $((50000 / SCALE)) --batch 100 --concurrency 4 --submit-only
	pair "$driver-steady500" "$raw" "${T[@]}" -n $((10000 / SCALE)) --rate 500 --concurrency 16
	kill "$SERVER_PID"
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=""
	rabbitmqctl -q delete_vhost "$VHOST" >/dev/null
	rabbitmqctl -q add_vhost "$VHOST" >/dev/null
	rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
