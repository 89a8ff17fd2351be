#!/usr/bin/env bash
# Failure detection side by side: Ringwatch vs Serf, in one run, in the network lab.
#
# The same namespace topology (router r1; switch sw1 with hosts 11-14, sw2 with hosts
# 21-24; 198.18.0.0/15 only, inside the lab's own namespaces) is built afresh for every
# trial and runs either Ringwatch (3 cma, a packet-reader, a nanoprobe per host) or one
# Debian `serf` agent per host namespace bound to the host's address (-profile=lan, then
# -profile=local). The same faults are injected into each, VS_SERF_REPS times (3):
# SIGKILL of one agent, a host killed (eth0 down, agent SIGKILLed), switch sw1 down, and
# 10% loss on every link for VS_SERF_LOSS_SECS (60). Prints, per fault, the median time
# to the first alarm (Ringwatch: the verdict's at_us in `cmactl --json failures --all`;
# Serf: a member-failed event handler's wall-clock stamped line), the number of alarms,
# and the Serf/Ringwatch ratios. Exits non-zero only when the harness fails.
# About 30 minutes (debug builds). Needs root (network namespaces).
#
# Usage (root): [VS_SERF_REPS=3] [VS_SERF_LOSS_SECS=60] [VS_SERF_FAULTS=agent,host,switch,loss]
#               [VS_SERF_SYSTEMS=ringwatch,lan,local] bench/vs-serf.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
    echo "bench/vs-serf.sh needs root (network namespaces)" >&2
    exit 1
fi
if ! command -v serf >/dev/null; then
    echo "== serf is not installed: installing Debian's serf package (apt-get install -y serf)"
    echo "   (the agents run in the lab's namespaces only; the package's system service is disabled)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y serf
    systemctl disable --now serf 2>/dev/null || true
fi
echo "== serf: $(serf version | head -1) (Debian package $(dpkg-query -W -f='${Version}' serf 2>/dev/null || echo '?'))"
echo "== building the workspace binaries (debug)"
cargo build --workspace --bins
started=$(date +%s)
RINGWATCH_LAB_REQUIRED=1 cargo test -p integration --test vs_serf -- --ignored --nocapture --test-threads 1
echo "== vs-serf: $(( ($(date +%s) - started) / 60 )) min $(( ($(date +%s) - started) % 60 )) s"
