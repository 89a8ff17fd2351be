//! Appends a batch to the Raft queue and, only once it is committed, ACKs every report in
//! it. While the queue is unavailable (no leader, no quorum) the append is retried with
//! backoff up to `give_up`; nothing is ACKed in the meantime, so the nanoprobes keep
//! retransmitting and nothing they saw ACKed can be lost.

use crate::batcher::Accepted;
use crate::metrics::{Metrics, Reason};
use cma::queue::{ClientError, QueueClient};
use proto::{Ack, Body, Sealer, SessionId};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Everything a batch needs to be committed and acknowledged.
pub struct Submitter {
    /// The queue client (follows the leader).
    pub client: QueueClient,
    /// Seals ACKs. One sealer per reader: its sequence numbers must be unique in its
    /// session.
    pub sealer: Mutex<Sealer>,
    /// The receive sockets; an ACK leaves from the socket its report arrived on.
    pub sockets: Vec<Arc<UdpSocket>>,
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
        ClientError::Config(_) => "config",
    }
}

/// Commits `items` (opened at `opened`) and ACKs them; gives up after `give_up`.
pub async fn submit(s: &Submitter, items: Vec<Accepted>, opened: Instant) {
    let packets: Vec<_> = items.iter().map(|i| i.packet.clone()).collect();
    let first_try = Instant::now();
    let mut backoff = Duration::from_millis(20);
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
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    };
    s.metrics.batches.inc();
    s.metrics.batch_packets.observe(items.len() as f64);
    s.metrics
        .commit_latency
        .observe(opened.elapsed().as_secs_f64());
    s.metrics.duplicates.inc_by(result.duplicates as u64);
    let mut datagram = Vec::with_capacity(64);
    for item in &items {
        let body = Body::Ack(Ack {
            session: SessionId(item.packet.session),
            id: item.report_id,
        });
        let sealed = match s.sealer.lock() {
            Ok(mut sealer) => sealer.seal_into(&body, &mut datagram).is_ok(),
            Err(_) => false,
        };
        if !sealed {
            tracing::error!("cannot seal ACK");
            continue;
        }
        let Some(socket) = s.sockets.get(item.socket) else {
            continue;
        };
        match socket.send_to(&datagram, item.reply_to).await {
            Ok(_) => {
                s.metrics.acks.inc();
            }
            Err(e) => tracing::debug!(to = %item.reply_to, error = %e, "ACK send failed"),
        }
    }
    s.metrics.pending.dec_by(items.len() as i64);
}
