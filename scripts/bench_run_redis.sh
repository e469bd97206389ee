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
#   bench run --rate <redis-benchmark's>  like for like at the same offered
#                                        load (latency from each request's
#                                        scheduled time, which is stricter)
# Both measure a request from send to reply and throughput as requests over
# wall time. Prints throughput and p50 of each and the ratios (bar:
# throughput 0.8-1.25x, p50 within 1.25x of redis-benchmark on a hit), and
# for each tool what the server saw meanwhile: commands per second from its
# own counter (INFO total_commands_processed) and its CPU use, next to the
# client's CPU: a client at ~100% of a core with the server well below it
# measures itself, not the server.
#
#   ./scripts/bench_run_redis.sh [REQUESTS=200000] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
RUNS=${2:-3}
for tool in redis-server redis-cli redis-benchmark /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench_run_redis.sh: needs $tool (apt-get install -y redis-server redis-tools time)" >&2; exit 1; }
done
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
SPID=$PID
# Runs "$@" with its stdout in $T/$1 and prints "<$T/$1>\t<server ops/s>\t<server
# cpu %>\t<client cpu %>".
observed() {
    local c0 n0 t0 t1 c1 n1 cl f=$T/$1
    shift
    c0=$(awk '{print $14+$15}' /proc/$SPID/stat)
    n0=$(redis-cli -p "$P" info stats | tr -d '\r' | sed -n 's/^total_commands_processed://p')
    t0=$(date +%s.%N)
    /usr/bin/time -o "$T/time" -f "%U %S" "$@" >"$f" 2>/dev/null
    t1=$(date +%s.%N)
    c1=$(awk '{print $14+$15}' /proc/$SPID/stat)
    n1=$(redis-cli -p "$P" info stats | tr -d '\r' | sed -n 's/^total_commands_processed://p')
    cl=$(tail -1 "$T/time")
    python3 -c "import sys; w=$t1-$t0; u,s=map(float,'$cl'.split()); print('%.0f\t%.0f\t%.0f' % (($n1-$n0-2)/w, ($c1-$c0)/$(getconf CLK_TCK)/w*100, (u+s)/w*100))" | { printf '%s\t' "$f"; cat; }
}
for r in $(seq "$RUNS"); do
    redis-cli -p "$P" del 'key:__rand_int__' >/dev/null
    miss=$(redis-benchmark -p "$P" -t get -c 50 -P 1 -n "$N" --csv 2>/dev/null | tail -1)
    redis-cli -p "$P" set 'key:__rand_int__' "$V" >/dev/null
    rb=$(observed rb redis-benchmark -p "$P" -t get -c 50 -P 1 -n "$N" --csv)
    per=$(observed per $U bench run -q --cache "redis://127.0.0.1:$P" --ops get --concurrency 50 --requests "$N" --keys 1 --value-size 100 --json --connection-per-worker --threads 1)
    rate=$(tail -1 "$T/rb" | python3 -c "import csv,sys; print(int(float(list(csv.reader(sys.stdin))[0][1])))")
    paced=$(observed paced $U bench run -q --cache "redis://127.0.0.1:$P" --ops get --concurrency 50 --requests "$N" --keys 1 --value-size 100 --json --connection-per-worker --threads 1 --rate "$rate")
    shared=$(observed shared $U bench run -q --cache "redis://127.0.0.1:$P" --ops get --concurrency 50 --requests "$N" --keys 1 --value-size 100 --json)
    python3 - "$rb" "$miss" "$per" "$paced" "$shared" "$r" <<'PY'
import csv, io, json, sys
def split(arg):
    path, sops, scpu, ccpu = arg.split("\t")
    out = open(path).read().strip().splitlines()
    out = out[-1] if path.endswith("/rb") else "\n".join(out)
    return out, f"server {float(sops):,.0f} cmd/s at {scpu}% CPU, client {ccpu}% CPU"
def rb(text):
    row = list(csv.reader(io.StringIO(text)))[0]
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
    return float(row[1]), float(row[4]) * 1000
text, seen = split(sys.argv[1])
rps, p50 = rb(text)
mrps, mp50 = rb(sys.argv[2])
run = sys.argv[6]
print(f"run {run}: redis-benchmark hit {rps:,.0f}/s p50 {p50:.0f} us (miss: {mrps:,.0f}/s p50 {mp50:.0f} us) | {seen}")
for name, arg in (("like for like: connection per worker, 1 thread", sys.argv[3]),
                  ("same, paced at redis-benchmark's rate", sys.argv[4]),
                  ("shared instance, 2 threads", sys.argv[5])):
    text, seen = split(arg)
    o = json.loads(text)[0]
    print(f"run {run}:   bench run ({name}) {o['ops_per_sec']:,.0f}/s p50 {o['p50_us']:.0f} us"
          f" | throughput {o['ops_per_sec']/rps:.2f}x, p50 {o['p50_us']/p50:.2f}x | {seen}")
PY
done
