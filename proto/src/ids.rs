//! Identifiers shared by every crate: hosts, sessions, keys.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a monitored host (a nanoprobe) or a Ringwatch service (a packet-reader or
/// a CMA node) on the wire. Assigned by configuration; unique within a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostId(pub u64);

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one run of a sender process. It is the process start time in microseconds
/// since the Unix epoch, so a receiver can tell a newer run from an older one and refuse
/// replays of packets from a previous run (see `docs/protocol.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub u64);

impl SessionId {
    /// A session id for a process starting now: the current time in microseconds since
    /// the Unix epoch (never zero).
    pub fn from_clock() -> SessionId {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        SessionId(micros.max(1))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one key of a key ring; carried in every envelope so keys can be rotated
/// while both the old and the new key are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub u16);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
