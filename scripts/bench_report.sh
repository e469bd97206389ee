#!/usr/bin/env bash
# Makes the `bench run` report and checks it in a real browser:
#   1. `unicache bench run` over memory, SQLite and the file log (plus Redis
#      and memcached on fresh loopback servers when their binaries are
#      installed), get and mixed, concurrency 1, 8 and 64;
#   2. writes the self-contained HTML report (inline SVG, no script);
#   3. opens it in headless Chromium and saves a screenshot, the picture the
#      README shows (look at it: both plots must be drawn).
#
#   ./scripts/bench_report.sh [OUT_DIR=target/bench-report] [DURATION=2s]
#   COPY=1 ./scripts/bench_report.sh   # also copies the PNG to docs/bench.png
#
# Chromium: `apt-get install -y chromium` (Debian). Without it the HTML is
# still written and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/bench-report}
DUR=${2:-2s}
cargo build --release -q
U=$PWD/target/release/unicache
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
T=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Bare names: sqlite and file live in $T (--dir), and read short in the legend.
CACHES=(--dir "$T" --cache memory --cache sqlite --cache file)
if command -v redis-server >/dev/null; then
    P=$(port)
    redis-server --port "$P" --bind 127.0.0.1 --save "" --appendonly no --dir "$T" --daemonize no --loglevel warning >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do redis-cli -p "$P" ping >/dev/null 2>&1 && break; sleep 0.05; done
    CACHES+=(--cache "redis://127.0.0.1:$P")
fi
if command -v memcached >/dev/null; then
    P=$(port)
    # memcached refuses to run as root without -u.
    U_ARG=(); [ "$(id -u)" = 0 ] && U_ARG=(-u root)
    memcached -l 127.0.0.1 -p "$P" -U 0 -m 64 "${U_ARG[@]}" >/dev/null 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$P") 2>/dev/null && break; sleep 0.05; done
    CACHES+=(--cache "memcached://127.0.0.1:$P")
fi

"$U" bench run "${CACHES[@]}" --ops get,mixed --concurrency 1,8,64 --duration "$DUR" \
    --keys 10000 --value-size 100 --report "$OUT/report.html" | tee "$OUT/table.txt"
echo "report: $OUT/report.html"

CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$CHROME" ]; then
    echo "no chromium: install it (apt-get install -y chromium) for the screenshot" >&2
    exit 0
fi
"$CHROME" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$T/chrome" --screenshot="$OUT/report.png" --window-size=1200,900 \
    "file://$OUT/report.html" >/dev/null 2>&1
echo "screenshot: $OUT/report.png ($(du -h "$OUT/report.png" | cut -f1))"
if [ "${COPY:-0}" = 1 ]; then
    mkdir -p docs
    cp "$OUT/report.png" docs/bench.png
    echo "copied to docs/bench.png"
fi
