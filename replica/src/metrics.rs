//! The node's metrics in a Prometheus registry: the counters and histograms the node
//! updates itself ([`NodeMetrics`]), and gauges read from it at every scrape.

use crate::node::{Node, NodeMetrics};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Gauges refreshed from the node at every scrape.
#[derive(Default)]
pub struct NodeGauges {
    term: Gauge,
    leader: Gauge,
    is_leader: Gauge,
    applied_index: Gauge,
    last_log_index: Gauge,
    snapshot_index: Gauge,
    queue_depth: Gauge,
    queue_bytes: Gauge,
    queue_max_bytes: Gauge,
    queue_next_offset: Gauge,
    snapshots_installed: Gauge,
    connections_open: Gauge,
    connections_in_handshake: Gauge,
}

impl NodeGauges {
    /// Registers the node's counters and these gauges in `registry` (prefix `cma_`).
    pub fn register(&self, registry: &mut Registry, m: &NodeMetrics) {
        let g = self;
        let r = registry.sub_registry_with_prefix("cma");
        r.register("raft_term", "Current Raft term", g.term.clone());
        r.register(
            "raft_leader",
            "Id of the known leader (-1: none)",
            g.leader.clone(),
        );
        r.register(
            "raft_is_leader",
            "1 while this node leads",
            g.is_leader.clone(),
        );
        r.register(
            "raft_applied_index",
            "Last applied log index",
            g.applied_index.clone(),
        );
        r.register(
            "raft_last_log_index",
            "Last log index",
            g.last_log_index.clone(),
        );
        r.register(
            "raft_snapshot_index",
            "Last snapshot's log index",
            g.snapshot_index.clone(),
        );
        r.register(
            "raft_snapshots_installed",
            "Snapshots installed from a leader since start",
            g.snapshots_installed.clone(),
        );
        r.register(
            "queue_depth",
            "Packets stored and not yet trimmed",
            g.queue_depth.clone(),
        );
        r.register(
            "queue_next_offset",
            "Offset of the next packet",
            g.queue_next_offset.clone(),
        );
        r.register(
            "queue_appended_packets",
            "Packets stored by appends through this node",
            m.appended_packets.clone(),
        );
        r.register(
            "queue_duplicate_packets",
            "Duplicate packets skipped by appends through this node",
            m.duplicate_packets.clone(),
        );
        r.register(
            "queue_append_batches",
            "Append batches committed through this node",
            m.append_batches.clone(),
        );
        r.register(
            "queue_commit_seconds",
            "Append latency from propose to apply",
            m.commit_seconds.clone(),
        );
        r.register(
            "raft_log_flush_seconds",
            "Duration of a group sync of the Raft log (fdatasync of the segment files written)",
            m.flush_seconds.clone(),
        );
        r.register(
            "queue_full_refusals",
            "Appends through this node refused because the queue held its byte budget",
            m.queue_full.clone(),
        );
        r.register(
            "queue_full_early_refusals",
            "Of those, refused by the leader before proposing (no Raft entry written)",
            m.queue_full_early.clone(),
        );
        r.register(
            "queue_bytes",
            "Bytes the stored packets hold in memory (datagrams + per-packet overhead)",
            g.queue_bytes.clone(),
        );
        r.register(
            "queue_max_bytes",
            "Byte budget of the queue (0: unlimited)",
            g.queue_max_bytes.clone(),
        );
        r.register(
            "raft_prompt_elections",
            "Elections this node called because its leader was silent for a whole lease",
            m.prompt_elections.clone(),
        );
        r.register(
            "raft_proposals_waited",
            "Proposals and reads that waited for a slot (max_inflight_proposals in flight)",
            m.proposals_waited.clone(),
        );
        r.register(
            "raft_proposals_shed",
            "Client calls answered Busy: no proposal slot freed within max_proposal_wait_ms",
            m.proposals_shed.clone(),
        );
        r.register(
            "node_requests_in_flight",
            "Peer and client requests being served by this node (all connections)",
            m.requests_in_flight.clone(),
        );
        r.register(
            "node_connection_reads_paused",
            "Times a connection reached its in-flight request limit and was not read until one was answered",
            m.connection_reads_paused.clone(),
        );
        r.register(
            "raft_log_syncs",
            "Completed syncs (fdatasync) of the Raft log",
            m.syncs.clone(),
        );
        r.register(
            "raft_snapshot_build_seconds",
            "Duration of building one snapshot (encode, write, fsync, rename)",
            m.snapshot.build_seconds.clone(),
        );
        r.register(
            "raft_snapshot_bytes",
            "Size of the last snapshot built, installed or loaded",
            m.snapshot.bytes.clone(),
        );
        r.register(
            "raft_log_purge_seconds",
            "Duration of one background purge of the Raft log",
            m.purge_seconds.clone(),
        );
        r.register(
            "raft_log_write_seconds",
            "Duration of a synchronous storage write Raft waits for (entries, committed index)",
            m.log_write_seconds.clone(),
        );
        r.register(
            "raft_log_appended_bytes",
            "Bytes of entries appended to the Raft log",
            m.log_appended_bytes.clone(),
        );
        r.register(
            "raft_log_bytes_since_snapshot",
            "Bytes appended to the Raft log since the last snapshot",
            m.log_bytes_since_snapshot.clone(),
        );
        r.register(
            "connection_errors",
            "Peer/client connections that failed the handshake or ended in error, by reason",
            m.connection_errors.clone(),
        );
        r.register(
            "connections_refused",
            "Raft/queue connections turned away before the handshake, and failed accepts, by reason",
            m.connections_refused.clone(),
        );
        r.register(
            "connections_open",
            "Connections open on the Raft/queue port",
            g.connections_open.clone(),
        );
        r.register(
            "connections_in_handshake",
            "Connections on the Raft/queue port that have not finished the handshake",
            g.connections_in_handshake.clone(),
        );
    }

    /// Reads the gauges from `node` (call before encoding the registry).
    pub fn refresh(&self, node: &Node) {
        let g = self;
        {
            let m = node.raft_metrics();
            let m = m.borrow();
            g.term.set(m.current_term as i64);
            g.leader
                .set(m.current_leader.map(|l| l as i64).unwrap_or(-1));
            g.is_leader
                .set(i64::from(m.current_leader == Some(node.id())));
            g.last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
            g.snapshot_index
                .set(m.snapshot.map(|s| s.index as i64).unwrap_or(0));
        }
        g.applied_index.set(node.applied_index() as i64);
        g.connections_open.set(node.gate().open() as i64);
        g.connections_in_handshake
            .set(node.gate().in_handshake() as i64);
        g.snapshots_installed.set(node.snapshots_installed() as i64);
        let summary = node.state().summary();
        g.queue_depth.set(summary.depth as i64);
        g.queue_bytes.set(summary.bytes as i64);
        g.queue_max_bytes.set(summary.max_bytes as i64);
        g.queue_next_offset.set(summary.next_offset as i64);
    }
}
