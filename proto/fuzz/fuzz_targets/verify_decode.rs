//! Fuzzes the whole receive path: verify (length, magic, version, key, MAC, replay) and
//! decode, plus decoding of queue-stored datagrams. Any panic is a bug.
//!
//! The input is used twice: as raw bytes (exercises framing and MAC rejection), and as a
//! body re-sealed with a known key so the fuzzer reaches replay and postcard decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::envelope::{HEADER_LEN, MAC_LEN, MAX_BODY};
use proto::{HostId, KeyId, KeyRing, SessionId, Verifier};
use std::sync::Arc;

const KEY: [u8; 32] = [3u8; 32];

fuzz_target!(|data: &[u8]| {
    let Ok(ring) = KeyRing::new(KeyId(1), vec![(KeyId(1), KEY)]) else {
        return;
    };
    let mut verifier = Verifier::new(Arc::new(ring), 4);
    let _ = verifier.verify(data);
    let _ = proto::decode_verified(data);
    if let Some(report) = proto::report_bytes(data) {
        let _ = proto::decode_report(report);
    }

    // Authenticated datagram with the fuzzer's bytes as body: reaches the decoder.
    if data.len() <= MAX_BODY {
        let mut datagram = Vec::with_capacity(HEADER_LEN + data.len() + MAC_LEN);
        datagram.extend_from_slice(b"RW");
        datagram.push(1);
        datagram.extend_from_slice(&1u16.to_le_bytes());
        datagram.extend_from_slice(&HostId(9).0.to_le_bytes());
        datagram.extend_from_slice(&SessionId(1).0.to_le_bytes());
        datagram.extend_from_slice(&1u64.to_le_bytes());
        datagram.extend_from_slice(data);
        let tag = proto::envelope::mac(&KEY, &datagram);
        datagram.extend_from_slice(&tag);
        let first = verifier.verify(&datagram);
        // A second copy must never be accepted.
        if first.is_ok() {
            assert!(verifier.verify(&datagram).is_err());
        }
    }
});
