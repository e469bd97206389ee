#!/usr/bin/env bash
# What a crates.io user gets, checked from the packaged form:
#  1. `cargo package` of the library and the CLI: the .crate files build on
#     their own (the CLI against the packaged library, not the path).
#  2. A fresh project that adds the library as a dependency (a path
#     dependency standing in for `cargo add unicache`) builds with the
#     default features, and its tree holds none of the CLI's crates.
# Usage: scripts/check_package.sh   (CI runs it; a few minutes, cold)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

echo "check_package: cargo package (library and CLI, verified)" >&2
cargo package --workspace --exclude unicache-python --allow-dirty --quiet

echo "check_package: a fresh project depending on unicache" >&2
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
cargo new --quiet --vcs none --name fresh_app "$fresh/app"
cd "$fresh/app"
cargo add --quiet unicache --path "$root"
cat > src/main.rs <<'RS'
#[tokio::main(flavor = "current_thread")]
async fn main() -> unicache::Result<()> {
    let cache = unicache::open("memory://").await?;
    cache.set("k", b"v", None).await?;
    assert_eq!(cache.get("k").await?.as_deref(), Some(&b"v"[..]));
    println!("fresh project: ok");
    Ok(())
}
RS
cargo add --quiet tokio --features macros,rt
tree=$(cargo tree --prefix none -e normal --format '{p}')
for cli_crate in clap clap_complete clap_mangen anyhow indicatif hdrhistogram tracing-subscriber tempfile thiserror; do
    if grep -q "^$cli_crate v" <<<"$tree"; then
        echo "check_package: the library's default tree holds the CLI's crate $cli_crate:" >&2
        cargo tree -e normal -i "$cli_crate" >&2
        exit 1
    fi
done
echo "check_package: $(grep -c . <<<"$(sort -u <<<"$tree")") crates in a default library build, none of the CLI's" >&2
# The shared target dir: the deps built above are not built again.
CARGO_TARGET_DIR="$root/target/fresh" cargo run --quiet
