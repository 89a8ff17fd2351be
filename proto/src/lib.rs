//! Ringwatch wire protocol.
//!
//! - [`discovery`]: typed schemas of `Discovery` reports (LLDP/CDP neighbours).
//! - [`messages`]: every message of docs/design.md §3 (heartbeats, reports, commands, acks).
//! - [`envelope`]: the authenticated envelope around every datagram, sealing, and the
//!   verification pipeline (length, magic/version, key, MAC, replay window, decode).
//! - [`keys`]: the key ring and its file format (several keys for rotation).
//! - [`replay`]: the per-sender sliding replay window.
//! - [`secret_file`]: reading secret files, refusing loose permission bits.
//!
//! No I/O beyond reading and writing key files; nothing here panics on any input.

pub mod discovery;
pub mod envelope;
pub mod ids;
pub mod keys;
pub mod messages;
pub mod replay;
pub mod secret_file;

pub use envelope::{
    authenticate, decode_report, decode_verified, report_bytes, Header, Rejection, SealError,
    Sealer, StoredReportError, Verified, Verifier, MAX_DATAGRAM,
};
pub use ids::{HostId, KeyId, SessionId};
pub use keys::{KeyFileError, KeyRing};
pub use messages::*;
pub use replay::{ReplayError, ReplayGuard};
pub use secret_file::{read_secret_file, SecretFileError};
