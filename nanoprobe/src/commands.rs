//! Commands, pure: deduplication ([`CommandMemory`]: the CMA retransmits a command until
//! it is acknowledged, so the same id may arrive several times; each copy is acknowledged
//! but applied only once) and application ([`apply`]: the heartbeat engine takes the
//! heartbeat commands, a `DoProbe` comes back as a [`ProbeOrder`] for the caller to run).

use crate::heartbeat::HeartbeatEngine;
use proto::{CommandBody, ProbeKind, ProbeTarget};
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Remembers the most recent command ids (bounded).
#[derive(Debug)]
pub struct CommandMemory {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl CommandMemory {
    /// Remembers up to `capacity` ids (at least one).
    pub fn new(capacity: usize) -> CommandMemory {
        CommandMemory {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; true if it had not been seen (the command must be applied).
    pub fn first_time(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// Most targets one `DoProbe` runs; further ones are ignored.
pub const MAX_PROBE_TARGETS: usize = 64;

/// A `DoProbe` command, left for the caller to run (the daemon with sockets, the fleet
/// simulator against its world).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOrder {
    /// Echoed in every `ProbeResult`.
    pub probe_id: u64,
    /// The targets, at most [`MAX_PROBE_TARGETS`].
    pub targets: Vec<ProbeTarget>,
    /// How to probe.
    pub kind: ProbeKind,
    /// How long a target may take to answer.
    pub timeout_ms: u32,
}

impl ProbeOrder {
    /// [`ProbeOrder::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.into())
    }
}

/// What applying a command left to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The heartbeat engine took it.
    Done,
    /// `SendExpectHb` or `SetConfig` (named in `command`) with timings that fail
    /// validation: ignored, the engine is unchanged.
    BadTimings {
        /// `SendExpectHb` or `SetConfig`.
        command: &'static str,
        /// Why the timings were refused.
        error: String,
    },
    /// Probes to run.
    Probe(ProbeOrder),
}

/// Applies the body of a command (first copy of its id, see [`CommandMemory`]) to the
/// heartbeat engine at `now`: the one place the daemon and the fleet simulator do it.
pub fn apply(engine: &mut HeartbeatEngine, body: CommandBody, now: Instant) -> Applied {
    match body {
        CommandBody::SendExpectHb { peers, timings } => match timings.validate() {
            Ok(()) => {
                engine.send_expect(&peers, timings, now);
                Applied::Done
            }
            Err(error) => Applied::BadTimings {
                command: "SendExpectHb",
                error,
            },
        },
        CommandBody::StopSendExpectHb { peers } => {
            engine.stop(&peers);
            Applied::Done
        }
        CommandBody::SetConfig(update) => match update.timings.map(|t| (t.validate(), t)) {
            None => Applied::Done,
            Some((Ok(()), t)) => {
                engine.set_timings(t, now);
                Applied::Done
            }
            Some((Err(error), _)) => Applied::BadTimings {
                command: "SetConfig",
                error,
            },
        },
        CommandBody::DoProbe {
            probe_id,
            mut targets,
            kind,
            timeout_ms,
        } => {
            targets.truncate(MAX_PROBE_TARGETS);
            Applied::Probe(ProbeOrder {
                probe_id,
                targets,
                kind,
                timeout_ms,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{ConfigUpdate, HbTimings, HostId, Peer};

    #[test]
    fn applies_each_id_once_within_memory() {
        let mut m = CommandMemory::new(2);
        assert!(m.first_time(1));
        assert!(!m.first_time(1));
        assert!(m.first_time(2));
        assert!(m.first_time(3));
        assert!(!m.first_time(2));
        // 1 fell out of the bounded memory.
        assert!(m.first_time(1));
    }

    #[test]
    fn apply_feeds_the_engine_refuses_bad_timings_and_bounds_probes() {
        let now = Instant::now();
        let mut engine = HeartbeatEngine::new(HbTimings::default(), Duration::from_secs(60));
        let peer = Peer {
            host: HostId(2),
            addr: "192.0.2.2:7500".parse().unwrap(),
        };
        let bad = HbTimings {
            interval_ms: 0,
            ..HbTimings::default()
        };
        let refused = apply(
            &mut engine,
            CommandBody::SendExpectHb {
                peers: vec![peer],
                timings: bad,
            },
            now,
        );
        assert!(matches!(
            refused,
            Applied::BadTimings {
                command: "SendExpectHb",
                ..
            }
        ));
        assert_eq!(engine.peer_count(), 0);
        let body = CommandBody::SendExpectHb {
            peers: vec![peer],
            timings: HbTimings::default(),
        };
        assert_eq!(apply(&mut engine, body, now), Applied::Done);
        assert_eq!(engine.peer_count(), 1);
        let set = CommandBody::SetConfig(ConfigUpdate { timings: Some(bad) });
        assert!(matches!(
            apply(&mut engine, set, now),
            Applied::BadTimings {
                command: "SetConfig",
                ..
            }
        ));
        assert_eq!(engine.default_timings(), HbTimings::default());
        let stop = CommandBody::StopSendExpectHb {
            peers: vec![HostId(2)],
        };
        assert_eq!(apply(&mut engine, stop, now), Applied::Done);
        assert_eq!(engine.peer_count(), 0);
        let target = ProbeTarget {
            host: None,
            addr: "192.0.2.9".parse().unwrap(),
        };
        let probe = CommandBody::DoProbe {
            probe_id: 7,
            targets: vec![target; MAX_PROBE_TARGETS + 5],
            kind: ProbeKind::IcmpEcho,
            timeout_ms: 1500,
        };
        let Applied::Probe(order) = apply(&mut engine, probe, now) else {
            panic!("a probe order");
        };
        assert_eq!(order.targets.len(), MAX_PROBE_TARGETS);
        assert_eq!(
            (order.probe_id, order.timeout()),
            (7, Duration::from_millis(1500))
        );
    }
}
