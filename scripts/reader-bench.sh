#!/usr/bin/env bash
# End-to-end ingest benchmark: a 3-node CMA queue, one packet-reader and a load generator
# of simulated nanoprobes, all on loopback (127.0.78.x). Usage:
#   [HOSTS=10000] [DURATION=20] scripts/reader-bench.sh [extra loadgen args]
# Runs a saturation phase (--rate 0) and a latency phase (--rate 5000) unless --rate is given.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p cma -p packet-reader --bins
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d /tmp/ringwatch-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/cluster.key"
"$BIN/cmactl" keygen --out "$WORK/keys.toml" >/dev/null 2>&1 || python3 - "$WORK/keys.toml" <<'PY'
import os, sys
open(sys.argv[1], "w").write('primary = 1\n[[keys]]\nid = 1\nsecret = "%s"\n' % os.urandom(32).hex())
PY
for id in 1 2 3; do
    cat > "$WORK/n$id.toml" <<TOML
node_id = $id
listen = "127.0.78.$id:7400"
admin_listen = "127.0.78.$id:7480"
data_dir = "$WORK/data$id"
cluster_secret_file = "$WORK/cluster.key"
TOML
    "$BIN/cma" --config "$WORK/n$id.toml" >"$WORK/n$id.log" 2>&1 &
    PIDS+=($!)
done
api() { "$BIN/cmactl" --api "http://127.0.78.$1:7480" "${@:2}"; }
for _ in $(seq 100); do api 1 cluster status >/dev/null 2>&1 && break; sleep 0.1; done
api 1 cluster init >/dev/null
for id in 2 3; do
    for _ in $(seq 100); do api "$id" cluster status >/dev/null 2>&1 && break; sleep 0.1; done
    api 1 cluster add-learner --id "$id" --raft "127.0.78.$id:7400" --admin "127.0.78.$id:7480" >/dev/null
    api 1 cluster promote --id "$id" >/dev/null
done
cat > "$WORK/reader.toml" <<TOML
host_id = 900001
listen = "127.0.78.10:7300"
key_file = "$WORK/keys.toml"
cma_nodes = ["127.0.78.1:7400", "127.0.78.2:7400", "127.0.78.3:7400"]
cluster_secret_file = "$WORK/cluster.key"
metrics_listen = "127.0.78.10:7381"
TOML
"$BIN/packet-reader" --config "$WORK/reader.toml" >"$WORK/reader.log" 2>&1 &
PIDS+=($!)
sleep 1
if [[ " $* " == *" --rate "* ]]; then
    "$BIN/loadgen" --reader 127.0.78.10:7300 --key-file "$WORK/keys.toml" --hosts "${HOSTS:-10000}" --duration "${DURATION:-20}" "$@"
else
    echo "== saturation (as fast as ACKs allow)"
    "$BIN/loadgen" --reader 127.0.78.10:7300 --key-file "$WORK/keys.toml" --hosts "${HOSTS:-10000}" --duration "${DURATION:-20}" --rate 0 "$@"
    echo "== latency at 5,000 reports/s"
    "$BIN/loadgen" --reader 127.0.78.10:7300 --key-file "$WORK/keys.toml" --hosts "${HOSTS:-10000}" --duration "${DURATION:-20}" --rate 5000 --host-base 2000000 "$@"
fi
echo "== packet-reader counters"
curl -s http://127.0.78.10:7381/metrics | grep -E '^ringwatch_reader_(received|verified|batches|acks|duplicates)_total|dropped_total.*(overload|abandoned)' || true
