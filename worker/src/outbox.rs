//! Reliable delivery of commands to nanoprobes: retransmit with bounded exponential backoff
//! until the nanoprobe acknowledges the command id, or give up after a deadline.
//!
//! Pure: the caller supplies the time and carries out the sends. Commands enter the outbox
//! only once the Raft entry that created them has committed, so a command is never sent
//! for a decision that could still be lost; after a leader change the new leader re-enters
//! every unacknowledged command, and nanoprobes ignore ids they already applied.

use proto::{Command, HostId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

/// Retransmission settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Wait before the first retransmission (doubled after each one).
    #[serde(with = "millis")]
    pub initial_backoff: Duration,
    /// Longest wait between two retransmissions.
    #[serde(with = "millis")]
    pub max_backoff: Duration,
    /// Give up on a command not acknowledged after this long (the host is probably gone;
    /// the ring planner and the fsm deal with that).
    #[serde(with = "millis")]
    pub give_up_after: Duration,
    /// Most commands waiting for an ACK; beyond it new commands are refused and counted.
    pub max_pending: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            give_up_after: Duration::from_secs(120),
            max_pending: 100_000,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A command to deliver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    pub to: HostId,
    pub addr: SocketAddr,
    pub command: Command,
}

#[derive(Debug)]
struct Pending {
    outbound: Outbound,
    first_sent: Duration,
    backoff: Duration,
    attempts: u32,
}

/// What happened to a command that left the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The nanoprobe acknowledged it.
    Acked { id: u64, attempts: u32 },
    /// No ACK before `give_up_after`.
    GaveUp { id: u64, to: HostId, attempts: u32 },
}

/// Why a command was not accepted into the outbox.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox full ({0} commands pending)")]
    Full(usize),
}

/// Commands waiting for their ACK, by id, with their next send time.
#[derive(Debug)]
pub struct Outbox {
    config: OutboxConfig,
    pending: HashMap<u64, Pending>,
    /// (next send time, id) → (): the retransmission schedule.
    schedule: BTreeMap<(Duration, u64), ()>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new(config: OutboxConfig) -> Outbox {
        Outbox {
            config,
            pending: HashMap::new(),
            schedule: BTreeMap::new(),
        }
    }

    /// Adds a command to send now (`now` is any monotonic time base). A command id already
    /// pending is left as it is.
    pub fn push(&mut self, outbound: Outbound, now: Duration) -> Result<(), OutboxError> {
        let id = outbound.command.id;
        if self.pending.contains_key(&id) {
            return Ok(());
        }
        if self.pending.len() >= self.config.max_pending {
            return Err(OutboxError::Full(self.pending.len()));
        }
        self.pending.insert(
            id,
            Pending {
                outbound,
                first_sent: now,
                backoff: self.config.initial_backoff,
                attempts: 0,
            },
        );
        self.schedule.insert((now, id), ());
        Ok(())
    }

    /// Records an ACK; returns what was settled (None for an unknown or repeated ACK).
    pub fn ack(&mut self, id: u64) -> Option<Settled> {
        // Its schedule entry stays and is skipped by `due`: cheaper than searching for it.
        let pending = self.pending.remove(&id)?;
        Some(Settled::Acked {
            id,
            attempts: pending.attempts,
        })
    }

    /// The commands to (re)send now, and those given up. Each returned command is
    /// rescheduled with doubled backoff.
    pub fn due(&mut self, now: Duration) -> (Vec<Outbound>, Vec<Settled>) {
        let mut send = Vec::new();
        let mut gave_up = Vec::new();
        while let Some((&(at, id), _)) = self.schedule.iter().next() {
            if at > now {
                break;
            }
            self.schedule.remove(&(at, id));
            let Some(pending) = self.pending.get_mut(&id) else {
                continue;
            };
            if now.saturating_sub(pending.first_sent) >= self.config.give_up_after {
                let attempts = pending.attempts;
                let to = pending.outbound.to;
                self.pending.remove(&id);
                gave_up.push(Settled::GaveUp { id, to, attempts });
                continue;
            }
            pending.attempts += 1;
            send.push(pending.outbound.clone());
            let next = now + pending.backoff;
            pending.backoff = (pending.backoff * 2).min(self.config.max_backoff);
            self.schedule.insert((next, id), ());
        }
        (send, gave_up)
    }

    /// When `due` next has something to do.
    pub fn next_due(&self) -> Option<Duration> {
        self.schedule.keys().next().map(|(at, _)| *at)
    }

    /// Commands waiting for an ACK.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing waits for an ACK.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{CommandBody, ConfigUpdate};

    fn cmd(id: u64, to: u64) -> Outbound {
        Outbound {
            to: HostId(to),
            addr: "127.0.0.1:7000".parse().unwrap(),
            command: Command {
                id,
                body: CommandBody::SetConfig(ConfigUpdate::default()),
            },
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn retransmits_with_backoff_until_acked() {
        let mut outbox = Outbox::new(OutboxConfig {
            initial_backoff: ms(100),
            max_backoff: ms(400),
            give_up_after: ms(10_000),
            max_pending: 10,
        });
        outbox.push(cmd(1, 5), ms(0)).unwrap();
        let sends_at = |outbox: &mut Outbox, t| outbox.due(ms(t)).0.len();
        assert_eq!(sends_at(&mut outbox, 0), 1);
        assert_eq!(sends_at(&mut outbox, 50), 0);
        assert_eq!(sends_at(&mut outbox, 100), 1); // +100
        assert_eq!(sends_at(&mut outbox, 250), 0);
        assert_eq!(sends_at(&mut outbox, 300), 1); // +200
        assert_eq!(sends_at(&mut outbox, 700), 1); // +400
        assert_eq!(sends_at(&mut outbox, 1100), 1); // capped at +400
        assert_eq!(outbox.ack(1), Some(Settled::Acked { id: 1, attempts: 5 }));
        assert_eq!(outbox.ack(1), None);
        assert_eq!(sends_at(&mut outbox, 5000), 0);
        assert!(outbox.is_empty());
    }

    #[test]
    fn gives_up_and_bounds_pending() {
        let mut outbox = Outbox::new(OutboxConfig {
            initial_backoff: ms(100),
            max_backoff: ms(100),
            give_up_after: ms(1000),
            max_pending: 2,
        });
        outbox.push(cmd(1, 5), ms(0)).unwrap();
        outbox.push(cmd(1, 5), ms(0)).unwrap(); // same id: no-op
        outbox.push(cmd(2, 6), ms(0)).unwrap();
        assert_eq!(outbox.push(cmd(3, 7), ms(0)), Err(OutboxError::Full(2)));
        outbox.ack(2);
        let mut gave_up = Vec::new();
        for t in (0..=1200).step_by(100) {
            gave_up.extend(outbox.due(ms(t)).1);
        }
        assert_eq!(
            gave_up,
            vec![Settled::GaveUp {
                id: 1,
                to: HostId(5),
                attempts: 10
            }]
        );
        assert!(outbox.is_empty());
    }
}
