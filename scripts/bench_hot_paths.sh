#!/usr/bin/env bash
# The hot in-process paths, several runs: a memory:// get against the raw
# quick_cache map it wraps (benches/memory.rs), and an L1 hit of a tier
# over Redis against a memory:// get (benches/tiered.rs, which starts its
# own redis-server), each on a hot set of 1,000 keys and on 50,000 keys
# visited in a stride (most lookups miss the CPU's caches). Each pair is
# timed in alternation in one process (benches/support/paired.rs: 101
# rounds, the median of the rounds' ratios), so a shared machine's load
# weighs on both alike. Prints every run's pairs, then the median ratio
# over the runs. Bars (issue 25): memory:// within 1.15x raw quick_cache,
# an L1 hit within 1.2x a memory:// get. (The criterion groups of the same
# benches measure each on its own: `cargo bench --bench memory`.)
#
#   ./scripts/bench_hot_paths.sh [RUNS=5]
set -euo pipefail
RUNS=${1:-5}
cd "$(dirname "$0")/.."
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for r in $(seq "$RUNS"); do
    # A filter that matches no criterion bench: only the paired timings run.
    for b in memory tiered; do
        cargo bench -q --all-features --bench "$b" -- '^paired only$' 2>/dev/null | grep '^paired ' |
            sed "s/^paired /run $r /" | tee -a "$OUT"
    done
done
echo "median over $RUNS runs (unicache's time / the baseline's: memory_*: memory:// / raw quick_cache, l1_hit_*: L1 hit / memory://):"
python3 - "$OUT" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    # run R NAME: BASE ns -> OURS ns RATIOx
    f = line.split()
    rows.setdefault(f[2].rstrip(":"), []).append((float(f[3]), float(f[6]), float(f[8].rstrip("x"))))
for name, v in rows.items():
    b, o, r = (statistics.median(x[i] for x in v) for i in range(3))
    print(f"{name:28} {b:8.1f} ns -> {o:8.1f} ns  median ratio {r:.2f}x  (runs: {' '.join(f'{x[2]:.2f}' for x in v)})")
PY
