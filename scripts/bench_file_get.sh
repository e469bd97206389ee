#!/usr/bin/env bash
# Single gets on a `file:` log: `bench run --ops get` (N prefilled keys, one
# task, 5 s) RUNS times, p50/p90/p99 and ops/s; then the system calls of one
# short run under `strace -f -c` (a `stat` of the path per get, or a `pread`
# of the lock file's record). With OLD=/path/to/other/unicache (e.g. main's
# build) the same for that binary, runs interleaved; UNICACHE=/path measures
# that binary instead of building one.
#
#   ./scripts/bench_file_get.sh [N=100000] [RUNS=3]
set -euo pipefail
BENCH_BUILD=${BENCH_BUILD:---all-features -p unicache-cli}
# shellcheck source=bench_common.sh
source "$(dirname "$0")/bench_common.sh"
[ "$N" = 1000000 ] && [ -z "${1:-}" ] && N=100000

for r in $(seq "$RUNS"); do
    for b in ${OLD:+"$OLD"} "$U"; do
        rm -f "$T"/g.log*
        "$b" bench run -q --cache "file:$T/g.log" --ops get --keys "$N" --concurrency 1 \
            --duration 5s --json > "$T/r.json"
        python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))[0]
print(f\"run $r {sys.argv[2]}: {r['ops_per_sec']:,.0f} gets/s, p50 {r['p50_us']:.2f} us, p90 {r['p90_us']:.2f} us, p99 {r['p99_us']:.2f} us\")
" "$T/r.json" "$b"
    done
done
if command -v strace > /dev/null; then
    for b in ${OLD:+"$OLD"} "$U"; do
        rm -f "$T"/g.log*
        strace -f -c -o "$T/strace.txt" -e trace=statx,newfstatat,fstat,pread64 \
            "$b" bench run -q --cache "file:$T/g.log" --ops get --keys 10000 --concurrency 1 \
            --requests 20000 --json > "$T/r.json"
        echo "$b, 20,000 gets (after a 10,000-key prefill): system calls"
        grep -E 'statx|fstatat|fstat|pread64' "$T/strace.txt" | awk '{print "  " $NF ": " $4}'
    done
fi
