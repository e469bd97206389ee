#!/usr/bin/env bash
# memcached, side by side in one run on fresh loopback servers, several runs:
#   set_many of N entries (100-byte values) to one server vs a raw pipelined
#   meta-protocol writer in Rust (`ms KEY 100 q` x 1000, then `mn`);
#   get_many of 1,000 keys across two servers vs one raw `mg` pipeline per server;
#   single gets from 16 and 64 tasks vs memcaslap at the same concurrency
#   (CONC=0 skips; BEFORE=older-binary adds its figures).
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
# flush_all invalidates what is stored within its second too: wait that out.
flush() { for p in "$@"; do printf 'flush_all\r\nquit\r\n' > /dev/tcp/127.0.0.1/"$p"; done; sleep 1; }
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
[ "${CONC:-1}" = 1 ] || exit 0
# Single gets from many tasks against memcaslap (libmemcached-tools: one
# thread, one request in flight per connection) at the same concurrency.
# memcaslap's TPS counts its preload of the keys too (sets cost the server
# what gets do). unicache: `bench run --ops get`, 10,000 prefilled keys.
# BEFORE=/path/to/an/older/unicache measures that binary as well.
if ! command -v memcaslap >/dev/null; then
    echo "memcaslap not found: apt-get install -y libmemcached-tools (skipping the concurrency part)"; exit 0
fi
printf 'key\n16 16 1\nvalue\n100 100 1\ncmd\n0 0.0\n1 1.0\n' > "$T/get.cfg"
ours() { # binary concurrency: "ops/s p99_us"
    "$1" bench run --cache "memcached://127.0.0.1:$A" --ops get --concurrency "$2" --duration 5s --json \
        | python3 -c 'import json,sys; r=json.load(sys.stdin)[0]; print(round(r["ops_per_sec"]), round(r["p99_us"]))'
}
for r in $(seq "$RUNS"); do
    for c in 16 64; do
        flush "$A"
        m=$(memcaslap -s "127.0.0.1:$A" -T 1 -c "$c" -t 5s -F "$T/get.cfg" | sed -n 's/.*TPS: \([0-9]*\).*/\1/p')
        read -r u p99 <<< "$(ours "$U" "$c")"
        line="run $r, $c tasks: memcaslap $m/s | unicache $u/s ($(python3 -c "print(f'{$u/$m:.2f}x')")), p99 ${p99} us"
        if [ -n "${BEFORE:-}" ]; then
            read -r b bp99 <<< "$(ours "$BEFORE" "$c")"
            line="$line | before $b/s ($(python3 -c "print(f'{$b/$m:.2f}x')")), p99 ${bp99} us"
        fi
        echo "$line"
    done
done
