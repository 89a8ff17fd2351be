#!/usr/bin/env bash
# The fault-injection suite, long run (docs/reliability.md): real cma nodes with their
# workers in network namespaces (198.18.0.0/15), real nanoprobes and a packet-reader,
# concurrent appends, reads and offset commits, a nemesis composing partitions, SIGKILLs
# (one, a majority, all), leader pauses, membership changes, slow disks and power cuts,
# then the checker and the worker replay of every node's log. Prints faults injected by
# kind, operations, anomalies by kind; exits non-zero on any anomaly. Needs root (network
# namespaces, nftables, FUSE). RINGWATCH_NEMESIS_HOSTS (default 6) sets the nanoprobes,
# RINGWATCH_NEMESIS_SNAPSHOT_AFTER_LOGS (default 2000) the nodes' snapshot interval.
#
#   bench/nemesis.sh --minutes 30 --nodes 3 --seed 42
#   bench/nemesis.sh --minutes 5 --nodes 5 --faults kill-all,pause-leader
#
# Fault kinds: isolate-leader majority-minority bridge one-way kill-one kill-majority
# kill-all pause-leader membership power-cut slow-disk (default: all). The same seed replays the same
# schedule of fault kinds and choices (timing still varies with the machine).
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=30 nodes=3 seed=$(date +%s) faults=""
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes=$2; shift 2 ;;
        --nodes) nodes=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --faults) faults=$2; shift 2 ;;
        *) echo "usage: $0 [--minutes M] [--nodes 3|5] [--seed S] [--faults k1,k2]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench/nemesis.sh needs root (network namespaces)" >&2; exit 2; }
case "$nodes" in 3) test=three ;; 5) test=five ;; *) echo "--nodes: 3 or 5" >&2; exit 2 ;; esac

cargo build --workspace --bins
export RINGWATCH_LAB_REQUIRED=1
export RINGWATCH_NEMESIS_SECONDS=$(( minutes * 60 ))
export RINGWATCH_NEMESIS_SEED=$seed
# Namespaces of their own (rwlL3-..., rwlL5-...): a short run of the test suite started
# meanwhile removes only its own leftovers, not this run's.
export RINGWATCH_NEMESIS_TAG=L$nodes
[ -z "$faults" ] || export RINGWATCH_NEMESIS_FAULTS=$faults
echo "nemesis: $nodes nodes, $minutes min, seed $seed${faults:+, faults $faults}"
exec cargo test -p integration --test nemesis "$test" -- --nocapture --test-threads 1
