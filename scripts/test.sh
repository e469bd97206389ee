#!/usr/bin/env bash
# Runs the whole test suite. The Redis and memcached tests need the real
# servers' binaries (redis-server, redis-cli, memcached); the tests start them
# on free loopback ports themselves and stop them afterwards. Missing
# binaries are installed with apt-get when running as root, or the script
# stops and says how to install them.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v memcached >/dev/null || need+=(memcached)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing ${need[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "test.sh: missing ${need[*]}; install them first, e.g." >&2
        echo "    sudo apt-get install -y redis-server redis-tools memcached openssl" >&2
        echo "  (or brew install redis memcached), then run ./scripts/test.sh again" >&2
        exit 1
    fi
fi

# The suite's builds need about 8 GB under target/ (debug test binaries and
# the wheel's release build); on less, C builds fail with truncated files.
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((10 * 1024 * 1024)) ]; then
    echo "test.sh: warning: only $((free_kb / 1024)) MB free on $(df -P . | awk 'NR==2 {print $6}'); the suite's builds need about 8 GB" >&2
fi

# The packages start system services; the tests use their own servers.
if [ $# -eq 0 ]; then
    # The tier's cross-process latency tests (p99 of write -> eviction in
    # other processes) and the staleness checker (tests/staleness.rs, ~1 min)
    # run on their own after the rest, so the suite's other servers and
    # processes do not stand in the run queue with them.
    timed=(three_processes_pubsub_p99_under_5ms redis_cli_writes_evict_with_client_tracking)
    stale=(staleness_checker_pubsub staleness_checker_tracking)
    skip=("${timed[@]}" "${stale[@]}")
    # tests/examples.rs runs the built examples.
    cargo build --all-features --examples
    # Every test binary is built once, in one cargo invocation (running
    # targets through separate `cargo test` calls rebuilt some of them with
    # other dependency features: a minute of compiling), then run here.
    targets=(--lib --bins --examples)
    for t in tests/*.rs cli/tests/*.rs; do
        targets+=(--test "$(basename "$t" .rs)")
    done
    list=target/test-binaries.txt
    cargo test --all-features --no-run --message-format=json "${targets[@]}" |
        python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], os.path.dirname(m["manifest_path"]), m["executable"])
' >"$list"
    failed=()
    # run NAME DIR EXE ARGS...: runs a test binary as cargo test would (from
    # its package's directory), noting a failure and going on.
    run() {
        local name=$1 dir=$2 exe=$3
        shift 3
        echo "     Running $name ($exe)"
        (cd "$dir" && "$exe" "$@" </dev/null) || failed+=("$name")
    }
    # named NAME ARGS...: runs the one test binary called NAME.
    named() {
        local name=$1 line
        shift
        line=$(grep "^$name " "$list") || {
            echo "test.sh: no test binary $name in $list" >&2
            exit 2
        }
        # shellcheck disable=SC2086 # name, directory, path: no spaces
        run $line "$@"
    }
    # The Sentinel and replica-cluster tests (~3 min) mostly wait on
    # failovers, and the conformance suite (~3 min with four threads on two
    # cores) on TTLs: they run side by side, after the rest.
    beside=(sentinel cluster_replicas)
    while read -r name dir exe; do
        case " conformance ${beside[*]} " in *" $name "*) continue ;; esac
        run "$name" "$dir" "$exe" "${skip[@]/#/--skip=}"
    done <"$list"
    (
        failed=()
        for name in "${beside[@]}"; do
            named "$name" >"target/$name.log" 2>&1
        done
        [ ${#failed[@]} -eq 0 ]
    ) &
    beside_pid=$!
    named conformance --test-threads=4
    wait "$beside_pid" || failed+=("${beside[*]} (one of; see above)")
    for name in "${beside[@]}"; do cat "target/$name.log"; done
    cargo test --all-features --doc || failed+=(doc)
    named tiered --exact "${timed[@]}" --nocapture
    named staleness --exact "${stale[@]}" --nocapture --test-threads=1
    if [ ${#failed[@]} -gt 0 ]; then
        echo "test.sh: failed: ${failed[*]}" >&2
        exit 101
    fi
else
    cargo build --all-features --examples
    cargo test --all-features --no-fail-fast "$@"
fi

# The Python package (python/): builds and installs it into a venv under
# target/ with its test dependencies, then runs pytest over it on every
# backend, Django's and dogpile.cache's own cache test suites included.
./python/test.sh
