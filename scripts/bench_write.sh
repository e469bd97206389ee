#!/usr/bin/env bash
# `unicache write` of N JSON Lines records into sqlite:, side by side with the
# raw rusqlite baseline (same schema, same values, one transaction), several
# runs; peak RSS from /usr/bin/time -v. Then the seed's Python solution on
# 10k records with its sqlite backend pointed at a file, against unicache on
# the same input.
#
#   ./scripts/bench_write.sh [N=1000000] [RUNS=3]
set -euo pipefail
source "$(dirname "$0")/bench_common.sh"

$U bench gen --records "$N" > "$T/in.jsonl"
echo "input: $N records, $(du -h "$T/in.jsonl" | cut -f1)"
for r in $(seq "$RUNS"); do
    raw=$($U bench sqlite-raw --records "$N" --db "$T/raw.sqlite3" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["records_per_second"]))')
    rm -f "$T"/w.sqlite3*
    /usr/bin/time -v "$U" write -q --input "$T/in.jsonl" --cache "sqlite:$T/w.sqlite3" --output "$T/s.json" > /dev/null 2> "$T/time.txt"
    ours=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["records_per_second"]))' "$T/s.json")
    rss=$(awk '/Maximum resident/ {print $6}' "$T/time.txt")
    python3 -c "import sys; raw,ours,rss=map(int,sys.argv[1:]); print(f'run $r: raw rusqlite {raw:,} rec/s | unicache write {ours:,} rec/s | ratio {ours/raw:.2f} | peak RSS {rss/1024:.1f} MB')" "$raw" "$ours" "$rss"
done

SEED=${SEED:-../shared/seed/000_e7e2184d6c7d60ae.txt}
if [ -f "$SEED" ]; then
    # Extract the seed's Python and point its sqlite backend at a file.
    python3 - "$SEED" "$T/seed.py" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
code = code.replace('caches.append((b, create_cache(b, bp)))',
    'caches.append((b, create_cache(b, (base_path / "seed.sqlite3") if b == "sqlite" else bp)))')
open(sys.argv[2], "w").write(code)
PY
    $U bench gen --records 10000 --seed > "$T/seed_in.json"
    mkdir -p "$T/seedout" "$T/uout"
    s0=$(date +%s.%N); python3 "$T/seed.py" --input "$T/seed_in.json" --output "$T/seedout/summary.json" > /dev/null; s1=$(date +%s.%N)
    u0=$(date +%s.%N); "$U" write -q --input "$T/seed_in.json" --output "$T/uout/summary.json" > /dev/null; u1=$(date +%s.%N)
    python3 -c "import sys; s0,s1,u0,u1=map(float,sys.argv[1:]); print(f'10k records, sqlite file: seed {10000/(s1-s0):,.0f} rec/s, unicache {10000/(u1-u0):,.0f} rec/s, ratio {(s1-s0)/(u1-u0):.0f}x')" "$s0" "$s1" "$u0" "$u1"
fi
