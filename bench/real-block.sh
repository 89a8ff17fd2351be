#!/usr/bin/env bash
# Block failure with real nanoprobes (issue 14: "with real nanoprobes, 2,000 hosts: the same
# block targets"): a real 3-node `cma` cluster, a real packet-reader and N real `nanoprobe`
# processes on loopback (127.82.x.y), one flat ring (no switch declared: a rack or a switch
# nobody told the CMA about). Once every host has two watchers, a contiguous block of
# BLOCK % of the hosts (from the middle of the ring) is SIGKILLed at once, and the script
# waits until every one of them has a `dead` verdict. Prints formation time, the first and
# last verdict after the kill, found/expected, and verdicts about hosts that were not killed.
#
# Usage: bench/real-block.sh [N]           (default 2000)
# Knobs: BUILD=1 (0: use ${CARGO_TARGET_DIR:-target}/release as is), BLOCK=5 (% of N),
#        WAIT=180 (s to wait for the verdicts), FORM_WAIT=600 (s to wait for the rings),
#        KEEP=0 (1: keep the work directory with every log).
# Needs python3; no root (nanoprobes probe hosts with UDP echo; ICMP probes are not used
# without declared switches or routers). Each nanoprobe is a process (about 3-5 MiB RSS).
# The nanoprobes run with LLDP capture off: each capture is a packet socket that sees
# every packet of the machine, so N of them on one machine cost N filter runs per
# loopback packet (2,000 saturated both cores in softirq); a real host runs one.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
BLOCK=${BLOCK:-5}
WAIT=${WAIT:-180}
FORM_WAIT=${FORM_WAIT:-600}
NET=127.0.83
if [[ ${BUILD:-1} != 0 ]]; then
    cargo build --release -q -p cma -p cmactl -p packet-reader -p nanoprobe --bins
fi
BIN=$(realpath "${CARGO_TARGET_DIR:-target}/release")
WORK=$(mktemp -d /tmp/ringwatch-realblock.XXXXXX)
PIDS=()
cleanup() {
    # Only the processes this script started, by PID.
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
# Each nanoprobe holds a few descriptors; the script's children inherit its limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$BIN/nanoprobe" keygen --out "$WORK/keys.toml" >/dev/null
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$WORK/cluster.key"
chmod 600 "$WORK/keys.toml" "$WORK/cluster.key"
# shellcheck source=bench/lib.sh
source bench/lib.sh
start_cluster
start_reader

echo "== N=$N real nanoprobes, one flat ring, block of $BLOCK % ($(nproc) cores, $(uptime | sed 's/.*load/load/'))"
printf '[lldp]\nenabled = false\n' > "$WORK/nanoprobe.toml"
declare -A PROBE
t0=$(date +%s.%N)
for h in $(seq "$N"); do
    "$BIN/nanoprobe" --config "$WORK/nanoprobe.toml" --host-id "$h" --bind "127.82.$((h / 256)).$((h % 256)):7500" \
        --packet-reader "$NET.10:7300" --key-file "$WORK/keys.toml" >"$WORK/np$h.log" 2>&1 &
    PROBE[$h]=$!
    PIDS+=($!)
    disown "$!" # no job notice for each one killed
done
formed=""
for _ in $(seq $((FORM_WAIT * 2))); do
    if apis --json hosts 2>/dev/null | python3 -c '
import json, sys
h = json.load(sys.stdin)
sys.exit(0 if len(h) == int(sys.argv[1]) and all(x["status"] == "up" and len(x["watchers"]) == 2 for x in h) else 1)' "$N"; then
        formed=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
        break
    fi
    sleep 0.5
done
[[ -n $formed ]] || { echo "rings did not form within ${FORM_WAIT}s"; exit 1; }
echo "formation (all $N started at once, every host with two watchers): $formed s"
rss=$(ps -o rss= -p "${PROBE[1]}" | tr -d ' ')
echo "one nanoprobe: RSS $((rss / 1024)) MiB"
sleep 5

count=$(( N * BLOCK / 100 )); first=$(( N / 2 + 1 )); last=$(( first + count - 1 ))
echo "== SIGKILL hosts $first-$last ($count consecutive) at once"
kill_us=$(python3 -c 'import time; print(int(time.time() * 1e6))')
for h in $(seq "$first" "$last"); do kill -9 "${PROBE[$h]}"; done
result=""
for _ in $(seq $((WAIT * 2))); do
    apis --json failures --all > "$WORK/failures.json" 2>/dev/null || true
    result=$(python3 - "$WORK/failures.json" "$first" "$last" "$kill_us" <<'PY'
import json, sys
first, last, at = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
down = set(range(first, last + 1))
try:
    rows = json.load(open(sys.argv[1]))
except Exception:
    rows = []
found, times, false = set(), [], set()
for r in rows:
    if r.get("at_us", 0) < at:
        continue
    hosts = set(r.get("hosts") or [])
    if r.get("kind") not in ("false_alarm", "left", "recovered"):
        false |= hosts - down
    if r.get("kind") == "dead":
        found |= hosts & down
        times.append((r["at_us"] - at) / 1e6)
state = "done" if found >= down else "wait"
first_t = min(times) if times else -1
last_t = max(times) if times else -1
print("%s first %.1f s, last %.1f s, %d/%d dead verdicts, %d about hosts not killed"
      % (state, first_t, last_t, len(found), len(down), len(false)))
PY
)
    [[ $result == done* ]] && break
    sleep 0.5
done
echo "block of $count: ${result#* }"
