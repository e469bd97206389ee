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
    # Every test target but the conformance suite, which mostly waits on
    # TTLs and runs next with four threads on two cores (half its time).
    targets=(--lib --bins --examples)
    for t in tests/*.rs cli/tests/*.rs; do
        [ "$t" = tests/conformance.rs ] || targets+=(--test "$(basename "$t" .rs)")
    done
    cargo test --all-features --no-fail-fast "${targets[@]}" -- "${skip[@]/#/--skip=}"
    cargo test --all-features --doc
    cargo test --all-features --test conformance -- --test-threads=4
    cargo test --all-features --test tiered -- --exact "${timed[@]}" --nocapture
    cargo test --all-features --test staleness -- --exact "${stale[@]}" --nocapture --test-threads=1
else
    cargo build --all-features --examples
    cargo test --all-features --no-fail-fast "$@"
fi

# The Python package (python/): builds and installs it into a venv under
# target/ with its test dependencies, then runs pytest over it on every
# backend, Django's and dogpile.cache's own cache test suites included.
./python/test.sh
