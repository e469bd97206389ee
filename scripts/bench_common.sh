# Sourced by the bench scripts (not run): goes to the repository root, reads
# N and RUNS from the script's arguments, builds the release binary ($U;
# BENCH_BUILD, set before sourcing, adds cargo arguments), makes a temp dir
# ($T) and, on exit, kills the servers in PIDS and removes $T.
# port prints a free loopback port; start_redis PORT [ARGS] starts a
# redis-server without persistence there and waits for it.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-1000000}
RUNS=${2:-3}
# UNICACHE=/path/to/unicache measures that binary instead of building one.
if [ -n "${UNICACHE:-}" ]; then
    U=$UNICACHE
else
    # shellcheck disable=SC2086 # BENCH_BUILD is a list of arguments
    cargo build --release -q ${BENCH_BUILD:-}
    U=$PWD/target/release/unicache
fi
T=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_redis() { # port [extra args]
    local p=$1; shift
    mkdir -p "$T/$p"
    redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$T/$p" --daemonize no --loglevel warning "$@" >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 200); do redis-cli -p "$p" ping >/dev/null 2>&1 && return; sleep 0.05; done
    echo "redis-server on $p did not start" >&2; exit 1
}
