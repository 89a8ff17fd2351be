//! Appends a batch to the Raft queue and, only once it is committed, ACKs every report in
//! it. While the queue is unavailable (no leader, no quorum) the append is retried with
//! backoff up to `give_up`; nothing is ACKed in the meantime, so the nanoprobes keep
//! retransmitting and nothing they saw ACKed can be lost.
//!
//! ACKs of every batch are sealed and sent by one task ([`send_acks`]) that owns the
//! sealer: envelope sequence numbers then leave in increasing order, which keeps the
//! receivers' replay windows happy even when several batches commit at once.

use crate::accepted::Accepted;
use crate::metrics::{Metrics, Reason};
use proto::{Ack, Body, Sealer, SessionId};
use queue::{ClientError, QueueClient};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// First pause before retrying a failed append; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// Longest pause between two attempts of one append.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Everything a batch needs to be committed and handed over for acknowledgement.
pub struct Submitter {
    /// The queue client (follows the leader).
    pub client: QueueClient,
    /// Committed batches, to the ACK task.
    pub committed: mpsc::Sender<Vec<Accepted>>,
    /// Counters.
    pub metrics: Metrics,
    /// Retry bound of one append.
    pub give_up: Duration,
}

fn error_label(e: &ClientError) -> &'static str {
    match e {
        ClientError::NoLeader => "no_leader",
        ClientError::Timeout => "timeout",
        ClientError::Unreachable(_) => "unreachable",
        ClientError::Rejected(_) => "rejected",
        ClientError::QueueFull { .. } => "queue_full",
        ClientError::Busy { .. } => "busy",
        ClientError::Config(_) => "config",
    }
}

/// Commits `items` (opened at `opened`) and hands them to the ACK task; gives up after
/// `give_up` without ACKing anything.
pub async fn submit(s: &Submitter, items: Vec<Accepted>, opened: Instant) {
    let packets: Vec<_> = items.iter().map(|i| i.packet.clone()).collect();
    let first_try = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let result = loop {
        match s.client.append(packets.clone()).await {
            Ok(result) => break result,
            Err(e) => {
                s.metrics
                    .append_errors
                    .get_or_create(&Reason::of(error_label(&e)))
                    .inc();
                if first_try.elapsed() + backoff > s.give_up {
                    tracing::warn!(error = %e, reports = items.len(), "queue unavailable; batch abandoned, senders will retransmit");
                    s.metrics
                        .dropped
                        .get_or_create(&Reason::of("abandoned"))
                        .inc_by(items.len() as u64);
                    s.metrics.pending.dec_by(items.len() as i64);
                    return;
                }
                tracing::debug!(error = %e, "append failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    s.metrics.batches.inc();
    s.metrics.batch_packets.observe(items.len() as f64);
    s.metrics
        .commit_latency
        .observe(opened.elapsed().as_secs_f64());
    s.metrics.duplicates.inc_by(result.duplicates as u64);
    let now_us = daemon::clock::wall_clock_us();
    for item in &items {
        let waited_us = now_us.saturating_sub(item.packet.received_at_us);
        s.metrics.report_latency.observe(waited_us as f64 / 1e6);
    }
    let count = items.len() as i64;
    if s.committed.send(items).await.is_err() {
        tracing::error!("ACK task gone; committed batch not acknowledged");
    }
    s.metrics.pending.dec_by(count);
}

/// The ACK task: seals `Ack{session, id}` for every report of every committed batch and
/// sends it from the socket the report arrived on to the report's source address. Ends
/// when every [`Submitter`] is gone and the channel is drained.
pub async fn send_acks(
    mut committed: mpsc::Receiver<Vec<Accepted>>,
    mut sealer: Sealer,
    sockets: Vec<Arc<UdpSocket>>,
    metrics: Metrics,
) {
    let mut datagram = Vec::with_capacity(64);
    while let Some(items) = committed.recv().await {
        for item in &items {
            let body = Body::Ack(Ack {
                session: SessionId(item.packet.session),
                id: item.report_id,
            });
            if let Err(e) = sealer.seal_into(&body, &mut datagram) {
                tracing::error!(error = %e, "cannot seal ACK");
                continue;
            }
            let Some(socket) = sockets.get(item.socket) else {
                continue;
            };
            match socket.send_to(&datagram, item.reply_to).await {
                Ok(_) => {
                    metrics.acks.inc();
                }
                Err(e) => {
                    metrics.ack_errors.inc();
                    tracing::debug!(to = %item.reply_to, error = %e, "ACK send failed");
                }
            }
        }
    }
}
