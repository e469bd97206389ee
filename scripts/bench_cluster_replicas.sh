# Where the GETs went over all runs: replicas served the replica reads.
for n in "${NODES[@]}"; do
    p=${n#*:}
    role=$(redis-cli -p "$p" role | head -1)
    calls=$(redis-cli -p "$p" info commandstats | sed -n 's/^cmdstat_get:calls=\([0-9]*\).*/\1/p')
    echo "  $n $role: ${calls:-0} GETs"
done
