#!/usr/bin/env bash
# Redis bulk writes side by side in one run, on a fresh loopback redis-server
# (no persistence) and a fresh 3-master cluster, several runs each:
#   redis-cli --pipe of N SETs (100-byte values)      - the baseline
#   library set_many of the same N entries            - bar >= 1.0x
#   `unicache write` of N JSONL records (parse incl.) - bar >= 0.7x
#   single GET p50: redis-benchmark -c 1 -P 1 -t get vs unicache get (one connection)
#
#   cluster write while 2,000 slots are resharded                - time, redirects
#
#   ./scripts/bench_redis.sh [N=1000000] [RUNS=3]     (SINGLE=0: cluster only)
set -euo pipefail
source "$(dirname "$0")/bench_common.sh"
now() { date +%s.%N; }
rate() { python3 -c "import sys; print(round($N/(float(sys.argv[2])-float(sys.argv[1]))))" "$1" "$2"; }

$U bench gen-resp --records "$N" > "$T/pipe.resp"
$U bench gen --records "$N" > "$T/in.jsonl"

if [ "${SINGLE:-1}" = 1 ]; then
P=$(port); start_redis "$P"
echo "single server on 127.0.0.1:$P, $N records of 100 B"
for r in $(seq "$RUNS"); do
    redis-cli -p "$P" flushall >/dev/null
    t0=$(now); redis-cli -p "$P" --pipe < "$T/pipe.resp" >/dev/null; t1=$(now)
    pipe=$(rate "$t0" "$t1")
    redis-cli -p "$P" flushall >/dev/null
    lib=$($U bench set-many --cache "redis://127.0.0.1:$P" --records "$N" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["records_per_second"]))')
    redis-cli -p "$P" flushall >/dev/null
    $U write -q --input "$T/in.jsonl" --cache "redis://127.0.0.1:$P" --output "$T/s.json" >/dev/null
    w=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["records_per_second"]))' "$T/s.json")
    python3 -c "import sys; p,l,w=map(int,sys.argv[1:]); print(f'run $r: redis-cli --pipe {p:,}/s | set_many {l:,}/s ({l/p:.2f}x) | unicache write {w:,}/s ({w/p:.2f}x)')" "$pipe" "$lib" "$w"
done
for r in $(seq "$RUNS"); do
    rb=$(redis-benchmark -p "$P" -c 1 -P 1 -t get -n 100000 -d 100 --csv 2>/dev/null | tail -1)
    ours=$($U bench get-latency --cache "redis://127.0.0.1:$P" --requests 100000)
    python3 - "$rb" "$ours" "$r" <<'PY'
import csv, io, json, sys
row = list(csv.reader(io.StringIO(sys.argv[1])))[0]
# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
rb_p50 = float(row[4]) * 1000
ours = json.loads(sys.argv[2])
print(f"run {sys.argv[3]}: GET p50 redis-benchmark {rb_p50:.1f} us | unicache {ours['p50_us']:.1f} us ({ours['p50_us']/rb_p50:.2f}x), p99 {ours['p99_us']:.1f} us")
PY
done
fi

# 3-master cluster.
NODES=()
for _ in 1 2 3; do
    while :; do p=$(port); [ "$p" -lt 55000 ] && break; done
    start_redis "$p" --cluster-enabled yes --cluster-config-file "nodes-$p.conf" --cluster-node-timeout 5000
    NODES+=("127.0.0.1:$p")
done
redis-cli --cluster create "${NODES[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 200); do redis-cli -p "${NODES[0]#*:}" cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
CURL="redis+cluster://$(IFS=,; echo "${NODES[*]}")"
echo "cluster $CURL"
for r in $(seq "$RUNS"); do
    for n in "${NODES[@]}"; do redis-cli -p "${n#*:}" flushall >/dev/null; done
    lib=$($U bench set-many --cache "$CURL" --records "$N" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["records_per_second"]))')
    for n in "${NODES[@]}"; do redis-cli -p "${n#*:}" flushall >/dev/null; done
    $U write -q --input "$T/in.jsonl" --cache "$CURL" --output "$T/s.json" >/dev/null
    w=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["records_per_second"]))' "$T/s.json")
    echo "run $r: cluster set_many ${lib}/s | cluster unicache write ${w}/s"
done

# The same write while `redis-cli --cluster reshard` moves 2,000 slots from
# the first master to the second, started 0.3 s in (issue 14's scenario).
for n in "${NODES[@]}"; do redis-cli -p "${n#*:}" flushall >/dev/null; done
t0=$(now)
$U write -v --input "$T/in.jsonl" --cache "$CURL" --output "$T/s.json" >/dev/null 2>"$T/err.txt" &
W=$!
sleep 0.3
id() { redis-cli -p "${1#*:}" cluster myid; }
redis-cli --cluster reshard "${NODES[0]}" --cluster-from "$(id "${NODES[0]}")" --cluster-to "$(id "${NODES[1]}")" \
    --cluster-slots 2000 --cluster-yes --cluster-pipeline 100 >/dev/null
t1=$(now)
wait "$W"
t2=$(now)
python3 - "$T/s.json" "$t0" "$t1" "$t2" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
t0, t1, t2 = map(float, sys.argv[2:])
print(f"cluster write during a 2000-slot reshard: {s['records_written']:,} written, "
      f"{s['records_failed']} failed in {s['duration_seconds']:.2f} s "
      f"({s['records_per_second']:,.0f}/s); the reshard ended {t1-t0:.2f} s after the start")
PY
grep -m1 -o 'moved=.*' "$T/err.txt" || true
