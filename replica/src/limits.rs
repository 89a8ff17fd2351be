//! What an unauthenticated peer can make a node spend: the descriptor budget derived from
//! `RLIMIT_NOFILE`, and the admission gate of the Raft/queue port (a cap on connections, on
//! connections still in the handshake, and on those per source address).
//!
//! The budget keeps client connections well below the process's descriptor limit: the
//! first `fd_reserve` descriptors are never handed to a client, so the Raft log, snapshots
//! and outgoing peer connections never fail with `EMFILE`. Limits and defaults are listed
//! in docs/security.md.

use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `[limits]` of the node configuration. Every field has a default; see docs/security.md.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Descriptors never given to client connections: storage (log segments, sled, snapshots),
    /// outgoing peer connections, listeners, the runtime (default 256).
    pub fd_reserve: u64,
    /// Most connections on the Raft/queue port, authenticated or not (default 0: every
    /// descriptor the budget leaves after the reserve and the admin connections).
    pub max_queue_connections: u64,
    /// Most connections on the Raft/queue port still in the handshake (default 512).
    pub max_unauthenticated: usize,
    /// Most connections in the handshake from one source address (default 32).
    pub max_unauthenticated_per_ip: usize,
    /// Time a connection has to finish the handshake (default 5000 ms).
    pub handshake_timeout_ms: u64,
    /// Most open admin API connections (default 128).
    pub admin_max_connections: usize,
    /// Most admin requests handled at once; more are answered 503 (default 32).
    pub admin_max_concurrent_requests: usize,
    /// Time a client has to send a request's headers, also while a kept-alive connection
    /// is idle (default 5000 ms).
    pub admin_header_read_timeout_ms: u64,
    /// Time a request may take, body included; `add-learner` waits for the learner to
    /// catch up, hence the long default (60000 ms). Answered 408 when exceeded.
    pub admin_request_timeout_ms: u64,
    /// Largest admin request body; larger ones are answered 413 (default 65536 bytes).
    pub admin_max_body_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            fd_reserve: 256,
            max_queue_connections: 0,
            max_unauthenticated: 512,
            max_unauthenticated_per_ip: 32,
            handshake_timeout_ms: 5000,
            admin_max_connections: 128,
            admin_max_concurrent_requests: 32,
            admin_header_read_timeout_ms: 5000,
            admin_request_timeout_ms: 60_000,
            admin_max_body_bytes: 64 * 1024,
        }
    }
}

/// Fewest descriptors left for clients after the reserve; below this the node refuses to
/// start (the descriptor limit is too low to be useful).
pub const MIN_CLIENT_DESCRIPTORS: u64 = 64;

/// The connection counts a node runs with, derived from the descriptor limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The process's (soft) descriptor limit the budget was computed from.
    pub nofile: u64,
    /// Descriptors kept for storage, peers and the runtime.
    pub reserve: u64,
    /// Most connections on the Raft/queue port.
    pub queue_connections: usize,
    /// Most connections on it still in the handshake.
    pub unauthenticated: usize,
    /// Most connections in the handshake per source address.
    pub unauthenticated_per_ip: usize,
    /// Most admin API connections.
    pub admin_connections: usize,
}

impl LimitsConfig {
    /// Checks values that can never work.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_unauthenticated == 0
            || self.max_unauthenticated_per_ip == 0
            || self.admin_max_connections == 0
            || self.admin_max_concurrent_requests == 0
            || self.admin_max_body_bytes == 0
        {
            return Err("limits: max_unauthenticated, max_unauthenticated_per_ip, \
                 admin_max_connections, admin_max_concurrent_requests and \
                 admin_max_body_bytes must be > 0"
                .into());
        }
        if self.handshake_timeout_ms == 0
            || self.admin_header_read_timeout_ms == 0
            || self.admin_request_timeout_ms == 0
        {
            return Err("limits: timeouts must be > 0".into());
        }
        Ok(())
    }

    /// Splits the descriptors of a process whose limit is `nofile`: `fd_reserve` for
    /// storage and peers, then admin connections (at most an eighth of the rest), then the
    /// Raft/queue port. A configured maximum larger than what is left is lowered to fit.
    pub fn budget(&self, nofile: u64) -> Result<DescriptorBudget, String> {
        let usable = nofile.saturating_sub(self.fd_reserve);
        if usable < MIN_CLIENT_DESCRIPTORS {
            return Err(format!(
                "the descriptor limit (RLIMIT_NOFILE {nofile}) leaves {usable} descriptors \
                 after limits.fd_reserve = {}; at least {MIN_CLIENT_DESCRIPTORS} are needed \
                 (raise LimitNOFILE, see docs/security.md)",
                self.fd_reserve
            ));
        }
        let admin = (self.admin_max_connections as u64).min(usable / 8).max(1);
        let left = usable - admin;
        let queue = if self.max_queue_connections == 0 {
            left
        } else {
            self.max_queue_connections.min(left)
        };
        let queue = usize::try_from(queue).unwrap_or(usize::MAX);
        // At most half of the queue connections may be unauthenticated, so peers and
        // clients holding the secret always find room.
        let unauthenticated = self.max_unauthenticated.min(queue / 2).max(1);
        Ok(DescriptorBudget {
            nofile,
            reserve: self.fd_reserve,
            queue_connections: queue,
            unauthenticated,
            unauthenticated_per_ip: self.max_unauthenticated_per_ip.min(unauthenticated),
            admin_connections: admin as usize,
        })
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (systemd's `LimitNOFILE` sets both)
/// and returns `(soft, hard)` as the process then runs with.
#[cfg(unix)]
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::warn!(error = %e, soft, hard, "cannot raise the soft descriptor limit");
            return Ok((soft, hard));
        }
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    Ok((soft, hard))
}

/// Why a connection was turned away before its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection slot of the port is taken.
    ConnectionLimit,
    /// Too many connections from this source address are in the handshake.
    PerSourceLimit,
}

impl Refusal {
    /// Label for the refusal counter.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::PerSourceLimit => "per_source_limit",
        }
    }
}

/// The connections in the handshake, oldest first.
#[derive(Default)]
struct Pending {
    next_id: u64,
    /// id -> (source, the sender whose drop evicts the connection).
    by_age: std::collections::BTreeMap<u64, (IpAddr, tokio::sync::oneshot::Sender<()>)>,
    per_ip: HashMap<IpAddr, usize>,
}

struct GateInner {
    total: Arc<Semaphore>,
    total_max: usize,
    unauthenticated_max: usize,
    per_ip_max: usize,
    pending: Mutex<Pending>,
}

/// Admission control of the Raft/queue port. Cheap to clone.
///
/// When every place in the handshake is taken, a new connection evicts the *oldest* one
/// still in the handshake instead of being refused: a genuine peer finishes its handshake
/// within a round trip, so an attacker holding idle or slow connections cannot keep it
/// out, only make its own connections shorter-lived.
#[derive(Clone)]
pub struct ConnectionGate {
    inner: Arc<GateInner>,
}

/// A connection's slot on the port, held for its whole life.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
}

/// A connection's place among those in the handshake; dropped when the handshake ends
/// (either way).
pub struct HandshakeSlot {
    gate: Arc<GateInner>,
    id: u64,
    ip: IpAddr,
    /// Resolves when a newer connection evicted this one.
    pub evicted: tokio::sync::oneshot::Receiver<()>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.gate.pending.lock() {
            pending.by_age.remove(&self.id);
            if let Some(n) = pending.per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    pending.per_ip.remove(&self.ip);
                }
            }
        }
    }
}

/// What admitting a connection did.
pub struct Admitted {
    /// The connection's slot on the port.
    pub slot: ConnectionSlot,
    /// Its place in the handshake.
    pub handshake: HandshakeSlot,
    /// True when an older connection in the handshake was evicted to make room.
    pub evicted_older: bool,
}

impl ConnectionGate {
    /// A gate with the budget's limits.
    pub fn new(budget: &DescriptorBudget) -> ConnectionGate {
        ConnectionGate {
            inner: Arc::new(GateInner {
                total: Arc::new(Semaphore::new(budget.queue_connections)),
                total_max: budget.queue_connections,
                unauthenticated_max: budget.unauthenticated,
                per_ip_max: budget.unauthenticated_per_ip,
                pending: Mutex::new(Pending::default()),
            }),
        }
    }

    /// Admits a new connection from `ip`, or says why not. Never waits.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Refusal> {
        let total = self
            .inner
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::ConnectionLimit)?;
        let mut pending = self
            .inner
            .pending
            .lock()
            .map_err(|_| Refusal::ConnectionLimit)?;
        let from_ip = pending.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.inner.per_ip_max {
            return Err(Refusal::PerSourceLimit);
        }
        let mut evicted_older = false;
        if pending.by_age.len() >= self.inner.unauthenticated_max {
            // Dropping the sender wakes the oldest connection's task, which closes it;
            // its slot then frees its per-source count.
            pending.by_age.pop_first();
            evicted_older = true;
        }
        let id = pending.next_id;
        pending.next_id += 1;
        let (tx, rx) = tokio::sync::oneshot::channel();
        pending.by_age.insert(id, (ip, tx));
        *pending.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Admitted {
            slot: ConnectionSlot { _permit: total },
            handshake: HandshakeSlot {
                gate: self.inner.clone(),
                id,
                ip,
                evicted: rx,
            },
            evicted_older,
        })
    }

    /// Connections currently open on the port.
    pub fn open(&self) -> usize {
        self.inner.total_max - self.inner.total.available_permits()
    }

    /// Connections currently in the handshake.
    pub fn in_handshake(&self) -> usize {
        self.inner
            .pending
            .lock()
            .map(|p| p.by_age.len())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_keeps_the_reserve_and_caps_the_handshakes() {
        let limits = LimitsConfig::default();
        let b = limits.budget(65536).unwrap();
        assert_eq!(b.admin_connections, 128);
        assert_eq!(
            b.queue_connections as u64 + b.admin_connections as u64 + b.reserve,
            65536
        );
        assert_eq!(b.unauthenticated, 512);
        let small = limits.budget(1024).unwrap();
        assert_eq!(small.admin_connections, 96);
        assert_eq!(small.queue_connections, 1024 - 256 - 96);
        assert!(small.unauthenticated <= small.queue_connections / 2);
        assert!(limits
            .budget(300)
            .unwrap_err()
            .contains("RLIMIT_NOFILE 300"));
        let capped = LimitsConfig {
            max_queue_connections: 1_000_000,
            ..LimitsConfig::default()
        };
        assert_eq!(
            capped.budget(2048).unwrap().queue_connections,
            2048 - 256 - 128
        );
    }

    #[test]
    fn gate_refuses_by_reason_evicts_the_oldest_handshake_and_frees_slots() {
        let budget = DescriptorBudget {
            nofile: 1024,
            reserve: 256,
            queue_connections: 5,
            unauthenticated: 3,
            unauthenticated_per_ip: 2,
            admin_connections: 1,
        };
        let gate = ConnectionGate::new(&budget);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let c: IpAddr = "127.0.0.3".parse().unwrap();
        let mut first = gate.admit(a).unwrap();
        let second = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(Refusal::PerSourceLimit));
        let mut third = gate.admit(b).unwrap();
        assert!(!third.evicted_older);
        assert_eq!(gate.in_handshake(), 3);
        // Full: the next one evicts the oldest (first), whose task sees `evicted`.
        let fourth = gate.admit(c).unwrap();
        assert!(fourth.evicted_older);
        assert_eq!(
            first.handshake.evicted.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(
            third.handshake.evicted.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        );
        assert_eq!(gate.in_handshake(), 3);
        drop(first);
        // Source a has one connection left in the handshake, so it may open another.
        drop(second.handshake);
        drop(third.handshake);
        let fifth = gate.admit(a).unwrap();
        assert_eq!(gate.open(), 4);
        let _sixth = gate.admit(b).unwrap();
        assert_eq!(gate.admit(c).err(), Some(Refusal::ConnectionLimit));
        drop(fifth);
        assert!(gate.admit(c).is_ok());
        drop(fourth);
    }
}
