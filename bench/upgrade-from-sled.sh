#!/bin/bash
# Upgrade check of the Raft log layout: a `cma` of a release before the segment log
# (entries in sled) builds a log of ~3,000 entries on one node (127.0.78.1); the current
# `cma` opens the same data directory, migrates the entries into segment files, and must
# serve the same queue, take new appends, and come back after a restart.
# Needs: cargo build --release -p cma -p cmactl -p bench -p packet-reader --bins (current) and the old build.
set -u
OLD=${1:?usage: bench/upgrade-from-sled.sh OLD_RELEASE_DIR (target/release of a build before the segment log, e.g. fdea48b)}
NEW=$(cd "$(dirname "$0")/.." && pwd)/target/release
D=$(mktemp -d /tmp/ringwatch-upgrade.XXXXXX)
trap 'kill $P 2>/dev/null; rm -rf "$D"' EXIT; P=
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > $D/cluster.key; chmod 600 $D/cluster.key
cat > $D/n1.toml <<TOML
node_id = 1
listen = "127.0.78.1:7400"
admin_listen = "127.0.78.1:7480"
data_dir = "$D/d1"
cluster_secret_file = "$D/cluster.key"
[raft]
snapshot_after_logs = 100000000
TOML
API=http://127.0.78.1:7480
metric() { curl -s -m 2 $API/metrics | awk -v m="$1" '$1==m{print $2}'; }
wait_up() { for i in $(seq 1 100); do curl -s -m 1 $API/metrics >/dev/null && return 0; sleep 0.2; done; return 1; }
wait_leader() { for i in $(seq 1 100); do [ "$(metric cma_raft_is_leader)" = "1" ] && return 0; sleep 0.2; done; return 1; }
$OLD/cma --config $D/n1.toml > $D/old.log 2>&1 & P=$!
wait_up || { echo "old node did not start"; kill $P; exit 1; }
$OLD/cmactl --api $API cluster init
wait_leader || { echo "no leader (old)"; kill $P; exit 1; }
$NEW/queue-bench --node 127.0.78.1:7400 --secret-file $D/cluster.key --phase throughput --duration 5 --batch 256 --no-consumer 2>&1 | grep "throughput:"
OLD_NEXT=$(metric cma_queue_next_offset); OLD_LAST=$(metric cma_raft_last_log_index)
echo "old: next_offset=$OLD_NEXT last_log=$OLD_LAST depth=$(metric cma_queue_depth) snapshot_index=$(metric cma_raft_snapshot_index)"
kill $P; wait $P 2>/dev/null
$NEW/cma --config $D/n1.toml > $D/new.log 2>&1 & P=$!
wait_up || { echo "new node did not start"; cat $D/new.log; kill $P; exit 1; }
wait_leader || { echo "no leader (new)"; kill $P; exit 1; }
NEXT=$(metric cma_queue_next_offset); LAST=$(metric cma_raft_last_log_index)
echo "new: next_offset=$NEXT last_log=$LAST depth=$(metric cma_queue_depth)"
grep -o "moved the raft log from sled into segment files.*" $D/new.log | head -1
ls $D/d1/entries | head
[ "$NEXT" = "$OLD_NEXT" ] && [ "$LAST" -ge "$OLD_LAST" ] || { echo "FAIL: the migrated node does not hold the same queue"; exit 1; }
$NEW/queue-bench --node 127.0.78.1:7400 --secret-file $D/cluster.key --phase latency --duration 3 --no-consumer 2>&1 | grep "latency: [0-9]"
AFTER=$(metric cma_queue_next_offset)
echo "new after appends: next_offset=$AFTER last_log=$(metric cma_raft_last_log_index)"
[ "$AFTER" -gt "$NEXT" ] || { echo "FAIL: no append was taken after the migration"; exit 1; }
kill $P; wait $P 2>/dev/null
$NEW/cma --config $D/n1.toml > $D/new2.log 2>&1 & P=$!
wait_up && wait_leader
AGAIN=$(metric cma_queue_next_offset)
echo "new, restarted: next_offset=$AGAIN last_log=$(metric cma_raft_last_log_index) depth=$(metric cma_queue_depth)"
kill $P; wait $P 2>/dev/null; P=
[ "$AGAIN" = "$AFTER" ] || { echo "FAIL: the restart lost appends"; exit 1; }
echo "upgrade check passed"
