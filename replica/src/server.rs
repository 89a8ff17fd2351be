//! The TCP server of a node: accepts peers and queue clients, authenticates them, and
//! answers their requests concurrently.
//!
//! Every accepted connection first passes the node's [`ConnectionGate`]: a slot on the port
//! (the descriptor budget), a place among those of its source address still in the
//! handshake, and a place among all connections in the handshake (when they are all taken
//! the oldest is evicted). A connection turned away is closed at once and counted in
//! `cma_connections_refused{reason}`; running out of descriptors in `accept` is counted
//! and waited out, never fatal.
//!
//! [`ConnectionGate`]: crate::limits::ConnectionGate

use super::node::{Node, ProposeError};
use super::peer::{NodeReply as Reply, NodeRequest as Request, PeerReply, PeerRequest};
use crate::limits::{Admitted, ConnectionSlot, HandshakeSlot};
use daemon::metrics::Reason;
use daemon::warn::WarnEvery;
use queue::rpc::{ReplyFrame, RequestFrame};
use queue::wire;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Pause after a failed `accept` (typically `EMFILE`), so the loop does not spin (the
/// same as the HTTP listeners').
pub use daemon::http::ACCEPT_BACKOFF;

/// Requests of one connection served at once. When they are all in flight the server
/// stops reading that connection until one is answered, so TCP pushes back on a client
/// that sends faster than the cluster commits, instead of the node holding an unbounded
/// number of waiting requests (seen: 2 GB on an overloaded leader). openraft keeps only a
/// few requests in flight per peer, far below this.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 256;

/// Accepts connections; never returns.
pub async fn serve(listener: TcpListener, node: Node) {
    let mut refused_log = WarnEvery::new(Duration::from_secs(10));
    let mut accept_log = WarnEvery::new(Duration::from_secs(10));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let admitted = match node.gate().admit(peer.ip()) {
                    Ok(admitted) => admitted,
                    Err(refusal) => {
                        node.metrics()
                            .connections_refused
                            .get_or_create(&Reason::of(refusal.reason()))
                            .inc();
                        if let Some(suppressed) = refused_log.check(std::time::Instant::now()) {
                            tracing::warn!(
                                %peer,
                                reason = refusal.reason(),
                                suppressed,
                                "connection refused before the handshake (limits in \
                                 docs/security.md)"
                            );
                        }
                        drop(stream);
                        continue;
                    }
                };
                if admitted.evicted_older {
                    node.metrics()
                        .connections_refused
                        .get_or_create(&Reason::of("evicted_oldest_handshake"))
                        .inc();
                }
                let node = node.clone();
                tokio::spawn(async move {
                    let Admitted {
                        slot, handshake, ..
                    } = admitted;
                    if let Err(e) = handle(stream, node.clone(), slot, handshake).await {
                        node.metrics()
                            .connection_errors
                            .get_or_create(&Reason::of(e.reason()))
                            .inc();
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                node.metrics()
                    .connections_refused
                    .get_or_create(&Reason::of("accept_error"))
                    .inc();
                if let Some(suppressed) = accept_log.check(std::time::Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "accept failed; retrying in 100 ms");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn handle(
    stream: TcpStream,
    node: Node,
    // Held until the connection ends: its place in the descriptor budget.
    _slot: ConnectionSlot,
    handshake: HandshakeSlot,
) -> Result<(), wire::WireError> {
    let timeout = node.settings().handshake_timeout;
    let mut handshake = handshake;
    let accepted = tokio::select! {
        accepted = wire::accept(stream, node.secret(), timeout) => accepted,
        // A newer connection took this one's place in the handshake (see ConnectionGate).
        _ = &mut handshake.evicted => return Ok(()),
    };
    drop(handshake);
    let (mut reader, mut writer) = accepted?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_IN_FLIGHT));
    let writer_task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.send(bytes).await.is_err() {
                break;
            }
        }
    });
    let result = loop {
        let bytes = match reader.recv().await {
            Ok(bytes) => bytes,
            Err(wire::WireError::Closed) => break Ok(()),
            Err(e) => break Err(e),
        };
        let frame: RequestFrame<PeerRequest> = match postcard::from_bytes(&bytes) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable request; closing connection");
                break Err(wire::WireError::Auth("undecodable request"));
            }
        };
        let node = node.clone();
        let tx = tx.clone();
        let permit = match in_flight.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                node.metrics().connection_reads_paused.inc();
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break Ok(());
                };
                permit
            }
        };
        let gauge = node.metrics().requests_in_flight.clone();
        gauge.inc();
        // Each request runs on its own task: a client append waiting for commit must not
        // hold up the Raft RPCs sharing the listener.
        tokio::spawn(async move {
            let _permit = permit;
            let _counted = InFlight(gauge);
            let reply = answer(&node, frame.request).await;
            match postcard::to_allocvec(&ReplyFrame {
                id: frame.id,
                reply,
            }) {
                Ok(bytes) => {
                    let _ = tx.send(bytes);
                }
                Err(e) => tracing::error!(error = %e, "reply encoding failed"),
            }
        });
    };
    drop(tx);
    // In-flight replies still hold senders; the writer ends when they are done.
    let _ = writer_task.await;
    result
}

/// One request counted in `cma_node_requests_in_flight`, until its task ends.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn not_leader(e: ProposeError) -> Reply {
    match e {
        ProposeError::NotLeader { leader, .. } => Reply::NotLeader {
            leader: leader.map(|l| l.raft),
        },
        ProposeError::QueueFull {
            held_bytes,
            max_bytes,
        } => Reply::QueueFull {
            held_bytes,
            max_bytes,
        },
        ProposeError::Busy { waited_ms } => Reply::Busy { waited_ms },
        // A leader still applying its log: the client backs off and retries, as for Busy.
        ProposeError::CatchingUp { .. } => Reply::Busy {
            waited_ms: super::node::CATCH_UP_WAIT.as_millis() as u64,
        },
        other => Reply::Error(other.to_string()),
    }
}

async fn answer(node: &Node, request: Request) -> Reply {
    match request {
        Request::Peer(PeerRequest::AppendEntries(rpc)) => {
            let leader = rpc.vote.leader_id().voted_for();
            let commit = rpc.leader_commit.map_or(0, |c| c.index);
            let reply = node.raft().append_entries(rpc).await;
            // Accepted (the leader's vote is current here): a follower in contact with its
            // leader, for `Node::freshness`.
            if let (Some(leader), Ok(r)) = (leader, &reply) {
                if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                    node.note_leader_contact(leader, commit);
                }
            }
            Reply::Peer(PeerReply::AppendEntries(reply))
        }
        Request::Peer(PeerRequest::Vote(rpc)) => {
            Reply::Peer(PeerReply::Vote(node.raft().vote(rpc).await))
        }
        Request::Peer(PeerRequest::InstallSnapshot(rpc)) => Reply::Peer(
            PeerReply::InstallSnapshot(node.raft().install_snapshot(rpc).await),
        ),
        Request::Peer(PeerRequest::LeaseProbe) => match node.lease_view().await {
            Some(view) => Reply::Peer(PeerReply::LeaseProbe(view)),
            None => Reply::Error("raft stopped".to_string()),
        },
        Request::Append(batch) => match node.append(batch).await {
            Ok(result) => Reply::Appended(result),
            Err(e) => not_leader(e),
        },
        Request::Read { from, max } => match node.client_read_barrier().await {
            Ok(()) => Reply::Packets(node.read_local(from, max)),
            Err(e) => not_leader(e),
        },
        Request::CommitOffset { consumer, offset } => {
            match node.commit_offset(&consumer, offset).await {
                Ok(()) => Reply::Done,
                Err(e) => not_leader(e),
            }
        }
    }
}
