#!/usr/bin/env bash
# Produce throughput and latency of two broker builds, interleaved in one run on this machine so
# that its noise falls on both: before, after, before, after. The same loadgen drives both.
#
#   bench/scripts/before-after.sh BEFORE_BROKER AFTER_BROKER LOADGEN [ROUNDS] [-- BROKER ARGS]
#
# Each round starts a fresh broker (its own data directory, port 0), runs loadgen at its maximum
# rate (closed loop) and then at 10,000 records/s (open loop): 1 partition, 1 KiB records,
# acks=all, 10 s after 2 s of warm-up. Broker arguments after `--` (for example
# `--set log.flush.interval.ms=1000` for relaxed mode) go to both builds.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 BEFORE_BROKER AFTER_BROKER LOADGEN [ROUNDS] [-- BROKER ARGS]" >&2
    exit 2
fi
before=$1 after=$2 loadgen=$3
shift 3
rounds=2
if [ $# -gt 0 ] && [ "$1" != "--" ]; then rounds=$1; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
broker_args=("$@")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

run() {
    local label=$1 binary=$2 round=$3 dir
    dir=$(mktemp -d "$scratch/run-XXXX")
    "$binary" start --data-dir "$dir/data" --listen 127.0.0.1:0 --admin-listen "" \
        "${broker_args[@]}" > "$dir/out" 2> "$dir/log" &
    local pid=$! bootstrap=""
    for _ in $(seq 1 400); do
        bootstrap=$(awk '/^bootstrap/ {print $2}' "$dir/out" 2>/dev/null || true)
        [ -n "$bootstrap" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$dir/log" >&2; exit 1; }
        sleep 0.05
    done
    [ -n "$bootstrap" ] || { echo "$binary did not start" >&2; kill "$pid"; exit 1; }
    "$loadgen" --bootstrap "$bootstrap" --topic max --partitions 1 --record-size 1024 \
        --rate max --duration 10 --warmup 2 --acks all --json "$dir/max.json" > "$dir/max.txt" 2>&1
    "$loadgen" --bootstrap "$bootstrap" --topic fixed --partitions 1 --record-size 1024 \
        --rate 10000 --duration 10 --warmup 2 --acks all --json "$dir/fixed.json" > "$dir/fixed.txt" 2>&1
    kill "$pid"
    wait "$pid" || true
    python3 - "$label" "$round" "$dir" <<'PY'
import json, sys
label, round_, d = sys.argv[1:]
m = json.load(open(f"{d}/max.json"))
f = json.load(open(f"{d}/fixed.json"))
pm, pf = m["produce_latency"], f["produce_latency"]
print(f"{label:6} round {round_}: max {m['mb_per_second']:7.1f} MB/s p99 {pm['p99_us']/1000:6.2f} ms"
      f" | 10k rec/s p50 {pf['p50_us']/1000:5.2f} ms p99 {pf['p99_us']/1000:6.2f} ms"
      f" p99.9 {pf['p99_9_us']/1000:6.2f} ms | errors {m['errors'] + f['errors']}")
PY
    rm -rf "$dir"
}

for round in $(seq 1 "$rounds"); do
    run before "$before" "$round"
    run after "$after" "$round"
done
