# Shared by the bench scripts (sourced): a 3-node `cma` cluster and a packet-reader on
# loopback. The caller sets BIN (release binaries), NET (a 127.x.y prefix), WORK (a work
# directory holding keys.toml and cluster.key) and PIDS (an array the caller's cleanup
# kills by PID).

api() { "$BIN/cmactl" --api "http://$NET.$1:7480" "${@:2}"; }
apis() { "$BIN/cmactl" --api "http://$NET.1:7480,http://$NET.2:7480,http://$NET.3:7480" "$@"; }

# start_cluster [TOML_FILE]: nodes 1-3 at $NET.{1,2,3} (Raft :7400, admin :7480), with a
# worker (WORKER=0: none, the queue alone) and TOML_FILE appended to each node's config
# (e.g. a declared topology); the cluster is initialised on node 1 with the three nodes as
# voters.
start_cluster() {
    local extra=${1:-/dev/null} id
    for id in 1 2 3; do
        cat > "$WORK/n$id.toml" <<TOML
node_id = $id
listen = "$NET.$id:7400"
admin_listen = "$NET.$id:7480"
data_dir = "$WORK/data$id"
cluster_secret_file = "$WORK/cluster.key"

TOML
        if [[ ${WORKER:-1} != 0 ]]; then
            printf '[worker]\nkey_file = "%s"\n\n' "$WORK/keys.toml" >> "$WORK/n$id.toml"
        fi
        cat "$extra" >> "$WORK/n$id.toml"
        "$BIN/cma" --config "$WORK/n$id.toml" >"$WORK/n$id.log" 2>&1 &
        PIDS+=($!)
    done
    for id in 1 2 3; do
        for _ in $(seq 300); do api "$id" cluster status >/dev/null 2>&1 && break; sleep 0.1; done
    done
    api 1 cluster init --wait 60 --member "1=$NET.1:7400,$NET.1:7480" \
        --member "2=$NET.2:7400,$NET.2:7480" --member "3=$NET.3:7400,$NET.3:7480" >/dev/null
}

# start_reader: a packet-reader at $NET.10:7300 (metrics at $NET.10:7381) feeding the
# cluster; returns once its metrics port answers.
start_reader() {
    cat > "$WORK/reader.toml" <<TOML
host_id = 900001
listen = "$NET.10:7300"
key_file = "$WORK/keys.toml"
cma_nodes = ["$NET.1:7400", "$NET.2:7400", "$NET.3:7400"]
cluster_secret_file = "$WORK/cluster.key"
metrics_listen = "$NET.10:7381"
TOML
    "$BIN/packet-reader" --config "$WORK/reader.toml" >"$WORK/reader.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/$NET.10/7381") 2>/dev/null && break; sleep 0.1; done
}
