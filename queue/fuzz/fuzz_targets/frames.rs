//! Fuzzes what a TCP peer controls on the queue/Raft port: the pre-authentication framing
//! and hello, then the authenticated framing, tag check and request decoding. Any panic,
//! or a pre-authentication frame longer than the handshake maximum, is a bug.
//!
//! The first input byte splits the rest into the bytes sent before the handshake and
//! those sent after it.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use queue::rpc::{NoPeer, RequestFrame};
use queue::wire::{self, CLIENT_TO_SERVER, HANDSHAKE_MAX_FRAME};
use tokio_util::codec::Decoder;

const SESSION_KEY: [u8; 32] = [5u8; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = (split as usize).min(rest.len());
    let (before, after) = rest.split_at(split);

    // Before the handshake: at most three frames (hello, proof), each bounded.
    let mut buf = BytesMut::from(before);
    let mut codec = wire::handshake_codec();
    for _ in 0..3 {
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => {
                assert!(frame.len() <= HANDSHAKE_MAX_FRAME);
                let _ = wire::parse_hello(&frame);
            }
            Ok(None) | Err(_) => break,
        }
    }

    // After it: tagged frames, checked in order, decoded as the server does.
    let mut buf = BytesMut::from(after);
    let mut codec = wire::codec();
    let mut counter = 0u64;
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        if let Ok(payload) = wire::open_frame(&SESSION_KEY, CLIENT_TO_SERVER, counter, &frame) {
            counter += 1;
            let _ = postcard::from_bytes::<RequestFrame<NoPeer>>(payload);
        }
    }
    // The payload decoder must survive any bytes, tagged or not.
    let _ = postcard::from_bytes::<RequestFrame<NoPeer>>(after);
});
