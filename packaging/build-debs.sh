#!/usr/bin/env bash
# Builds the Debian packages ringwatch-nanoprobe, ringwatch-packet-reader and ringwatch-cma
# from a release build, into $CARGO_TARGET_DIR/debian (default target/debian):
#   packaging/build-debs.sh            (needs cargo-deb: cargo install cargo-deb --locked)
# The cmactl man pages and shell completions are generated from its clap definition
# (`cmactl man`, `cmactl completions`) into packaging/build/ first.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "build-debs: cargo-deb missing; install it with: cargo install cargo-deb --locked" >&2
    exit 1
fi
target=${CARGO_TARGET_DIR:-target}
out="$target/debian"
echo "== release build"
cargo build --release --locked -p nanoprobe -p packet-reader -p cma \
    --bin nanoprobe --bin packet-reader --bin cma --bin cmactl

echo "== cmactl man pages and completions"
gen=packaging/build
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions"
"$target/release/cmactl" man --out-dir "$gen/man"
gzip -9n "$gen"/man/*.1
"$target/release/cmactl" completions bash > "$gen/completions/cmactl"
"$target/release/cmactl" completions zsh > "$gen/completions/_cmactl"
"$target/release/cmactl" completions fish > "$gen/completions/cmactl.fish"

echo "== packages"
mkdir -p "$out"
rm -f "$out"/ringwatch-*.deb
for crate in nanoprobe packet-reader cma; do
    # Stripped: the release profile keeps line tables for profiling, packages need not.
    cargo deb --no-build --locked --strip -p "$crate" --output "$out/"
done
ls -l "$out"/ringwatch-*.deb
