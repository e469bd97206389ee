#!/usr/bin/env bash
# memcached, side by side in one run on fresh loopback servers, several runs:
#   set_many of N entries (100-byte values) to one server vs a raw pipelined
#   meta-protocol writer in Rust (`ms KEY 100 q` x 1000, then `mn`);
#   get_many of 1,000 keys across two servers vs one raw `mg` pipeline per server.
#
#   ./scripts/bench_memcached.sh [N=1000000] [RUNS=3]
set -euo pipefail
source "$(dirname "$0")/bench_common.sh"
# Sets STARTED to the port (no subshell: PIDS must reach the EXIT trap).
start() {
    local p; p=$(port)
    local user=(); [ "$(id -u)" = 0 ] && user=(-u root)
    memcached -l 127.0.0.1 -p "$p" -U 0 -m 1024 -t 2 "${user[@]}" >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null && break; sleep 0.05; done
    STARTED=$p
}
start; A=$STARTED
start; B=$STARTED
echo "memcached on 127.0.0.1:$A and 127.0.0.1:$B"
flush() { for p in "$@"; do printf 'flush_all\r\nquit\r\n' > /dev/tcp/127.0.0.1/"$p"; done; }
for r in $(seq "$RUNS"); do
    flush "$A"
    raw=$($U bench memcached-raw --server "127.0.0.1:$A" --records "$N" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["records_per_second"]))')
    flush "$A"
    lib=$($U bench set-many --cache "memcached://127.0.0.1:$A" --records "$N" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["records_per_second"]))')
    python3 -c "import sys; a,b=map(int,sys.argv[1:]); print(f'run $r: raw meta pipeline {a:,}/s | unicache set_many {b:,}/s ({b/a:.2f}x)')" "$raw" "$lib"
done
for r in $(seq "$RUNS"); do
    echo "run $r: get_many 1000 keys, 2 servers: $($U bench memcached-get-many --cache "memcached://127.0.0.1:$A,127.0.0.1:$B")"
done
