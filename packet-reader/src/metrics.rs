//! Prometheus metrics of the packet-reader and the `/metrics` listener.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A `reason` label (the one every daemon uses).
pub use daemon::metrics::Reason;

/// Every counter of the daemon.
#[derive(Clone)]
pub struct Metrics {
    /// Datagrams received.
    pub received: Counter,
    /// Datagrams that passed verification.
    pub verified: Counter,
    /// Datagrams refused by the verification pipeline, by reason.
    pub rejected: Family<Reason, Counter>,
    /// Verified datagrams not queued, by reason (`heartbeat`, `not_report`, `overload`,
    /// `abandoned`).
    pub dropped: Family<Reason, Counter>,
    /// Appends committed.
    pub batches: Counter,
    /// Reports per committed append.
    pub batch_packets: Histogram,
    /// Time from a batch's first report to its commit, in seconds.
    pub commit_latency: Histogram,
    /// Time from a report's receipt to its batch's commit, in seconds (includes waiting
    /// for a free append slot, which `commit_latency` does not).
    pub report_latency: Histogram,
    /// ACKs sent.
    pub acks: Counter,
    /// ACKs the socket refused to send.
    pub ack_errors: Counter,
    /// Reports the queue already held (retransmissions), ACKed again.
    pub duplicates: Counter,
    /// Failed append attempts, by error.
    pub append_errors: Family<Reason, Counter>,
    /// Reports waiting for a batch or for their commit.
    pub pending: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            received: Counter::default(),
            verified: Counter::default(),
            rejected: Family::default(),
            dropped: Family::default(),
            batches: Counter::default(),
            batch_packets: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_latency: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            report_latency: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            acks: Counter::default(),
            ack_errors: Counter::default(),
            duplicates: Counter::default(),
            append_errors: Family::default(),
            pending: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers everything under `ringwatch_reader_*`, with every rejection reason
    /// present from the start so dashboards see zeros rather than gaps.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("ringwatch_reader");
        for reason in proto::Rejection::REASONS {
            let _ = self.rejected.get_or_create(&Reason::of(reason));
        }
        for reason in ["heartbeat", "not_report", "overload", "abandoned"] {
            let _ = self.dropped.get_or_create(&Reason::of(reason));
        }
        registry.register("received", "Datagrams received", self.received.clone());
        registry.register("verified", "Datagrams verified", self.verified.clone());
        registry.register(
            "rejected",
            "Datagrams refused by verification, by reason",
            self.rejected.clone(),
        );
        registry.register(
            "dropped",
            "Verified datagrams not queued, by reason",
            self.dropped.clone(),
        );
        registry.register("batches", "Appends committed", self.batches.clone());
        registry.register(
            "batch_packets",
            "Reports per committed append",
            self.batch_packets.clone(),
        );
        registry.register(
            "commit_latency_seconds",
            "Time from a batch's first report to its commit",
            self.commit_latency.clone(),
        );
        registry.register(
            "report_latency_seconds",
            "Time from a report's receipt to its batch's commit",
            self.report_latency.clone(),
        );
        registry.register("acks", "ACKs sent", self.acks.clone());
        registry.register(
            "ack_errors",
            "ACKs the socket refused to send",
            self.ack_errors.clone(),
        );
        registry.register(
            "duplicates",
            "Reports already in the queue (retransmissions), ACKed again",
            self.duplicates.clone(),
        );
        registry.register(
            "append_errors",
            "Failed append attempts, by error",
            self.append_errors.clone(),
        );
        registry.register(
            "pending",
            "Reports waiting for a batch or their commit",
            self.pending.clone(),
        );
        registry
    }
}
