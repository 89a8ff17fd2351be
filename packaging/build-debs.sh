#!/usr/bin/env bash
# Builds the Debian packages ringwatch-nanoprobe, ringwatch-packet-reader and ringwatch-cma
# from a release build, into $CARGO_TARGET_DIR/debian (default target/debian):
#   packaging/build-debs.sh            (needs cargo-deb: cargo install cargo-deb --locked)
# DEB_PROFILE=dev packages the debug binaries instead: CI uses it to check the packaging
# (contents, metadata, lintian) without a second, release build of the workspace.
# The man pages and cmactl's shell completions are generated from the clap definitions
# (`cmactl man`, `cma --man`, `nanoprobe --man`, `packet-reader --man`, `cmactl
# completions`) into packaging/build/ first.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "build-debs: cargo-deb missing; install it with: cargo install cargo-deb --locked" >&2
    exit 1
fi
target=${CARGO_TARGET_DIR:-target}
out="$target/debian"
profile=${DEB_PROFILE:-release}
case "$profile" in
    dev) bindir="$target/debug" ;;
    *) bindir="$target/$profile" ;;
esac
echo "== $profile build"
cargo build --profile "$profile" --locked -p nanoprobe -p packet-reader -p cma -p cmactl \
    --bin nanoprobe --bin packet-reader --bin cma --bin cmactl

echo "== man pages and cmactl completions"
gen=packaging/build
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/man-nanoprobe" "$gen/man-packet-reader" "$gen/completions"
"$bindir/cmactl" man --out-dir "$gen/man"
"$bindir/cma" --man > "$gen/man/cma.1"
"$bindir/nanoprobe" --man > "$gen/man-nanoprobe/nanoprobe.1"
"$bindir/packet-reader" --man > "$gen/man-packet-reader/packet-reader.1"
gzip -9n "$gen"/man/*.1 "$gen"/man-nanoprobe/*.1 "$gen"/man-packet-reader/*.1
"$bindir/cmactl" completions bash > "$gen/completions/cmactl"
"$bindir/cmactl" completions zsh > "$gen/completions/_cmactl"
"$bindir/cmactl" completions fish > "$gen/completions/cmactl.fish"

echo "== packages"
mkdir -p "$out"
rm -f "$out"/ringwatch-*.deb
for crate in nanoprobe packet-reader cma; do
    # Stripped: the release profile keeps line tables for profiling, packages need not.
    cargo deb --no-build --locked --strip --profile "$profile" -p "$crate" --output "$out/"
done
ls -l "$out"/ringwatch-*.deb
