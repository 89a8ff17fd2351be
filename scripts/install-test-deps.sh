#!/usr/bin/env bash
# Installs the Debian packages Ringwatch's tests and CI need, beyond a Rust toolchain:
# the network lab (iproute2, ping, nftables, lldpd for the zero-config scenarios), systemd-analyze for the units, a real
# Alertmanager for the sink's test, dpkg-dev and lintian for the packages, prometheus for
# promtool and python3 (monitoring/check.sh checks and unit-tests the alerting rules with
# promtool and checks the Grafana dashboard with python3; the prometheus service is not
# needed and may stay stopped), util-linux (unshare, nsenter), procps and adduser (the
# packages' dependency) for packaging/systemd-test.sh, which boots systemd in namespaces
# and installs the packages there, headless Chromium and ChromeDriver for the web
# console's browser test, and the Rust tools
# (cargo-nextest, cargo-fuzz, cargo-deb). README's set-up command and .ci/run both run
# this script; run it as root or with sudo available.
set -euo pipefail

PACKAGES=(iproute2 iputils-ping nftables lldpd systemd prometheus-alertmanager prometheus python3 dpkg-dev lintian fuse3
    util-linux procps adduser chromium chromium-driver)

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

command -v cargo-nextest >/dev/null 2>&1 || cargo install cargo-nextest --locked
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# Pinned: CI packages the debug build (DEB_PROFILE=dev), which 3.8 allows with a warning.
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --version 3.8.0 --locked
