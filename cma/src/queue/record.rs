//! One verified report as stored in the queue.

use serde::{Deserialize, Serialize};

/// One verified report as stored in the queue.
///
/// The queue treats the datagram as opaque bytes; only the dedup key
/// (`sender`, `session`, `seq`) is interpreted by the state machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedPacket {
    /// `proto::HostId.0` of the nanoprobe that sent the report.
    pub sender: u64,
    /// `proto::SessionId.0` of the sending process.
    pub session: u64,
    /// The report id (`proto` `Report.id`): the dedup key is (sender, session, seq).
    pub seq: u64,
    /// Packet-reader wall clock when the datagram arrived, µs since the Unix epoch; the
    /// worker's only time source, so every replica replays with the same clock.
    pub received_at_us: u64,
    /// Datagram source address, where ACKs and commands go.
    pub source: std::net::SocketAddr,
    /// The whole verified envelope; `proto::decode_verified()` decodes it.
    pub datagram: Vec<u8>,
}

impl QueuedPacket {
    /// The key under which duplicates are recognised.
    pub fn dedup_key(&self) -> (u64, u64, u64) {
        (self.sender, self.session, self.seq)
    }
}
