#!/usr/bin/env bash
# The file log store beside its references, one run:
#   dd of the same byte count with fdatasync on the same disk (MB/s ceiling);
#   `unicache write` of 10k and 100k records to the `file` target vs the
#   seed's Python solution with its `file` backend (10k only: it rewrites the
#   whole JSON file per record, about an hour at 100k).
# The library-level figures (set_many / get / open vs SQLite) are
# `cargo bench --bench file`.
#
#   ./scripts/bench_file.sh              # everything
#   PART=index ./scripts/bench_file.sh   # only the index's memory and open time
#
# The index part writes an INDEX_KEYS-key log (default 10M keys `key:I`, 10-byte
# values: about 1 GB) and reports the peak RSS of `unicache stats` on it minus
# the peak on a 1-key log (the process's baseline), per key, and the wall time
# (open = index rebuild), RUNS times. With OLD=/path/to/other/unicache (e.g.
# main's build) the same for that binary, runs interleaved. KEEP=1 keeps the
# log (path printed) for `UNICACHE_BENCH_LOG=... cargo bench --bench file`.
#
# PART=rss: the index's memory peak while a log grows. `unicache write` of
# RSS_KEYS records (default 5M, 10-byte values) into a fresh `file:` log,
# peak RSS (/usr/bin/time), against the peak of `unicache stats` on the
# written log (the index at rest, built by reading the log: `hint=off`),
# RUNS times; with OLD=/path/to/other/unicache the same for it, interleaved
# (an OLD that knows no `hint` option: set OLD_PLAIN=1).
set -euo pipefail
cd "$(dirname "$0")/.."
# UNICACHE=/path/to/unicache measures that binary instead of building one.
if [ -n "${UNICACHE:-}" ]; then
    U=$UNICACHE
else
    cargo build --release -q
    U=${CARGO_TARGET_DIR:-$PWD/target}/release/unicache
fi
T=$(mktemp -d -p "${BENCH_DIR:-$PWD/target}")
if [ -n "${KEEP:-}" ]; then trap 'echo "kept $T"' EXIT; else trap 'rm -rf "$T"' EXIT; fi

index_part() {
    local n=${INDEX_KEYS:-10000000} runs=${RUNS:-3}
    $U bench gen --records "$n" --value-size 10 > "$T/keys.jsonl"
    $U write -q -i "$T/keys.jsonl" -o "$T/keys-summary.json" -c "file:$T/index.log" > /dev/null
    head -1 "$T/keys.jsonl" | $U write -q -i - -o "$T/one-summary.json" -c "file:$T/one.log" > /dev/null
    rm -f "$T/keys.jsonl"
    echo "log: $n keys, $(stat -c %s "$T/index.log") bytes"
    for run in $(seq "$runs"); do
        for b in "$U" ${OLD:+"$OLD"}; do
            base=$( { /usr/bin/time -f %M "$b" stats -q --cache "file:$T/one.log" > /dev/null; } 2>&1 | tail -1)
            read -r rss wall < <( { /usr/bin/time -f "%M %e" "$b" stats -q --cache "file:$T/index.log" > /dev/null; } 2>&1 | tail -1)
            python3 -c "import sys; b,r,base,wall,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),sys.argv[4],int(sys.argv[5]); print(f'run {sys.argv[6]} {b}: stats peak RSS {r/1024:.0f} MiB, baseline {base/1024:.1f} MiB, {(r-base)*1024/n:.1f} bytes/key, open+stats {wall} s')" "$b" "$rss" "$base" "$wall" "$n" "$run"
        done
    done
}

rss_part() {
    local n=${RSS_KEYS:-5000000} runs=${RUNS:-3}
    $U bench gen --records "$n" --value-size 10 > "$T/rss.jsonl"
    for run in $(seq "$runs"); do
        for b in "$U" ${OLD:+"$OLD"}; do
            rm -f "$T"/rss.log*
            read -r peak wall < <( { /usr/bin/time -f "%M %e" "$b" write -q -i "$T/rss.jsonl" -o "$T/rss-summary.json" -c "file:$T/rss.log" > /dev/null; } 2>&1 | tail -1)
            local url="file:$T/rss.log?hint=off"
            if [ "$b" = "${OLD:-}" ] && [ -n "${OLD_PLAIN:-}" ]; then url="file:$T/rss.log"; fi
            rest=$( { /usr/bin/time -f %M "$b" stats -q --cache "$url" > /dev/null; } 2>&1 | tail -1)
            python3 -c "import sys; b,p,r,w,run=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),sys.argv[4],sys.argv[5]; print(f'run {run} {b}: write {sys.argv[6]} keys peak RSS {p/1024:.0f} MiB ({w} s); stats on the log (index at rest) {r/1024:.0f} MiB; ratio {p/r:.2f}')" "$b" "$peak" "$rest" "$wall" "$run" "$n"
        done
    done
    rm -f "$T/rss.jsonl" "$T"/rss.log*
}

if [ "${PART:-}" = rss ]; then
    rss_part
    exit 0
fi

if [ "${PART:-}" = index ]; then
    index_part
    exit 0
fi

# 1M records as the criterion bench writes them: ~152 MB of log.
dd if=/dev/zero of="$T/dd.bin" bs=1M count=152 conv=fdatasync 2>&1 | tail -1 | sed 's/^/dd (fdatasync): /'
rm -f "$T/dd.bin"

for n in 10000 100000; do
    $U bench gen --records "$n" --seed | sed 's/"backends": \["sqlite"\]/"backends": ["file"]/' > "$T/in$n.json"
    rm -rf "$T/u$n"
    $U write -q --input "$T/in$n.json" --output "$T/u$n/summary.json" > /dev/null
    python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(f'unicache write, file target, {s[\"records_read\"]} records: {s[\"records_per_second\"]:,.0f} rec/s ({s[\"duration_seconds\"]:.3f} s)')" "$T/u$n/summary.json"
done

SEED=${SEED:-../shared/seed/000_e7e2184d6c7d60ae.txt}
if [ -f "$SEED" ]; then
    python3 - "$SEED" "$T/seed.py" <<'PY'
import re, sys
code = re.search(r"```python\n(.*?)```", open(sys.argv[1]).read(), re.S).group(1)
open(sys.argv[2], "w").write(code)
PY
    mkdir -p "$T/s10000"
    s0=$(date +%s.%N)
    python3 "$T/seed.py" --input "$T/in10000.json" --output "$T/s10000/summary.json" > /dev/null 2>&1
    s1=$(date +%s.%N)
    python3 -c "import sys,json; s0,s1=map(float,sys.argv[1:3]); u=json.load(open(sys.argv[3])); print(f'seed file backend, 10000 records: {10000/(s1-s0):,.0f} rec/s ({s1-s0:.1f} s); unicache is {(s1-s0)/u[\"duration_seconds\"]:,.0f}x faster at 10k')" "$s0" "$s1" "$T/u10000/summary.json"
fi

index_part
