#!/usr/bin/env bash
# Redis namespace clear against FLUSHDB, side by side in one run, on a fresh
# loopback redis-server and a fresh 3-master cluster (no persistence):
#   FLUSHDB (every master) of N keys                   - the floor
#   `unicache clear` of the same N keys in a namespace - bar <= 1.5x its time
#   BEFORE=/path/to/an/older/unicache: that binary's clear too, for a
#   before/after in the same run
# Each run fills the store with N records by `unicache write` before each
# timed step. Times include starting the process (a few ms).
#
#   ./scripts/bench_redis_clear.sh [N=1000000] [RUNS=3]
set -euo pipefail
BENCH_BUILD="--all-features -p unicache-cli"
source "$(dirname "$0")/bench_common.sh"
now() { date +%s.%N; }
$U bench gen --records "$N" > "$T/in.jsonl"

fill() { # url
    $U write -q --input "$T/in.jsonl" --cache "$1" --output "$T/s.json" >/dev/null
}
secs() { # command...: its wall time in seconds
    local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now)
    python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.3f}')" "$t0" "$t1"
}
flush_all() { # port...
    for p in "$@"; do redis-cli -p "$p" flushdb >/dev/null; done
}
compare() { # label url port...
    local label=$1 url=$2; shift 2
    for r in $(seq "$RUNS"); do
        fill "$url?namespace=bench"; f=$(secs flush_all "$@")
        fill "$url?namespace=bench"; c=$(secs "$U" clear -q --cache "$url?namespace=bench")
        left=0; for p in "$@"; do left=$((left + $(redis-cli -p "$p" dbsize))); done
        [ "$left" = 0 ] || { echo "clear left $left keys" >&2; exit 1; }
        line="run $r $label: FLUSHDB ${f}s | unicache clear ${c}s ($(python3 -c "print(f'{$c/$f:.2f}x')"))"
        if [ -n "${BEFORE:-}" ]; then
            fill "$url?namespace=bench"; b=$(secs "$BEFORE" clear -q --cache "$url?namespace=bench")
            line="$line | before ${b}s ($(python3 -c "print(f'{$b/$f:.2f}x')"))"
        fi
        echo "$line"
    done
}

P=$(port); start_redis "$P"
echo "$N keys; single server 127.0.0.1:$P"
compare single "redis://127.0.0.1:$P" "$P"

C=()
for _ in 1 2 3; do
    # A cluster node also listens on PORT+10000 (its bus).
    p=$(port); while [ "$p" -gt 55000 ]; do p=$(port); done
    start_redis "$p" --cluster-enabled yes --cluster-config-file "$T/$p.conf"; C+=("$p")
done
echo yes | redis-cli --cluster create "${C[@]/#/127.0.0.1:}" >/dev/null
for _ in $(seq 200); do
    [ "$(redis-cli -p "${C[0]}" cluster info | tr -d '\r' | grep -c 'cluster_state:ok')" = 1 ] && break; sleep 0.05
done
echo "3-master cluster ${C[*]}"
compare cluster "redis+cluster://127.0.0.1:${C[0]}" "${C[@]}"
