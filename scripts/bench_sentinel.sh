#!/usr/bin/env bash
# Redis Sentinel, side by side on one loopback set-up (a master, two
# replicas, three sentinels; no persistence), several runs each:
#   `unicache write` of N JSONL records: redis://MASTER vs redis+sentinel://
#   (bar >= 0.95x), and redis+sentinel:// with wait=1 (the cost of
#   "acknowledged means replicated")
#   `unicache bench run --workload get` (64 workers, 5 s): redis://MASTER,
#   Sentinel read_from=master, read_from=replica (two replicas), nearest
#
#   ./scripts/bench_sentinel.sh [N=1000000] [RUNS=3]      (READS=0: writes only)
set -euo pipefail
# The feature set the workspace is built with, so that the release
# artifacts are reused.
BENCH_BUILD="--all-features -p unicache-cli"
source "$(dirname "$0")/bench_common.sh"
M=$(port); start_redis "$M"
R1=$(port); start_redis "$R1" --replicaof 127.0.0.1 "$M"
R2=$(port); start_redis "$R2" --replicaof 127.0.0.1 "$M"
SENT=()
for _ in 1 2 3; do
    s=$(port); mkdir -p "$T/s$s"
    printf 'port %s\nbind 127.0.0.1\nprotected-mode no\ndir %s\nsentinel monitor mymaster 127.0.0.1 %s 2\nsentinel down-after-milliseconds mymaster 5000\n' \
        "$s" "$T/s$s" "$M" > "$T/s$s/sentinel.conf"
    redis-server "$T/s$s/sentinel.conf" --sentinel >/dev/null 2>&1 &
    PIDS+=($!); SENT+=("127.0.0.1:$s")
done
for _ in $(seq 200); do
    [ "$(redis-cli -p "$M" info replication | grep -c 'state=online')" = 2 ] && break; sleep 0.05
done
SURL="redis+sentinel://$(IFS=,; echo "${SENT[*]}")/mymaster"
sleep 3 # the sentinels find each other and the replicas
$U bench gen --records "$N" > "$T/in.jsonl"
echo "master 127.0.0.1:$M, replicas :$R1 :$R2, $SURL; $N records"
wps() { # url
    redis-cli -p "$M" flushall >/dev/null
    $U write -q --input "$T/in.jsonl" --cache "$1" --output "$T/s.json" >/dev/null
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["records_per_second"]))' "$T/s.json"
}
for r in $(seq "$RUNS"); do
    # Alternate which goes first: on a busy machine the load drifts.
    if [ $((r % 2)) = 1 ]; then
        plain=$(wps "redis://127.0.0.1:$M"); sent=$(wps "$SURL")
    else
        sent=$(wps "$SURL"); plain=$(wps "redis://127.0.0.1:$M")
    fi
    waited=$(wps "$SURL?wait=1")
    python3 -c "import sys; p,s,w=map(int,sys.argv[1:]); print(f'run $r: write redis:// {p:,}/s | redis+sentinel:// {s:,}/s ({s/p:.2f}x) | wait=1 {w:,}/s ({w/p:.2f}x)')" "$plain" "$sent" "$waited"
done
[ "${READS:-1}" = 1 ] || exit 0
gets() { # url
    $U bench run --cache "$1" --ops get --concurrency 64 --duration 5s --json \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d["results"][0] if isinstance(d,dict) else d[0]; print(round(r["ops_per_sec"] if "ops_per_sec" in r else r["throughput"]))'
}
for r in $(seq "$RUNS"); do
    plain=$(gets "redis://127.0.0.1:$M")
    master=$(gets "$SURL")
    replica=$(gets "$SURL?read_from=replica")
    nearest=$(gets "$SURL?read_from=nearest")
    python3 -c "import sys; p,m,r,n=map(int,sys.argv[1:]); print(f'run $r: GET x64 redis:// {p:,}/s | sentinel master {m:,}/s ({m/p:.2f}x) | replica {r:,}/s ({r/m:.2f}x of sentinel master) | nearest {n:,}/s')" "$plain" "$master" "$replica" "$nearest"
done
