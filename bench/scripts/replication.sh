#!/usr/bin/env bash
# acks=all produce with replication factor 3 against replication factor 1, on one three-node
# cluster on this machine (nodes on 127.0.0.1, .2 and .3, one shard each, pinned to the
# machine's cores in turn), interleaved in one run so that its noise falls on both:
# rf1, rf3, rf1, rf3. The same loadgen drives both.
#
#   bench/scripts/replication.sh BROKER LOADGEN [ROUNDS]
#
# Each round creates a fresh topic of each kind (1 partition, min.insync.replicas=2 for
# replication factor 3) and runs loadgen at its maximum rate (closed loop) and then at 2,000
# records/s (open loop): 1 KiB records, acks=all, 10 s after 2 s of warm-up.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 BROKER LOADGEN [ROUNDS]" >&2
    exit 2
fi
broker=$1 loadgen=$2 rounds=${3:-2}
scratch=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT

cores=$(nproc)
free_port() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"
}
voters=()
ports=()
for node in 0 1 2; do
    host=127.0.0.$((node + 1))
    port=$(free_port "$host")
    ports+=("$port")
    voters+=("$node@$host:$port")
done
voters=$(IFS=,; echo "${voters[*]}")
for node in 0 1 2; do
    host=127.0.0.$((node + 1))
    "$broker" start --node-id "$node" --data-dir "$scratch/node-$node" --cores $((node % cores)) \
        --listen "PLAINTEXT://$host:0,CONTROLLER://$host:${ports[$node]}" --admin-listen "" \
        --set "controller.quorum.voters=$voters" > "$scratch/out-$node" 2> "$scratch/log-$node" &
    pids+=($!)
done
bootstrap=""
for _ in $(seq 1 600); do
    bootstrap=$(awk '/^bootstrap/ {print $2}' "$scratch/out-0" 2>/dev/null || true)
    [ -n "$bootstrap" ] && break
    sleep 0.05
done
[ -n "$bootstrap" ] || { echo "node 0 did not start" >&2; cat "$scratch/log-0" >&2; exit 1; }
# Every node registered: a topic of three replicas can be placed.
for _ in $(seq 1 600); do
    if "$loadgen" --bootstrap "$bootstrap" --topic probe --partitions 1 --replication-factor 3 \
        --duration 1 --warmup 0 --rate 10 > "$scratch/probe" 2>&1; then
        break
    fi
    sleep 0.1
done

run() {
    local label=$1 factor=$2 round=$3 dir
    dir=$(mktemp -d "$scratch/run-XXXX")
    local configs=()
    [ "$factor" -gt 1 ] && configs=(--topic-config min.insync.replicas=2)
    "$loadgen" --bootstrap "$bootstrap" --topic "max-$label-$round" --partitions 1 \
        --replication-factor "$factor" "${configs[@]}" --record-size 1024 --rate max \
        --duration 10 --warmup 2 --acks all --json "$dir/max.json" > "$dir/max.txt" 2>&1
    "$loadgen" --bootstrap "$bootstrap" --topic "fixed-$label-$round" --partitions 1 \
        --replication-factor "$factor" "${configs[@]}" --record-size 1024 --rate 2000 \
        --duration 10 --warmup 2 --acks all --json "$dir/fixed.json" > "$dir/fixed.txt" 2>&1
    grep -h "first error\|error code" "$dir"/*.txt | head -3 >&2 || true
    python3 - "$label" "$round" "$dir" <<'PY'
import json, sys
label, round_, d = sys.argv[1:]
m = json.load(open(f"{d}/max.json"))
f = json.load(open(f"{d}/fixed.json"))
pm, pf = m["produce_latency"], f["produce_latency"]
print(f"{label:4} round {round_}: max {m['mb_per_second']:7.1f} MB/s p99 {pm['p99_us']/1000:6.2f} ms"
      f" | 2k rec/s p50 {pf['p50_us']/1000:5.2f} ms p99 {pf['p99_us']/1000:6.2f} ms"
      f" p99.9 {pf['p99_9_us']/1000:6.2f} ms | errors {m['errors'] + f['errors']}"
      + "".join(f" ({r['first_error']})" for r in (m, f) if r.get("first_error")))
PY
}

for round in $(seq 1 "$rounds"); do
    run rf1 1 "$round"
    run rf3 3 "$round"
done
