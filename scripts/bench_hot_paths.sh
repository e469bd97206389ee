#!/usr/bin/env bash
# The hot in-process paths side by side, several runs: a memory:// get
# against the raw quick_cache map it wraps (benches/memory.rs), and an L1
# hit of a tier over Redis against a memory:// get (benches/tiered.rs,
# which starts its own redis-server), each on a hot set of 1,000 keys and
# on 50,000 keys visited in a stride. Prints each run's medians and the
# ratios, then the median ratio over the runs. Bars (issue 25): memory://
# within 1.15x raw quick_cache; an L1 hit within 1.2x a memory:// get.
#
#   ./scripts/bench_hot_paths.sh [RUNS=5]
set -euo pipefail
RUNS=${1:-5}
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
ARGS=(--measurement-time 3 --warm-up-time 1)
est() { # criterion id (group/function): its median, ns
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' \
        "$TARGET/criterion/$1/new/estimates.json"
}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for r in $(seq "$RUNS"); do
    cargo bench -q --all-features --bench memory -- "get_(latency_)?(hot1k|stride50k)/" "${ARGS[@]}" >/dev/null 2>&1
    cargo bench -q --all-features --bench tiered -- "l1_hit/(memory_plain|tiered)_" "${ARGS[@]}" >/dev/null 2>&1
    for set in hot1k stride50k; do
        for kind in get get_latency; do
            raw=$(est "memory/${kind}_$set/raw_quick_cache")
            dyn=$(est "memory/${kind}_$set/unicache_dyn")
            echo "memory_${kind}_$set $raw $dyn"
        done
        mem=$(est "l1_hit/memory_plain_$set")
        l1=$(est "l1_hit/tiered_$set")
        echo "l1_hit_$set $mem $l1"
    done | tee -a "$OUT" | awk -v r="$r" '{printf "run %s %-26s %8.1f ns -> %8.1f ns  %.2fx\n", r, $1, $2, $3, $3/$2}'
done
echo "median over $RUNS runs (ratio: unicache's time / the baseline's; memory_*: raw quick_cache -> memory://, l1_hit_*: memory:// -> L1 hit):"
python3 - "$OUT" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, base, ours = line.split()
    rows.setdefault(name, []).append((float(base), float(ours)))
for name, v in rows.items():
    b = statistics.median(x for x, _ in v)
    o = statistics.median(y for _, y in v)
    ratio = statistics.median(y / x for x, y in v)
    print(f"{name:26} {b:8.1f} ns -> {o:8.1f} ns  median ratio {ratio:.2f}x")
PY
