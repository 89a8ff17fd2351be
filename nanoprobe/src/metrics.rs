//! Counters for everything sent, dropped or retried, and the optional Prometheus
//! `/metrics` listener (off unless `metrics_listen` is configured).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use daemon::metrics::{Kind, Reason};

/// The nanoprobe's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Datagrams refused by the verifier, by `Rejection::reason`, and `rate_limited`.
    pub rejected: Family<Reason, Counter>,
    /// The `rate_limited` series of `rejected`, held so that counting a flood's datagram
    /// is one atomic add, not a family lookup.
    pub rate_limited: Counter,
    /// Datagrams the kernel dropped on the UDP socket because its receive buffer was full
    /// (`SO_RXQ_OVFL`): never seen by the daemon, genuine ones included.
    pub receive_overflows: Counter,
    /// Reports dropped from the full outbound queue, by report kind.
    pub reports_dropped: Family<Kind, Counter>,
    /// Report sends, first copies and retransmissions, by report kind.
    pub reports_sent: Family<Kind, Counter>,
    /// Report retransmissions, by report kind.
    pub reports_retried: Family<Kind, Counter>,
    /// Commands received, by command kind (duplicates included).
    pub commands: Family<Kind, Counter>,
    /// Duplicate command copies (acknowledged, not applied again).
    pub command_duplicates: Counter,
    /// Heartbeats sent.
    pub heartbeats_sent: Counter,
    /// Authenticated heartbeats received.
    pub heartbeats_received: Counter,
    /// ICMP port-unreachable answers to datagrams sent to peers (a peer's nanoprobe not
    /// running while its host is up).
    pub heartbeats_refused: Counter,
    /// Send errors on the UDP socket.
    pub send_errors: Counter,
    /// Peers silent past deadtime that answered during the last-chance confirmation, so
    /// no `HbDead` was reported.
    pub dead_averted: Counter,
    /// Echo requests sent to confirm silent peers.
    pub confirm_echoes_sent: Counter,
    /// LLDP/CDP frames by outcome: `accepted`, a parse refusal
    /// ([`crate::lldp::FrameError::reason`]), `table_full` (a new neighbour beyond the
    /// table's bound) or `queue_full` (the daemon had no room for it).
    pub lldp_frames: Family<Reason, Counter>,
    /// Neighbours in the LLDP/CDP table.
    pub lldp_neighbours: Gauge,
    /// 1 while the LLDP/CDP capture socket runs.
    pub lldp_capture_up: Gauge,
    /// Reports waiting for an ack.
    pub reports_pending: Gauge,
    /// Peers on the send/expect lists.
    pub peers: Gauge,
    /// Refusals of the `/metrics` listener.
    pub listener: daemon::metrics::ListenerStats,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("nanoprobe");
        let m = Metrics {
            registry: Registry::default(),
            rejected: Family::default(),
            rate_limited: Counter::default(),
            receive_overflows: Counter::default(),
            reports_dropped: Family::default(),
            reports_sent: Family::default(),
            reports_retried: Family::default(),
            commands: Family::default(),
            command_duplicates: Counter::default(),
            heartbeats_sent: Counter::default(),
            heartbeats_received: Counter::default(),
            heartbeats_refused: Counter::default(),
            send_errors: Counter::default(),
            dead_averted: Counter::default(),
            confirm_echoes_sent: Counter::default(),
            reports_pending: Gauge::default(),
            lldp_frames: Family::default(),
            lldp_neighbours: Gauge::default(),
            lldp_capture_up: Gauge::default(),
            listener: daemon::metrics::ListenerStats::default(),
            peers: Gauge::default(),
        };
        registry.register(
            "rejected",
            "Datagrams refused, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "reports_dropped",
            "Reports dropped from the full outbound queue, by kind",
            m.reports_dropped.clone(),
        );
        registry.register(
            "reports_sent",
            "Report sends, by kind",
            m.reports_sent.clone(),
        );
        registry.register(
            "reports_retried",
            "Report retransmissions, by kind",
            m.reports_retried.clone(),
        );
        registry.register("commands", "Commands received, by kind", m.commands.clone());
        registry.register(
            "command_duplicates",
            "Duplicate command copies ignored",
            m.command_duplicates.clone(),
        );
        registry.register(
            "heartbeats_sent",
            "Heartbeats sent",
            m.heartbeats_sent.clone(),
        );
        registry.register(
            "heartbeats_received",
            "Authenticated heartbeats received",
            m.heartbeats_received.clone(),
        );
        registry.register(
            "heartbeats_refused",
            "ICMP port-unreachable answers from peers (host up, nanoprobe not running)",
            m.heartbeats_refused.clone(),
        );
        registry.register("send_errors", "UDP send errors", m.send_errors.clone());
        registry.register(
            "dead_averted",
            "Silent peers that answered during the last-chance confirmation (no HbDead)",
            m.dead_averted.clone(),
        );
        registry.register(
            "confirm_echoes_sent",
            "Echo requests sent to confirm silent peers",
            m.confirm_echoes_sent.clone(),
        );
        registry.register(
            "reports_pending",
            "Reports waiting for an ack",
            m.reports_pending.clone(),
        );
        registry.register("peers", "Peers on the heartbeat lists", m.peers.clone());
        registry.register(
            "lldp_frames",
            "LLDP/CDP frames, by outcome (accepted or why dropped)",
            m.lldp_frames.clone(),
        );
        registry.register(
            "lldp_neighbours",
            "Neighbours in the LLDP/CDP table",
            m.lldp_neighbours.clone(),
        );
        registry.register(
            "lldp_capture_up",
            "1 while the LLDP/CDP capture socket runs",
            m.lldp_capture_up.clone(),
        );
        for name in crate::lldp::FrameError::REASONS.into_iter().chain([
            "accepted",
            "table_full",
            "queue_full",
        ]) {
            let _ = m.lldp_frames.get_or_create(&Reason::of(name));
        }
        let rate_limited = m
            .rejected
            .get_or_create(&Reason::of("rate_limited"))
            .clone();
        registry.register(
            "receive_overflows",
            "Datagrams the kernel dropped on the UDP socket: receive buffer full",
            m.receive_overflows.clone(),
        );
        m.listener.register(&mut registry);
        for reason in proto::Rejection::REASONS {
            let _ = m.rejected.get_or_create(&Reason::of(reason));
        }
        Metrics {
            registry,
            rate_limited,
            ..m
        }
    }

    /// Counts one under `name` in `family` (a [`Reason`] or [`Kind`] family).
    pub fn inc<L>(family: &Family<L, Counter>, name: &'static str)
    where
        L: From<&'static str> + Clone + std::hash::Hash + Eq,
    {
        family.get_or_create(&L::from(name)).inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_reason() {
        let m = Metrics::new();
        Metrics::inc(&m.rejected, "bad_mac");
        m.heartbeats_sent.inc();
        m.dead_averted.inc();
        let text = m.render();
        assert!(
            text.contains("nanoprobe_rejected_total{reason=\"bad_mac\"} 1"),
            "{text}"
        );
        assert!(text.contains("nanoprobe_heartbeats_sent_total 1"), "{text}");
        assert!(text.contains("nanoprobe_dead_averted_total 1"), "{text}");
    }
}
