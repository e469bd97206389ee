#!/usr/bin/env bash
# The Python package's tests: builds and installs ./python (with its test
# dependencies) into a venv under target/, then runs pytest, which starts
# its own redis-server and memcached on free loopback ports. Run from
# anywhere; scripts/test.sh calls it after the Rust tests.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/pyvenv
py=${PYTHON:-python3}
if ! [ -x "$venv/bin/python" ]; then
    if ! "$py" -m venv "$venv" 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "python/test.sh: installing python3-venv with apt-get" >&2
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >/dev/null
            apt-get install -y -qq python3-venv python3-pip >/dev/null
            rm -rf "$venv"
            "$py" -m venv "$venv"
        else
            echo "python/test.sh: '$py -m venv' failed; install python3-venv first" >&2
            exit 1
        fi
    fi
fi
# Incremental builds across runs: the package's Rust build keeps its own target dir.
export CARGO_TARGET_DIR="$PWD/target/python"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "./python[test]"
# From inside tests/: run from python/, the source folder unicache/ (no
# compiled _unicache in a fresh clone) would shadow the installed package.
cd python/tests
exec "../../$venv/bin/python" -m pytest -q -p no:cacheprovider . "$@"
