#!/usr/bin/env bash
# Redis Cluster reads on replicas, side by side on one loopback cluster of
# three masters with one replica each (no persistence), several runs:
# `unicache bench run --ops get` (64 workers, 5 s, 10,000 prefilled keys)
# on redis+cluster:// with read_from=master, replica and nearest; then where
# the GETs went (each node's cmdstat_get).
#
#   ./scripts/bench_cluster_replicas.sh [N: unused] [RUNS=3]
set -euo pipefail
# The feature set the workspace is built with, so that the release
# artifacts are reused.
BENCH_BUILD="--all-features -p unicache-cli"
source "$(dirname "$0")/bench_common.sh"
NODES=()
for _ in 1 2 3 4 5 6; do
    # The cluster bus listens on port + 10000: that one must be free too.
    while :; do
        p=$(port)
        [ "$p" -lt 55535 ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null && break
    done
    start_redis "$p" --cluster-enabled yes --cluster-config-file "nodes-$p.conf" --cluster-node-timeout 5000
    NODES+=("127.0.0.1:$p")
done
redis-cli --cluster create "${NODES[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
for n in "${NODES[@]}"; do
    for _ in $(seq 400); do
        redis-cli -p "${n#*:}" cluster info | grep -q 'cluster_state:ok' && break; sleep 0.05
    done
done
# Redis 7 lists a replica in CLUSTER SLOTS only once its replication offset
# (as gossiped) is not 0: write a key to each master, wait for every node
# to list all six.
for i in $(seq 30); do redis-cli -c -p "${NODES[0]#*:}" set "warm:{$i}" x >/dev/null; done
listed=0
for _ in $(seq 400); do
    listed=$(redis-cli -p "${NODES[0]#*:}" cluster slots | grep -c '^127.0.0.1$' || true)
    [ "$listed" = 6 ] && break; sleep 0.05
done
CURL="redis+cluster://$(IFS=,; echo "${NODES[*]}")"
echo "cluster ${NODES[*]} (3 masters, 1 replica each; CLUSTER SLOTS lists $listed nodes)"
gets() { # url
    $U bench run --cache "$1" --ops get --concurrency 64 --duration 5s --json \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d["results"][0] if isinstance(d,dict) else d[0]; print(round(r["ops_per_sec"] if "ops_per_sec" in r else r["throughput"]))'
}
for r in $(seq "$RUNS"); do
    # Alternate which goes first: on a busy machine the load drifts.
    if [ $((r % 2)) = 1 ]; then
        master=$(gets "$CURL"); replica=$(gets "$CURL?read_from=replica")
    else
        replica=$(gets "$CURL?read_from=replica"); master=$(gets "$CURL")
    fi
    nearest=$(gets "$CURL?read_from=nearest")
    python3 -c "import sys; m,r,n=map(int,sys.argv[1:]); print(f'run $r: GET x64 cluster read_from=master {m:,}/s | replica {r:,}/s ({r/m:.2f}x) | nearest {n:,}/s ({n/m:.2f}x)')" "$master" "$replica" "$nearest"
done
# Where the GETs went over all runs: the replicas served the replica reads.
for n in "${NODES[@]}"; do
    p=${n#*:}
    role=$(redis-cli -p "$p" role | head -1)
    calls=$(redis-cli -p "$p" info commandstats | sed -n 's/^cmdstat_get:calls=\([0-9]*\).*/\1/p')
    echo "  $n $role: ${calls:-0} GETs"
done
