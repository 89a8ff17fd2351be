#!/usr/bin/env bash
# End-to-end ingest benchmark on loopback (127.0.79.x): a 3-node CMA queue, one
# packet-reader, and loadgen simulating HOSTS nanoprobes. Two phases:
#   1. throughput: --rate 0 (as fast as ACKs come back), at most OUTSTANDING reports
#      awaiting their ACK;
#   2. latency: --rate 5000 reports/s.
# After each phase it prints each node's Raft log syncs (fdatasync) per second and the
# appends refused by back-pressure (queue full, busy) during it. A consumer (bench's
# queue-drain: reads the queue in order and commits its offset, as the worker does) runs
# throughout, so the 256 MiB byte budget does not fill in the throughput phase;
# CONSUMER=0 runs without it (the queue then fills at about 1.3 million reports).
# Usage: [HOSTS=10000] [DURATION=20] [OUTSTANDING=4000] [PHASES="throughput latency"]
#        [BUILD=1] [STRACE=0] packet-reader/bench.sh
# BUILD=0 uses the release binaries already in ${CARGO_TARGET_DIR:-target}/release.
# STRACE=1 counts fsync/fdatasync/sync_file_range calls of a follower (node 3) during the
# throughput phase with strace -c (needs strace and ptrace rights).
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=${HOSTS:-10000}
DURATION=${DURATION:-20}
OUTSTANDING=${OUTSTANDING:-4000}
PHASES=${PHASES:-throughput latency}
if [[ ${BUILD:-1} != 0 ]]; then
    cargo build --release -q -p cma -p cmactl -p packet-reader -p bench --bin cma --bin cmactl \
        --bin packet-reader --bin loadgen --bin queue-drain
fi
BIN=$(realpath "${CARGO_TARGET_DIR:-target}/release")
WORK=$(mktemp -d /tmp/ringwatch-reader-bench.XXXXXX)
PIDS=()
cleanup() {
    # Only the processes this script started.
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

hex32() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
hex32 > "$WORK/cluster.key"
printf 'primary = 1\n\n[[keys]]\nid = 1\nsecret = "%s"\n' "$(hex32)" > "$WORK/keys.toml"
chmod 600 "$WORK/keys.toml" "$WORK/cluster.key"

NET=127.0.79
# shellcheck source=bench/lib.sh
source bench/lib.sh
# The queue alone (no worker), then the packet-reader feeding it.
WORKER=0 start_cluster
start_reader
if [[ ${CONSUMER:-1} != 0 ]]; then
    "$BIN/queue-drain" --node 127.0.79.1:7400 --node 127.0.79.2:7400 --node 127.0.79.3:7400 \
        --secret-file "$WORK/cluster.key" >"$WORK/drain.out" 2>&1 &
    PIDS+=($!)
fi

# Raft log syncs of node $1 so far (cma_raft_log_syncs_total).
syncs_of() {
    local out
    out=$(exec 4<>"/dev/tcp/127.0.79.$1/7480" && printf 'GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&4 && cat <&4) || { echo 0; return; }
    awk '/^cma_raft_log_syncs_total /{print $2; f=1} END{if(!f) print 0}' <<<"$out"
}
# Appends refused "queue full" through all nodes so far (cma_queue_full_refusals_total).
full_of() {
    local id n total=0 out
    for id in 1 2 3; do
        out=$(exec 4<>"/dev/tcp/127.0.79.$id/7480" && printf 'GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&4 && cat <&4) || continue
        n=$(awk '/^cma_queue_full_refusals_total /{printf "%.0f", $2}' <<<"$out")
        total=$((total + ${n:-0}))
    done
    echo "$total"
}
SYNC_T0=0; FULL0=0; declare -A SYNC0
syncs_mark() { SYNC_T0=$(date +%s.%N); FULL0=$(full_of); for id in 1 2 3; do SYNC0[$id]=$(syncs_of "$id"); done; }
syncs_report() {
    local t1 line="" id n
    t1=$(date +%s.%N)
    for id in 1 2 3; do
        n=$(syncs_of "$id")
        line+=$(awk -v a="${SYNC0[$id]}" -v b="$n" -v t0="$SYNC_T0" -v t1="$t1" -v id="$id" \
            'BEGIN{printf " node%s %.0f/s", id, (b-a)/(t1-t0)}')
    done
    echo "raft_log_syncs_per_sec$line"
    echo "queue_full_refusals=$(( $(full_of) - FULL0 )) (appends refused by the byte budget during the phase)"
}

LOADGEN=("$BIN/loadgen" --reader 127.0.79.10:7300 --key-file "$WORK/keys.toml"
    --hosts "$HOSTS" --duration "$DURATION" --bind 127.0.79.20:0 --progress 5)
echo "== machine: $(nproc) cores, $(uptime | sed 's/.*load/load/')"
if [[ " $PHASES " == *" throughput "* ]]; then
    echo "== throughput: $HOSTS hosts, as fast as ACKs allow (max $OUTSTANDING awaiting ACK)"
    syncs_mark
    if [[ ${STRACE:-0} == 1 ]]; then
        strace -f -c -e trace=fsync,fdatasync,sync_file_range -p "${PIDS[2]}" -o "$WORK/strace.txt" &
        STRACE_PID=$!
    fi
    "${LOADGEN[@]}" --rate 0 --max-outstanding "$OUTSTANDING"
    syncs_report
    if [[ -n ${STRACE_PID:-} ]]; then
        kill -INT "$STRACE_PID"; wait "$STRACE_PID" || true
        echo "== strace -c of follower node 3 (pid ${PIDS[2]}) during the throughput phase"
        cat "$WORK/strace.txt"
    fi
    echo "== machine: $(uptime | sed 's/.*load/load/')"
fi
if [[ " $PHASES " == *" latency "* ]]; then
    echo "== latency: $HOSTS hosts, 5,000 reports/s"
    syncs_mark
    "${LOADGEN[@]}" --rate 5000 --host-base 2000000
    syncs_report
fi
echo "== packet-reader counters"
exec 3<>/dev/tcp/127.0.79.10/7381
printf 'GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3
grep -E '^ringwatch_reader_(received|verified|batches|acks|duplicates)_total|dropped_total.*(overload|abandoned)|append_errors_total|(commit|report)_latency_seconds_(count|bucket.*le="0.0(02|04|08|16|32)|bucket.*le="0.(064|128|256)")' <&3 || true
