#!/usr/bin/env bash
# `unicache write` of N JSON Lines records (`bench gen`: {"key":"key:I","v":
# "<100 bytes>"}) into a fresh `file:` log, RUNS times: the log's bytes
# against the input's, and the write's wall time against the floor of its
# own log, `dd if=LOG of=COPY bs=4M conv=fsync` (the same bytes written and
# fsynced on the same disk), both in the same run. A record is JSON text: a
# version-2 log stores it unescaped (`"j":{...}`), a version-1 log escaped
# inside `"v"`. With OLD=/path/to/other/unicache (e.g. main's build) the same
# for that binary, runs interleaved; UNICACHE=/path/to/unicache measures that
# binary instead of building one.
#
#   ./scripts/bench_file_json.sh [N=1000000] [RUNS=3]
set -euo pipefail
BENCH_BUILD=${BENCH_BUILD:---all-features -p unicache-cli}
# shellcheck source=bench_common.sh
source "$(dirname "$0")/bench_common.sh"

$U bench gen --records "$N" > "$T/in.jsonl"
in_bytes=$(stat -c %s "$T/in.jsonl")
echo "input: $N records, $in_bytes bytes"
for r in $(seq "$RUNS"); do
    for b in ${OLD:+"$OLD"} "$U"; do
        rm -f "$T"/w.log* "$T/copy"
        sync
        w0=$(date +%s.%N)
        "$b" write -q --input "$T/in.jsonl" --cache "file:$T/w.log" --output "$T/s.json" > /dev/null
        w1=$(date +%s.%N)
        log_bytes=$(stat -c %s "$T/w.log")
        sync
        d0=$(date +%s.%N)
        dd if="$T/w.log" of="$T/copy" bs=4M conv=fsync status=none
        d1=$(date +%s.%N)
        python3 -c "
import sys
b, w0, w1, d0, d1, lb, ib = sys.argv[1], *map(float, sys.argv[2:6]), *map(int, sys.argv[6:8])
w, d = w1 - w0, d1 - d0
print(f'run $r {b}: log {lb:,} B = {lb / ib:.3f}x input | write {w:.3f} s, dd conv=fsync {d:.3f} s: write at {d / w:.2f}x the dd floor')
" "$b" "$w0" "$w1" "$d0" "$d1" "$log_bytes" "$in_bytes"
    done
done
