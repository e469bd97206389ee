#!/usr/bin/env bash
# `unicache export` of a SQLite cache against the sqlite3 shell printing the
# same rows as JSON (`sqlite3 -json FILE "select key, cast(value as text) as
# value from cache"`), on the same file, alternating, several runs; both
# outputs go to /dev/null after a check that they hold the same row count.
#
#   ./scripts/bench_export.sh [N=300000] [RUNS=5]      (bar: at most 1.0x sqlite3's time)
set -euo pipefail
BENCH_BUILD="--all-features -p unicache-cli"
source "$(dirname "$0")/bench_common.sh"
command -v sqlite3 >/dev/null || { echo "sqlite3 not found: apt-get install -y sqlite3" >&2; exit 1; }
$U bench gen --records "$N" > "$T/in.jsonl"
$U write -q --input "$T/in.jsonl" --cache "sqlite:$T/c.sqlite3" --output "$T/s.json" >/dev/null
Q="select key, cast(value as text) as value from cache"
ours=$($U export -q --cache "sqlite:$T/c.sqlite3" --output - | wc -l)
theirs=$(sqlite3 -json "$T/c.sqlite3" "$Q" | wc -l)
[ "$ours" = "$N" ] && [ "$theirs" = "$N" ] || { echo "row counts differ: $ours vs $theirs" >&2; exit 1; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); python3 -c "print(f'{$t1-$t0:.3f}')"; }
for r in $(seq "$RUNS"); do
    if [ $((r % 2)) = 1 ]; then
        u=$(secs "$U" export -q --cache "sqlite:$T/c.sqlite3" --output -); s=$(secs sqlite3 -json "$T/c.sqlite3" "$Q")
    else
        s=$(secs sqlite3 -json "$T/c.sqlite3" "$Q"); u=$(secs "$U" export -q --cache "sqlite:$T/c.sqlite3" --output -)
    fi
    echo "run $r: $N rows: unicache export ${u}s | sqlite3 -json ${s}s ($(python3 -c "print(f'{$u/$s:.2f}x its time')"))"
done
