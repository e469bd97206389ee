#!/usr/bin/env bash
# `unicache bench run` against redis-benchmark, same fresh loopback server,
# same run, several runs: 50 clients of GETs of one 100-byte value, no
# pipelining. Like for like:
#   redis-benchmark -t get -c 50 -P 1    its GETs ask for "key:__rand_int__"
#                                        (no -r), which we SET to 100 bytes
#                                        first: without it every GET is a miss
#                                        (a 5-byte nil reply), shown as "miss"
#   bench run --connection-per-worker    50 instances, one connection each in
#     --threads 1                        use (single GETs take the plain one),
#                                        one request in flight per connection,
#                                        clients on one thread, as redis-benchmark
#   bench run (shared instance)          a program's shape, for information: one
#                                        cache shared by 50 tasks on 2 threads;
#                                        its multiplexed connection pipelines
#                                        concurrent GETs (the server reads many
#                                        per syscall), so it is not comparable
# Both measure a request from send to reply and throughput as requests over
# wall time. Prints throughput and p50 of each and the ratios (bar:
# throughput 0.8-1.25x, p50 within 1.25x of redis-benchmark on a hit).
#
#   ./scripts/bench_run_redis.sh [REQUESTS=200000] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
RUNS=${2:-3}
cargo build --release -q
U=$PWD/target/release/unicache
T=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
P=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$P" --bind 127.0.0.1 --save "" --appendonly no --dir "$T" --daemonize no --loglevel warning >/dev/null 2>&1 &
PID=$!
for _ in $(seq 200); do redis-cli -p "$P" ping >/dev/null 2>&1 && break; sleep 0.05; done
V=$(printf 'x%.0s' $(seq 100))
echo "redis-server 127.0.0.1:$P, $N GETs per run, 50 clients, 100-byte values"
for r in $(seq "$RUNS"); do
    redis-cli -p "$P" del 'key:__rand_int__' >/dev/null
    miss=$(redis-benchmark -p "$P" -t get -c 50 -P 1 -n "$N" --csv 2>/dev/null | tail -1)
    redis-cli -p "$P" set 'key:__rand_int__' "$V" >/dev/null
    rb=$(redis-benchmark -p "$P" -t get -c 50 -P 1 -n "$N" --csv 2>/dev/null | tail -1)
    per=$($U bench run -q --cache "redis://127.0.0.1:$P" --ops get --concurrency 50 --requests "$N" --keys 1 --value-size 100 --json --connection-per-worker --threads 1)
    shared=$($U bench run -q --cache "redis://127.0.0.1:$P" --ops get --concurrency 50 --requests "$N" --keys 1 --value-size 100 --json)
    python3 - "$rb" "$miss" "$per" "$shared" "$r" <<'PY'
import csv, io, json, sys
def rb(text):
    row = list(csv.reader(io.StringIO(text)))[0]
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
    return float(row[1]), float(row[4]) * 1000
rps, p50 = rb(sys.argv[1])
mrps, mp50 = rb(sys.argv[2])
run = sys.argv[5]
print(f"run {run}: redis-benchmark hit {rps:,.0f}/s p50 {p50:.0f} us (miss: {mrps:,.0f}/s p50 {mp50:.0f} us)")
for name, text in (("like for like: connection per worker, 1 thread", sys.argv[3]),
                   ("shared instance, 2 threads", sys.argv[4])):
    o = json.loads(text)[0]
    print(f"run {run}:   bench run ({name}) {o['ops_per_sec']:,.0f}/s p50 {o['p50_us']:.0f} us"
          f" | throughput {o['ops_per_sec']/rps:.2f}x, p50 {o['p50_us']/p50:.2f}x")
PY
done
