#!/usr/bin/env bash
# `unicache write` fan-out: the same N JSON Lines records (`bench gen`,
# ~100-byte values, batches of 1,000) written to each single target alone
# (sqlite:, file:, redis://, memcached://, fresh loopback servers) and then
# to all four at once, several runs. Per run: the slowest single target's
# wall time, the fan-out's wall time, their ratio, and the fan-out's CPU
# (user+sys) over its wall time (200% is both cores of a 2-core machine).
# UNICACHE_BIN_OLD=/path/to/older/unicache measures it too, in the same
# runs, interleaved with the new one (same servers, same input). Medians last.
#
#   ./scripts/bench_fanout.sh [N=1000000] [RUNS=3]
set -euo pipefail
# The lead's feature set, so the build reuses its artifacts.
BENCH_BUILD=${BENCH_BUILD:---all-features -p unicache-cli}
source "$(dirname "$0")/bench_common.sh"

RP=$(port)
start_redis "$RP"
MP=$(port)
user=()
[ "$(id -u)" = 0 ] && user=(-u root)
memcached -l 127.0.0.1 -p "$MP" -U 0 -m 1024 -t 2 "${user[@]}" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$MP") 2>/dev/null && break; sleep 0.05; done
echo "redis-server on 127.0.0.1:$RP, memcached on 127.0.0.1:$MP"

$U bench gen --records "$N" > "$T/in.jsonl"
echo "input: $N records, $(du -h "$T/in.jsonl" | cut -f1)"

# Empty stores before every write: files removed, servers flushed
# (memcached's flush_all also hides what is stored within its second).
reset() {
    rm -f "$T"/w.sqlite3* "$T"/w.log*
    redis-cli -p "$RP" flushall >/dev/null
    printf 'flush_all\r\nquit\r\n' > /dev/tcp/127.0.0.1/"$MP"
    sleep 1.1
}
SQLITE="sqlite:$T/w.sqlite3"
FILE="file:$T/w.log"
REDIS="redis://127.0.0.1:$RP"
MEMCACHED="memcached://127.0.0.1:$MP"

# write BIN URL...: prints "WALL CPU" (seconds) of one `unicache write`,
# after checking that every record was written.
write() {
    local bin=$1; shift
    local args=()
    for u in "$@"; do args+=(--cache "$u"); done
    reset
    /usr/bin/time -f '%U %S' -o "$T/cpu.txt" "$bin" write -q --input "$T/in.jsonl" \
        --output "$T/s.json" --batch-size 1000 "${args[@]}" > /dev/null
    python3 - "$T/s.json" "$T/cpu.txt" "$N" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
u, k = map(float, open(sys.argv[2]).read().split()[-2:])
n = int(sys.argv[3])
if s["records_written"] != n or any(t["written"] != n for t in s["targets"]):
    sys.exit(f"incomplete write: {s['records_written']} of {n}: {s['targets']}")
# The writer's own wall time (from reading the input to the last flush).
print(f"{s['duration_seconds']:.3f} {u + k:.3f}")
PY
}

BINS=()
[ -n "${UNICACHE_BIN_OLD:-}" ] && BINS+=("old=$UNICACHE_BIN_OLD")
BINS+=("new=$U")
for r in $(seq "$RUNS"); do
    for b in "${BINS[@]}"; do
        name=${b%%=*}; bin=${b#*=}
        line="run $r $name:"
        worst=0; worst_name=
        for t in SQLITE FILE REDIS MEMCACHED; do
            read -r wall _ < <(write "$bin" "${!t}")
            line+=" ${t,,} ${wall}s"
            if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$wall" "$worst"; then
                worst=$wall; worst_name=${t,,}
            fi
        done
        read -r wall cpu < <(write "$bin" "$SQLITE" "$FILE" "$REDIS" "$MEMCACHED")
        ratio=$(python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$wall" "$worst")
        pct=$(python3 -c "import sys; print(f'{100*float(sys.argv[1])/float(sys.argv[2]):.0f}')" "$cpu" "$wall")
        echo "$line | slowest single $worst_name ${worst}s | all four ${wall}s (cpu ${cpu}s, ${pct}%) | ratio $ratio"
        echo "$name $ratio $worst $wall $cpu" >> "$T/ratios.txt"
    done
done
python3 - "$T/ratios.txt" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, ratio, worst, wall, cpu = line.split()
    rows.setdefault(name, []).append((float(ratio), float(worst), float(wall), float(cpu)))
for name, rs in rows.items():
    med = lambda i: statistics.median(r[i] for r in rs)
    print(f"median {name}: ratio {med(0):.2f} (slowest single {med(1):.2f}s, all four {med(2):.2f}s, "
          f"fan-out cpu {med(3):.2f}s), {len(rs)} runs")
PY
