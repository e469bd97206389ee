# Sourced by the bench scripts (not run): goes to the repository root, reads
# N and RUNS from the script's arguments, builds the release binary ($U),
# makes a temp dir ($T) and, on exit, kills the servers in PIDS and removes $T.
# port prints a free loopback port.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${1:-1000000}
RUNS=${2:-3}
cargo build --release -q
U=$PWD/target/release/unicache
T=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
