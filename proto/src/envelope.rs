//! The authenticated envelope around every datagram, and the verification pipeline.
//!
//! # Layout (all integers little-endian)
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 2 | magic `b"RW"` |
//! | 2 | 1 | version ([`VERSION`]) |
//! | 3 | 2 | key id |
//! | 5 | 8 | sender host id |
//! | 13 | 8 | session id |
//! | 21 | 8 | sequence number (per datagram, for replay protection) |
//! | 29 | n | body ([`Body`], postcard) |
//! | 29+n | 16 | MAC: keyed BLAKE3 of bytes `0..29+n`, first 16 bytes |
//!
//! A heartbeat is 55 bytes on the wire (57 at most).
//!
//! # Verification order
//!
//! [`Verifier::verify`] checks, in this order, and stops at the first failure: length bounds,
//! magic and version, key id known, MAC, replay window (per sender and session), decode.
//! The replay window is only updated for datagrams whose MAC is valid, and nothing is
//! decoded before the MAC is checked, so forged input costs one hash and nothing else.

use crate::ids::{HostId, KeyId, SessionId};
use crate::keys::KeyRing;
use crate::messages::Body;
use crate::replay::{ReplayError, ReplayGuard};
use std::sync::Arc;

/// Envelope magic number.
pub const MAGIC: [u8; 2] = *b"RW";
/// Envelope format version.
pub const VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 29;
/// Bytes of the MAC after the body.
pub const MAC_LEN: usize = 16;
/// The smallest possible datagram (a one-byte body).
pub const MIN_DATAGRAM: usize = HEADER_LEN + 1 + MAC_LEN;
/// The largest datagram sent or accepted (fits an Ethernet MTU with room for tunnels).
pub const MAX_DATAGRAM: usize = 1400;
/// The largest body that fits in [`MAX_DATAGRAM`].
pub const MAX_BODY: usize = MAX_DATAGRAM - HEADER_LEN - MAC_LEN;

/// The authenticated header fields of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub key_id: KeyId,
    pub sender: HostId,
    pub session: SessionId,
    pub seq: u64,
}

/// A datagram that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub header: Header,
    pub body: Body,
}

/// Why a datagram was refused. Each variant is a distinct reason, so daemons count drops by
/// [`Rejection::reason`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("datagram too short ({len} bytes, minimum {MIN_DATAGRAM})")]
    TooShort { len: usize },
    #[error("datagram too long ({len} bytes, maximum {MAX_DATAGRAM})")]
    TooLong { len: usize },
    #[error("bad magic {found:02x?}")]
    BadMagic { found: [u8; 2] },
    #[error("unsupported envelope version {found} (expected {VERSION})")]
    BadVersion { found: u8 },
    #[error("unknown key id {key_id} from host {sender}")]
    UnknownKey { key_id: KeyId, sender: HostId },
    #[error("bad MAC on datagram from host {sender} (key {key_id})")]
    BadMac { key_id: KeyId, sender: HostId },
    #[error("replayed datagram from host {sender}: {error}")]
    Replay { sender: HostId, error: ReplayError },
    #[error("undecodable body from host {sender}: {error}")]
    Malformed {
        sender: HostId,
        error: postcard::Error,
    },
    #[error("body of host {sender} has {extra} trailing bytes")]
    TrailingBytes { sender: HostId, extra: usize },
}

impl Rejection {
    /// A short stable name for metric labels (`reason="bad_mac"`).
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::TooShort { .. } => "too_short",
            Rejection::TooLong { .. } => "too_long",
            Rejection::BadMagic { .. } => "bad_magic",
            Rejection::BadVersion { .. } => "bad_version",
            Rejection::UnknownKey { .. } => "unknown_key",
            Rejection::BadMac { .. } => "bad_mac",
            Rejection::Replay {
                error: ReplayError::Duplicate { .. },
                ..
            } => "replay_duplicate",
            Rejection::Replay {
                error: ReplayError::TooOld { .. },
                ..
            } => "replay_too_old",
            Rejection::Replay {
                error: ReplayError::StaleSession { .. },
                ..
            } => "replay_stale_session",
            Rejection::Replay {
                error: ReplayError::TooManySenders { .. },
                ..
            } => "replay_table_full",
            Rejection::Malformed { .. } => "malformed",
            Rejection::TrailingBytes { .. } => "trailing_bytes",
        }
    }

    /// Every reason [`Rejection::reason`] can return, for pre-registering counters.
    pub const REASONS: [&'static str; 12] = [
        "too_short",
        "too_long",
        "bad_magic",
        "bad_version",
        "unknown_key",
        "bad_mac",
        "replay_duplicate",
        "replay_too_old",
        "replay_stale_session",
        "replay_table_full",
        "malformed",
        "trailing_bytes",
    ];
}

/// Why a message could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("body of {kind} is {len} bytes, over the {MAX_BODY}-byte limit")]
    TooLarge { kind: &'static str, len: usize },
    #[error("cannot encode {kind}: {error}")]
    Encode {
        kind: &'static str,
        error: postcard::Error,
    },
}

/// The MAC of `authenticated` (header + body) under `key`: keyed BLAKE3, first
/// [`MAC_LEN`] bytes. Public so tests and fuzzers can build datagrams by hand.
pub fn mac(key: &[u8; 32], authenticated: &[u8]) -> [u8; MAC_LEN] {
    let full = blake3::keyed_hash(key, authenticated);
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full.as_bytes()[..MAC_LEN]);
    out
}

/// Compares MACs in time independent of where they differ.
fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(buf)
}

/// Reads the header fields without any check beyond the length (callers check the rest).
fn parse_header(datagram: &[u8]) -> Header {
    Header {
        key_id: KeyId(u16::from_le_bytes([datagram[3], datagram[4]])),
        sender: HostId(read_u64(datagram, 5)),
        session: SessionId(read_u64(datagram, 13)),
        seq: read_u64(datagram, 21),
    }
}

/// Seals outgoing messages of one sender and session with the key ring's primary key.
#[derive(Debug)]
pub struct Sealer {
    keys: Arc<KeyRing>,
    sender: HostId,
    session: SessionId,
    next_seq: u64,
}

impl Sealer {
    /// A sealer for `sender` in `session`; sequence numbers start at 1.
    pub fn new(keys: Arc<KeyRing>, sender: HostId, session: SessionId) -> Sealer {
        Sealer {
            keys,
            sender,
            session,
            next_seq: 1,
        }
    }

    /// The sender host id.
    pub fn sender(&self) -> HostId {
        self.sender
    }

    /// The session id.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Replaces the key ring (key rotation).
    pub fn set_keys(&mut self, keys: Arc<KeyRing>) {
        self.keys = keys;
    }

    /// Seals `body` into `out` (cleared first) with the next sequence number, which is
    /// returned.
    pub fn seal_into(&mut self, body: &Body, out: &mut Vec<u8>) -> Result<u64, SealError> {
        out.clear();
        out.reserve(HEADER_LEN + 64 + MAC_LEN);
        let seq = self.next_seq;
        let (key_id, key) = self.keys.primary();
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&key_id.0.to_le_bytes());
        out.extend_from_slice(&self.sender.0.to_le_bytes());
        out.extend_from_slice(&self.session.0.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        let encoded =
            postcard::to_extend(body, std::mem::take(out)).map_err(|error| SealError::Encode {
                kind: body.kind(),
                error,
            })?;
        *out = encoded;
        let body_len = out.len() - HEADER_LEN;
        if body_len > MAX_BODY {
            out.clear();
            return Err(SealError::TooLarge {
                kind: body.kind(),
                len: body_len,
            });
        }
        let tag = mac(key, out);
        out.extend_from_slice(&tag);
        self.next_seq += 1;
        Ok(seq)
    }

    /// Seals `body` into a new buffer.
    pub fn seal(&mut self, body: &Body) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::new();
        self.seal_into(body, &mut out)?;
        Ok(out)
    }
}

/// Verifies incoming datagrams: authentication, replay protection, decoding.
#[derive(Debug)]
pub struct Verifier {
    keys: Arc<KeyRing>,
    replay: ReplayGuard,
}

impl Verifier {
    /// A verifier accepting every key of `keys`, tracking replay state for at most
    /// `max_senders` senders.
    pub fn new(keys: Arc<KeyRing>, max_senders: usize) -> Verifier {
        Verifier {
            keys,
            replay: ReplayGuard::new(max_senders),
        }
    }

    /// Replaces the key ring (key rotation); replay state is kept.
    pub fn set_keys(&mut self, keys: Arc<KeyRing>) {
        self.keys = keys;
    }

    /// Forgets the replay state of a sender.
    pub fn forget(&mut self, sender: HostId) {
        self.replay.forget(sender);
    }

    /// Runs the whole pipeline on one datagram (order in the module docs).
    pub fn verify(&mut self, datagram: &[u8]) -> Result<Verified, Rejection> {
        let header = authenticate(&self.keys, datagram)?;
        self.replay
            .accept(header.sender, header.session, header.seq)
            .map_err(|error| Rejection::Replay {
                sender: header.sender,
                error,
            })?;
        let body = decode_body(header.sender, datagram)?;
        Ok(Verified { header, body })
    }
}

/// Length bounds, magic and version; returns the (not yet authenticated) header.
fn check_framing(datagram: &[u8]) -> Result<Header, Rejection> {
    let len = datagram.len();
    if len < MIN_DATAGRAM {
        return Err(Rejection::TooShort { len });
    }
    if len > MAX_DATAGRAM {
        return Err(Rejection::TooLong { len });
    }
    if datagram[0..2] != MAGIC {
        return Err(Rejection::BadMagic {
            found: [datagram[0], datagram[1]],
        });
    }
    if datagram[2] != VERSION {
        return Err(Rejection::BadVersion { found: datagram[2] });
    }
    Ok(parse_header(datagram))
}

/// Length bounds, magic, version, key and MAC checks; returns the header. Does not touch
/// replay state.
pub fn authenticate(keys: &KeyRing, datagram: &[u8]) -> Result<Header, Rejection> {
    let header = check_framing(datagram)?;
    let key = keys.get(header.key_id).ok_or(Rejection::UnknownKey {
        key_id: header.key_id,
        sender: header.sender,
    })?;
    let (authenticated, tag) = datagram.split_at(datagram.len() - MAC_LEN);
    if !mac_eq(&mac(key, authenticated), tag) {
        return Err(Rejection::BadMac {
            key_id: header.key_id,
            sender: header.sender,
        });
    }
    Ok(header)
}

fn decode_body(sender: HostId, datagram: &[u8]) -> Result<Body, Rejection> {
    let body_bytes = &datagram[HEADER_LEN..datagram.len() - MAC_LEN];
    let (body, rest) = postcard::take_from_bytes::<Body>(body_bytes)
        .map_err(|error| Rejection::Malformed { sender, error })?;
    if !rest.is_empty() {
        return Err(Rejection::TrailingBytes {
            sender,
            extra: rest.len(),
        });
    }
    Ok(body)
}

/// The postcard bytes of the [`Report`](crate::messages::Report) inside a datagram whose
/// body is `Body::Report`, or `None` for any other datagram. The packet-reader queues these
/// bytes after [`Verifier::verify`] accepted the datagram, so the worker decodes the report
/// with [`decode_report`] and never the envelope a second time. Slicing relies on postcard's
/// enum encoding (the variant index as a varint, then the variant's fields), which a test
/// below checks against a sealed report.
pub fn report_bytes(datagram: &[u8]) -> Option<&[u8]> {
    let end = datagram.len().checked_sub(MAC_LEN)?;
    let body = datagram.get(HEADER_LEN..end)?;
    let (variant, report) = postcard::take_from_bytes::<u32>(body).ok()?;
    (variant == REPORT_VARIANT).then_some(report)
}

/// `Body::Report`'s variant index in postcard (its position in [`Body`]).
const REPORT_VARIANT: u32 = 1;

/// Decodes a report read back from the committed queue: the bytes [`report_bytes`] took
/// from a verified datagram. Trailing bytes are refused as in [`Verifier::verify`].
///
/// Queues written before entries carried the report alone hold whole envelopes; those are
/// told apart by the envelope's [`MAGIC`], which no report starts with (it would be report
/// id 82 with `ReportBody` variant 87, and there are far fewer variants: a test pins it),
/// and decoded as before, so an upgrade needs no drained queue.
pub fn decode_report(bytes: &[u8]) -> Result<crate::messages::Report, StoredReportError> {
    if bytes.starts_with(&MAGIC) {
        return match decode_verified(bytes)
            .map_err(StoredReportError::Envelope)?
            .body
        {
            Body::Report(report) => Ok(report),
            other => Err(StoredReportError::NotReport { kind: other.kind() }),
        };
    }
    let (report, rest) = postcard::take_from_bytes(bytes).map_err(StoredReportError::Malformed)?;
    if rest.is_empty() {
        Ok(report)
    } else {
        Err(StoredReportError::TrailingBytes { extra: rest.len() })
    }
}

/// Why a report read back from the queue does not decode (a version mismatch: every entry
/// was verified before it was queued).
#[derive(Debug, thiserror::Error)]
pub enum StoredReportError {
    #[error("undecodable report: {0}")]
    Malformed(postcard::Error),
    #[error("{extra} trailing bytes after the report")]
    TrailingBytes { extra: usize },
    #[error("stored envelope: {0}")]
    Envelope(Rejection),
    #[error("stored envelope holds a {kind}, not a report")]
    NotReport { kind: &'static str },
}

/// Decodes a datagram that was verified earlier (for example read back from the committed
/// queue), checking its framing but neither its MAC (its key may have been retired since)
/// nor replay state.
pub fn decode_verified(datagram: &[u8]) -> Result<Verified, Rejection> {
    let header = check_framing(datagram)?;
    let body = decode_body(header.sender, datagram)?;
    Ok(Verified { header, body })
}
