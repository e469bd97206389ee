#!/usr/bin/env bash
# Builds the Python package's distributions into target/wheels/: one abi3
# wheel (CPython 3.9+) tagged manylinux2014 for this machine's architecture,
# and the sdist. A user installs the wheel with pip and no Rust toolchain.
#
#     ./scripts/build_wheels.sh           # then: pip install target/wheels/unicache_rs-*.whl
#     CHECK_SDIST=1 ./scripts/build_wheels.sh   # and build a wheel from the sdist too
#
# Needs cargo and python3 (3.9+). The build tools (maturin, ziglang,
# auditwheel) go into a venv of their own under target/. The C and Rust
# code links with zig (the `ziglang` PyPI package) against glibc 2.17, so a
# build machine with a newer glibc still makes a manylinux2014 wheel;
# `auditwheel show` then checks the tag. One release build (the `wheel`
# profile) into target/python, incremental across runs.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/wheels
tools=target/wheelvenv
py=${PYTHON:-python3}
if ! [ -x "$tools/bin/python" ]; then
    "$py" -m venv "$tools"
fi
"$tools/bin/python" -m pip install -q --disable-pip-version-check \
    "maturin>=1.5,<2" "ziglang>=0.11,<0.14" "auditwheel>=6"
export PATH="$PWD/$tools/bin:$PATH"
export CARGO_TARGET_DIR="$PWD/target/python"

rm -rf "$out" && mkdir -p "$out"
if ! maturin build -m python/Cargo.toml --locked --compatibility manylinux2014 --zig \
    --interpreter "$tools/bin/python" --out "$out"; then
    # A full disk shows up as a truncated archive or object inside a C build.
    echo "build_wheels.sh: the wheel's release build failed; free space under target/:" >&2
    df -h target >&2 || true
    exit 1
fi
maturin sdist -m python/Cargo.toml --out "$out"

wheel=$(ls "$out"/*.whl)
# The tag maturin gave must be one auditwheel accepts for what the
# extension links (glibc symbol versions, no shared libraries of its own).
auditwheel show "$wheel" | tee "$out/auditwheel.txt"
grep -q 'is consistent with the following platform tag: "manylinux_2_17_' "$out/auditwheel.txt" \
    || grep -q 'manylinux2014' "$out/auditwheel.txt" \
    || { echo "build_wheels.sh: auditwheel does not accept $wheel as manylinux2014" >&2; exit 1; }

# CHECK_SDIST=1: also build a wheel from the sdist (a second release build,
# as `pip install unicache-rs` does where no wheel fits), to prove the sdist
# holds everything it needs.
if [ -n "${CHECK_SDIST:-}" ]; then
    rm -rf target/sdist-check
    python -m pip wheel -q --disable-pip-version-check --no-deps --no-binary unicache-rs \
        "$out"/unicache_rs-*.tar.gz -w target/sdist-check
    echo "build_wheels.sh: the sdist builds: $(ls target/sdist-check)"
fi
ls -l "$out"
