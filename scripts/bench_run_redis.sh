#!/usr/bin/env bash
# `unicache bench run` against redis-benchmark, same fresh loopback server,
# same run, several runs: 50 clients of GETs (100-byte value), no pipelining.
#   redis-benchmark -t get -c 50 -P 1           - the reference
#   unicache bench run --concurrency 50          - one shared cache instance
#                                                  (one multiplexed connection)
#   ... --connection-per-worker                  - 50 instances, 50 connections
#                                                  (redis-benchmark's shape)
# Prints throughput and p50 of each and the ratios (bar: throughput
# 0.8-1.25x, p50 within 1.25x).
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
echo "redis-server 127.0.0.1:$P, $N GETs per run, 50 clients, 100-byte values"
for r in $(seq "$RUNS"); do
    rb=$(redis-benchmark -p "$P" -t get -c 50 -P 1 -n "$N" -d 100 --csv 2>/dev/null | tail -1)
    shared=$($U bench run -q --cache "redis://127.0.0.1:$P" --ops get --concurrency 50 --requests "$N" --keys 1 --value-size 100 --json)
    per=$($U bench run -q --cache "redis://127.0.0.1:$P" --ops get --concurrency 50 --requests "$N" --keys 1 --value-size 100 --json --connection-per-worker)
    python3 - "$rb" "$shared" "$per" "$r" <<'PY'
import csv, io, json, sys
row = list(csv.reader(io.StringIO(sys.argv[1])))[0]
# "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
rps, p50 = float(row[1]), float(row[4]) * 1000
for name, text in (("shared instance", sys.argv[2]), ("connection per worker", sys.argv[3])):
    o = json.loads(text)[0]
    print(f"run {sys.argv[4]}: redis-benchmark {rps:,.0f}/s p50 {p50:.0f} us | bench run ({name}) "
          f"{o['ops_per_sec']:,.0f}/s p50 {o['p50_us']:.0f} us | throughput {o['ops_per_sec']/rps:.2f}x, p50 {o['p50_us']/p50:.2f}x")
PY
done
