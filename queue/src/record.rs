//! One verified report as stored in the queue.

use serde::{Deserialize, Serialize};

/// One verified report as stored in the queue.
///
/// The queue treats the report as opaque bytes; only the dedup key
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
    /// The verified report (`proto::report_bytes()` of the datagram, postcard), without the
    /// envelope the packet-reader checked: the worker decodes it with `proto::decode_report()`
    /// and never the envelope again. Entries queued by earlier packet-readers hold the whole
    /// envelope, which `decode_report()` also reads.
    #[serde(with = "byte_string")]
    pub report: Vec<u8>,
}

impl QueuedPacket {
    /// The key under which duplicates are recognised.
    pub fn dedup_key(&self) -> (u64, u64, u64) {
        (self.sender, self.session, self.seq)
    }
}

/// Encodes a byte vector as one byte string instead of a sequence of numbers: postcard
/// then copies it in one go, which matters at 100k packets/s through several encodings
/// (client, log store, replication, snapshot).
pub mod byte_string {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::Serializer;
    use std::fmt;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // Self-describing formats (JSON) write bytes as an array of numbers.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(65_536));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_compactly_and_round_trips() {
        let p = QueuedPacket {
            sender: 1,
            session: 2,
            seq: 3,
            received_at_us: 4,
            source: "127.0.0.1:9".parse().unwrap(),
            report: vec![0xff; 300],
        };
        let bytes = postcard::to_allocvec(&p).unwrap();
        // One length prefix plus the raw bytes, not 300 separate integers.
        assert!(bytes.len() < 300 + 32, "{} bytes", bytes.len());
        assert_eq!(postcard::from_bytes::<QueuedPacket>(&bytes).unwrap(), p);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<QueuedPacket>(&json).unwrap(), p);
    }
}
