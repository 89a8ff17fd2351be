#!/usr/bin/env bash
# Scale benchmark (issue 14 part 4): a real 3-node `cma` cluster, a real packet-reader and
# `fleetsim` with N simulated nanoprobes, all on loopback; one fresh cluster per N.
# For each N it prints: formation time from a cold start, idle leader CPU and Raft bytes/s,
# Raft bytes per single death, verdict times for a single kill, a random 5 % "rack", a
# contiguous 5 % block and a declared switch down, `cmactl hosts` / `cmactl failures`
# latency, leader RSS and data dir size; also re-formation after everyone restarts at once,
# and a 5 % block with the CMA leader SIGKILLed at the same moment (restarted afterwards).
#
# Usage: bench/scale.sh N [N...]          e.g. bench/scale.sh 1000 2000 10000
# Knobs: BUILD=1 (0: use ${CARGO_TARGET_DIR:-target}/release as is), IDLE=20 (s of idle
#        measurement), WAIT=180 (s to wait for a verdict set), FORM_WAIT=900 (s to wait
#        for formation), HPS=40 (hosts per switch), SPR=16 (switches per router),
#        KEEP=0 (1: keep the work directory), PHASES="single rack block switch restart
#        leaderkill" (which fault phases to run; formation, idle and the latency/size
#        figures are always measured).
# Needs root (fleetsim binds its socket to the loopback device) and python3.
# Raft bytes are measured as growth of the leader's data directory (sled files, apparent
# size): it includes the queue entries (reports) as well as the worker's entries.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n 2,16p "$0"; exit 2; }
IDLE=${IDLE:-20}
WAIT=${WAIT:-180}
FORM_WAIT=${FORM_WAIT:-900}
HPS=${HPS:-40}
SPR=${SPR:-16}
NET=127.0.81
PHASES=" ${PHASES:-single rack block switch restart leaderkill} "
phase() { [[ $PHASES == *" $1 "* ]]; }
single="-" rack="-" block="-" switch="-"
if [[ ${BUILD:-1} != 0 ]]; then
    cargo build --release -q -p cma -p cmactl -p packet-reader -p fleetsim -p nanoprobe
fi
BIN=$(realpath "${CARGO_TARGET_DIR:-target}/release")
PIDS=()
WORK=""
cleanup() {
    # Only the processes this script started, by PID.
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n $WORK && ${KEEP:-0} != 1 ]] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
source bench/lib.sh
now_us() { date +%s%6N; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
dsize() { du -sb "$1" | cut -f1; }
# `cmactl status` exits 4 while a failure is open: its JSON is still what we need.
leader_id() { { apis --json status 2>/dev/null || true; } | python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("leader_id") or 1)
except Exception: print(1)'; }
last_fault_us() { grep '"event":"fault"' "$WORK/sim.jsonl" | tail -1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["at_us"])'; }
formed_count() { grep -c '"event":"formed"' "$WORK/sim.jsonl" || true; }
wait_formed() { # $1: formed events seen before, $2: timeout (s); prints the seconds of the new one
    local before=$1 limit=${2:-$FORM_WAIT} t0=$SECONDS
    while (( $(formed_count) <= before )); do
        (( SECONDS - t0 > limit )) && { echo "timeout (${limit}s)"; return; }
        sleep 0.5
    done
    grep '"event":"formed"' "$WORK/sim.jsonl" | tail -1 | python3 -c 'import json,sys; print("%.1f" % json.loads(sys.stdin.read())["seconds"])'
}
ctl() { echo "$*" >&7; sleep 0.3; }

# Waits until every host id the last fault took down is in a failure row of kind $1 opened
# after the fault (or WAIT s); prints "<last verdict s after fault> <found>/<total> false=<n>"
# where false counts hosts named in new failure rows that the fault did not take down.
wait_verdicts() {
    local kind=$1 t0=$SECONDS result
    while :; do
        apis --json failures --all > "$WORK/failures.json" 2>/dev/null || true
        result=$(python3 - "$WORK/sim.jsonl" "$WORK/failures.json" "$kind" <<'PY'
import json, sys
faults = [json.loads(l) for l in open(sys.argv[1]) if '"event":"fault"' in l]
fault = faults[-1]
down = set(fault["down"]); at = fault["at_us"]; kind = sys.argv[3]
try:
    rows = json.load(open(sys.argv[2]))
except Exception:
    rows = []
new = [r for r in rows if r.get("at_us", 0) >= at]
found, last, false = set(), 0, set()
for r in new:
    hosts = set(r.get("hosts") or [])
    false |= {h for h in hosts if h not in down} if r.get("kind") not in ("false_alarm", "left", "recovered") else set()
    if r.get("kind") == kind:
        found |= hosts & down if kind == "dead" else down
        last = max(last, r["at_us"])
done = found >= down if kind == "dead" else bool(found)
print("%s %.1f %d/%d false=%d" % ("done" if done else "wait", (last - at) / 1e6 if last else -1, len(found), len(down), len(false)))
PY
)
        if [[ $result == done* ]] || (( SECONDS - t0 > WAIT )); then echo "${result#* }"; return; fi
        sleep 0.5
    done
}

latency_ms() { # median of 5 runs of cmactl "$@" against the leader, ms
    local l=$1; shift
    for _ in 1 2 3 4 5; do
        local a b; a=$(now_us); api "$l" "$@" >/dev/null 2>&1 || true; b=$(now_us)
        echo $(( (b - a) / 1000 ))
    done | sort -n | sed -n 3p
}

declare -a SUMMARY
for N in "$@"; do
    WORK=$(mktemp -d /tmp/ringwatch-scale.XXXXXX)
    PIDS=()
    hex32() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }
    hex32 > "$WORK/cluster.key"
    printf 'primary = 1\n\n[[keys]]\nid = 1\nsecret = "%s"\n' "$(hex32)" > "$WORK/keys.toml"
    chmod 600 "$WORK/keys.toml" "$WORK/cluster.key"
    "$BIN/fleetsim" topology --hosts "$N" --hosts-per-switch "$HPS" --switches-per-router "$SPR" > "$WORK/topology.toml"
    start_cluster "$WORK/topology.toml"
    start_reader

    echo "== N=$N ($HPS hosts per switch, $SPR switches per router; $(nproc) cores, $(uptime | sed 's/.*load/load/'))"
    mkfifo "$WORK/ctl"
    exec 7<>"$WORK/ctl"
    "$BIN/fleetsim" run --hosts "$N" --hosts-per-switch "$HPS" --switches-per-router "$SPR" \
        --reader "$NET.10:7300" --key-file "$WORK/keys.toml" --stats-every-s 30 \
        <"$WORK/ctl" >"$WORK/sim.jsonl" 2>"$WORK/sim.err" &
    PIDS+=($!)
    formation=$(wait_formed 0)
    echo "formation (cold start, all at once): $formation s"
    L=$(leader_id); LPID=${PIDS[$((L - 1))]}
    sleep 5
    t0=$(ticks "$LPID"); s0=$(dsize "$WORK/data$L"); sleep "$IDLE"
    t1=$(ticks "$LPID"); s1=$(dsize "$WORK/data$L")
    idle_cpu=$(awk -v a="$t0" -v b="$t1" -v t="$IDLE" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", 100*(b-a)/hz/t}')
    idle_bps=$(( (s1 - s0) / IDLE ))
    echo "idle leader (node $L): CPU $idle_cpu % of a core, data dir growth $idle_bps bytes/s over ${IDLE}s"

    if phase single; then
        mid=$(( N / 2 + 1 ))
        s0=$(dsize "$WORK/data$L")
        ctl "kill $mid"
        single=$(wait_verdicts dead)
        sleep 5
        s1=$(dsize "$WORK/data$L")
        echo "single kill (host $mid): verdict $single; leader data dir +$(( s1 - s0 )) bytes (kill to verdict + 5 s)"
        before=$(formed_count); ctl revive; echo "revived, re-formed in $(wait_formed "$before" "$WAIT") s"
    fi

    if phase rack; then
        ctl "kill-random 5"
        rack=$(wait_verdicts dead)
        echo "random 5 % rack: last verdict $rack"
        before=$(formed_count); ctl revive; echo "revived, re-formed in $(wait_formed "$before" "$WAIT") s"
    fi

    if phase block; then
        ctl "kill-block 5"
        block=$(wait_verdicts dead)
        echo "contiguous 5 % block: last verdict $block"
        before=$(formed_count); ctl revive; echo "revived, re-formed in $(wait_formed "$before" "$WAIT") s"
    fi

    if phase switch; then
        sw=$(( (N / 2) / HPS ))
        ctl "switch-down sw$sw"
        switch_at=$(last_fault_us)
        switch=$(wait_verdicts switch_down)
        echo "switch sw$sw down: verdict $switch"
        before=$(formed_count); ctl revive; echo "switch back up, re-formed in $(wait_formed "$before" "$WAIT") s"
        sleep 10
        apis --json failures --all > "$WORK/failures.json" 2>/dev/null || true
        echo "dead verdicts since the switch failed (every host was alive): $(python3 -c '
import json, sys
rows = json.load(open(sys.argv[1])); at = int(sys.argv[2])
print(sum(1 for r in rows if r.get("kind") == "dead" and r.get("at_us", 0) >= at))' "$WORK/failures.json" "$switch_at")"
    fi

    if phase restart; then
        before=$(formed_count); ctl restart-all
        echo "everyone restarts at once (new sessions): re-formed in $(wait_formed "$before") s"
    fi

    L=$(leader_id)
    if phase leaderkill; then
        ctl "kill-block 5 $(( N / 4 + 1 ))"
        kill -KILL "${PIDS[$((L - 1))]}"
        leaderkill=$(wait_verdicts dead)
        echo "5 % block from host $(( N / 4 + 1 )) with the CMA leader (node $L) SIGKILLed at once: last verdict $leaderkill"
        "$BIN/cma" --config "$WORK/n$L.toml" >>"$WORK/n$L.log" 2>&1 &
        PIDS[$((L - 1))]=$!
        before=$(formed_count); ctl revive; echo "revived, re-formed in $(wait_formed "$before" "$WAIT") s"
    fi

    L=$(leader_id); LPID=${PIDS[$((L - 1))]}
    hosts_ms=$(latency_ms "$L" --json hosts)
    failures_ms=$(latency_ms "$L" --json failures --all)
    rss=$(awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$LPID/status")
    ddir=$(awk -v b="$(dsize "$WORK/data$L")" 'BEGIN{printf "%.1f", b/1048576}')
    echo "cmactl --json hosts: $hosts_ms ms, cmactl --json failures --all: $failures_ms ms (median of 5)"
    echo "leader RSS $rss MiB, leader data dir $ddir MiB"
    ctl status; ctl quit
    grep '"event":"stats"' "$WORK/sim.jsonl" | tail -1 | sed 's/^/fleetsim: /'
    SUMMARY+=("$(printf '%7s %9s %8s %10s %22s %22s %22s %22s %7s %7s %8s %8s' \
        "$N" "$formation" "$idle_cpu" "$idle_bps" "${single% false*}" "${rack% false*}" "${block% false*}" "${switch% false*}" \
        "$hosts_ms" "$failures_ms" "$rss" "$ddir")")
    exec 7>&-
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ ${KEEP:-0} == 1 ]] && echo "kept $WORK" || rm -rf "$WORK"
    WORK=""
done
echo
echo "== summary (verdict columns: seconds from fault to last verdict, found/expected)"
printf '%7s %9s %8s %10s %22s %22s %22s %22s %7s %7s %8s %8s\n' N "form(s)" "cpu(%)" "raft(B/s)" single rack5% block5% switch "hosts" "fails" "RSS(MiB)" "dir(MiB)"
printf '%s\n' "${SUMMARY[@]}"
