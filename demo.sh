#!/usr/bin/env bash
# Ringwatch demo: 3 CMA nodes, a packet-reader and 8 nanoprobes on 127.0.79.x (no root
# needed). Forms the rings, shows the `cmactl status` screen, SIGKILLs one nanoprobe (its
# host stays up: `agent_down`), freezes another (a hung host: `dead`), shows `cmactl
# failures` and `cmactl status` reporting them, stops a third gracefully (`left`), then
# cleans everything up.
#   ./demo.sh            (KEEP=1 ./demo.sh keeps the cluster running, with its web console,
#                         until Ctrl-C, and leaves the work directory for inspection;
#                         DEMO_BUILD=debug uses a debug build)
set -euo pipefail
cd "$(dirname "$0")"
if [ "${DEMO_BUILD:-release}" = debug ]; then
    echo "== building (debug)"
    cargo build -q -p cma -p cmactl -p packet-reader -p nanoprobe --bins
    BIN=${CARGO_TARGET_DIR:-target}/debug
else
    echo "== building (release)"
    cargo build --release -q -p cma -p cmactl -p packet-reader -p nanoprobe --bins
    BIN=${CARGO_TARGET_DIR:-target}/release
fi
WORK=$(mktemp -d /tmp/ringwatch-demo.XXXXXX)
PIDS=()
cleanup() {
    # SIGCONT too: a stopped (frozen) process only acts on SIGTERM once continued.
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; kill -CONT "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
NET=127.0.79
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/cluster.key"
chmod 600 "$WORK/cluster.key"   # the daemons refuse secrets other users can read
"$BIN/nanoprobe" keygen --out "$WORK/keys.toml" >/dev/null

echo "== starting 3 CMA nodes"
for id in 1 2 3; do
    cat > "$WORK/cma$id.toml" <<TOML
node_id = $id
listen = "$NET.$id:7400"
admin_listen = "$NET.$id:7480"
data_dir = "$WORK/data$id"
cluster_secret_file = "$WORK/cluster.key"

[worker]
key_file = "$WORK/keys.toml"
command_listen = "$NET.$id:0"

[worker.timings]
interval_ms = 1000
warntime_ms = 2000
deadtime_ms = 3000

[[worker.sinks]]
type = "jsonl"
path = "$WORK/events.jsonl"
TOML
    "$BIN/cma" --config "$WORK/cma$id.toml" >"$WORK/cma$id.log" 2>&1 &
    PIDS+=($!)
done
cmactl() { "$BIN/cmactl" --api "http://$NET.1:7480,http://$NET.2:7480,http://$NET.3:7480" "$@"; }
for id in 1 2 3; do
    for _ in $(seq 100); do "$BIN/cmactl" --api "http://$NET.$id:7480" cluster status >/dev/null 2>&1 && break; sleep 0.1; done
done
"$BIN/cmactl" --api "http://$NET.1:7480" cluster init --wait 60 --member "1=$NET.1:7400,$NET.1:7480" \
    --member "2=$NET.2:7400,$NET.2:7480" --member "3=$NET.3:7400,$NET.3:7480" >/dev/null
echo "web console (any node serves it): http://$NET.1:7480/console/  http://$NET.2:7480/console/  http://$NET.3:7480/console/"

echo "== starting a packet-reader"
cat > "$WORK/reader.toml" <<TOML
host_id = 900001
listen = ["$NET.10:7300"]
key_file = "$WORK/keys.toml"
cma_nodes = ["$NET.1:7400", "$NET.2:7400", "$NET.3:7400"]
cluster_secret_file = "$WORK/cluster.key"
TOML
"$BIN/packet-reader" --config "$WORK/reader.toml" >"$WORK/reader.log" 2>&1 &
PIDS+=($!)

echo "== starting 8 nanoprobes"
declare -A PROBE
for h in 1 2 3 4 5 6 7 8; do
    "$BIN/nanoprobe" --host-id "$h" --bind "$NET.$((100 + h)):7500" --packet-reader "$NET.10:7300" \
        --key-file "$WORK/keys.toml" >"$WORK/nanoprobe$h.log" 2>&1 &
    PROBE[$h]=$!
    PIDS+=($!)
done

echo "== waiting for the rings"
for _ in $(seq 60); do
    if cmactl --json hosts 2>/dev/null | python3 -c 'import json,sys; h=json.load(sys.stdin); sys.exit(0 if len(h)==8 and all(len(x["watchers"])==2 for x in h) else 1)'; then break; fi
    sleep 0.5
done
cmactl rings
cmactl hosts
# `cmactl status` exits 4 while a failure is open (a monitoring check); show the code.
status() { local rc=0; cmactl status || rc=$?; echo "(cmactl status exit code: $rc)"; }
echo "== cmactl status"
status

# Waits until `cmactl --json failures` has a verdict of kind $1 about host $2; prints
# how long it took since $3.
wait_verdict() {
    for _ in $(seq 120); do
        if cmactl --json failures | python3 -c "import json,sys; sys.exit(0 if any(f['kind']=='$1' and f['subject']=='$2' for f in json.load(sys.stdin)) else 1)"; then break; fi
        sleep 0.1
    done
    echo "$1 verdict about host $2 after $(python3 -c "import time; print(round(time.time() - $3, 1))") s"
}

echo "== SIGKILL nanoprobe 5: its host stays up, so its watchers' heartbeats meet port-unreachable"
kill -9 "${PROBE[5]}"
wait_verdict agent_down 5 "$(date +%s.%N)"
cmactl failures

echo "== host 7 hangs (nanoprobe 7 SIGSTOPped: no heartbeat, no answer, no ICMP, like a powered-off host)"
kill -STOP "${PROBE[7]}"
wait_verdict dead 7 "$(date +%s.%N)"
cmactl failures
echo "== cmactl status"
status

echo "== SIGTERM nanoprobe 2 (graceful: shows as left, no alarm)"
kill -TERM "${PROBE[2]}"
sleep 3
cmactl failures
echo "== cmactl status"
status
echo "== events"
cmactl events
if [ "${KEEP:-0}" = 1 ]; then
    echo "== KEEP=1: the cluster keeps running; web console: http://$NET.1:7480/console/ (Ctrl-C stops it)"
    wait
fi
