//! The record that flows through the packet-reader's pipeline: [`crate::ingest`] makes
//! one per verified report, [`crate::batcher`] groups them, [`crate::acker`] ACKs them
//! once their batch committed.

use queue::QueuedPacket;
use std::net::SocketAddr;

/// A verified report waiting for its batch, with what is needed to ACK it.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// What goes into the queue.
    pub packet: QueuedPacket,
    /// The report id to acknowledge.
    pub report_id: u64,
    /// Where the ACK goes (the datagram's source).
    pub reply_to: SocketAddr,
    /// Index of the socket that received it (the ACK leaves from the same socket).
    pub socket: usize,
}
