#!/usr/bin/env bash
# The Python package's tests: builds the wheel and sdist once
# (scripts/build_wheels.sh: one release build, abi3, manylinux2014), installs
# the wheel into a fresh venv under target/ with no Rust toolchain on PATH
# (pip may only take a binary wheel, so a missing or broken wheel fails here
# rather than quietly building from source), then runs pytest, which starts
# its own redis-server and memcached on free loopback ports. Run from
# anywhere; scripts/test.sh calls it after the Rust tests.
#
#     ./python/test.sh [pytest args]     # SKIP_BUILD=1: test the wheel already in target/wheels
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/pyvenv
py=${PYTHON:-python3}
if ! "$py" -m venv --help >/dev/null 2>&1 || ! "$py" -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "python/test.sh: installing python3-venv with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq python3-venv python3-pip >/dev/null
    else
        echo "python/test.sh: '$py -m venv' cannot work; install python3-venv first" >&2
        exit 1
    fi
fi

if [ -z "${SKIP_BUILD:-}" ]; then
    ./scripts/build_wheels.sh
fi
wheel=$(ls target/wheels/unicache_rs-*.whl)

# A fresh venv every run: what a user's `pip install` of the wheel gets.
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
# The wheel, then its test dependencies, with cargo and rustc out of reach:
# PATH is the venv's and the system's binaries only, no CARGO_HOME/RUSTUP_HOME.
clean_path="$PWD/$venv/bin:/usr/local/bin:/usr/bin:/bin"
if env -i PATH="$clean_path" HOME="$HOME" sh -c 'command -v cargo || command -v rustc' >/dev/null; then
    echo "python/test.sh: cargo or rustc is on the system PATH; the no-Rust install check would not prove anything" >&2
    exit 1
fi
env -i PATH="$clean_path" HOME="$HOME" "$venv/bin/python" -m pip install -q \
    --disable-pip-version-check --only-binary unicache-rs "$wheel[test]"
"$venv/bin/python" -c 'import unicache_rs, sys; print("python/test.sh: testing", unicache_rs.__file__, "on Python", sys.version.split()[0])'

# From inside tests/: run from python/, the source folder unicache_rs/ (no
# compiled _unicache) would shadow the installed package.
cd python/tests
exec "../../$venv/bin/python" -m pytest -q -p no:cacheprovider "${@:-.}"
