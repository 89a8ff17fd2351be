//! Replay protection: a sliding window of envelope sequence numbers per sender and session.
//!
//! Each sender seals every datagram with a new, increasing sequence number. A receiver keeps,
//! per sender, the newest session seen and a window of the last [`WINDOW`] sequence numbers:
//! datagrams may arrive out of order within the window, but a sequence number is accepted at
//! most once, and anything older than the window, or from an older session, is refused.

use crate::ids::{HostId, SessionId};
use std::collections::HashMap;

/// How many sequence numbers behind the newest one are still accepted (reordering tolerance).
pub const WINDOW: u64 = 128;

/// Default cap on the number of senders tracked by one [`ReplayGuard`].
pub const DEFAULT_MAX_SENDERS: usize = 200_000;

/// Why the replay check refused a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// This sequence number was already accepted.
    #[error("duplicate sequence number {seq}")]
    Duplicate { seq: u64 },
    /// The sequence number is older than the window.
    #[error("sequence number {seq} is older than the window (newest {newest})")]
    TooOld { seq: u64, newest: u64 },
    /// The session is older than the newest session seen from this sender.
    #[error("session {session} is older than the current session {current}")]
    StaleSession {
        session: SessionId,
        current: SessionId,
    },
    /// The table of senders is full and this sender is new.
    #[error("replay table full ({max} senders)")]
    TooManySenders { max: usize },
}

/// The window of one (sender, session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Newest accepted sequence number.
    newest: u64,
    /// Bit `i` set: `newest - i` was accepted.
    seen: u128,
}

impl ReplayWindow {
    /// A window whose first accepted sequence number is `seq`.
    pub fn starting_at(seq: u64) -> ReplayWindow {
        ReplayWindow {
            newest: seq,
            seen: 1,
        }
    }

    /// Checks `seq` without recording it.
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if seq > self.newest {
            return Ok(());
        }
        let behind = self.newest - seq;
        if behind >= WINDOW {
            return Err(ReplayError::TooOld {
                seq,
                newest: self.newest,
            });
        }
        if self.seen & (1u128 << behind) != 0 {
            return Err(ReplayError::Duplicate { seq });
        }
        Ok(())
    }

    /// Checks `seq` and records it if accepted.
    pub fn accept(&mut self, seq: u64) -> Result<(), ReplayError> {
        self.check(seq)?;
        if seq > self.newest {
            let shift = seq - self.newest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.newest = seq;
        } else {
            self.seen |= 1u128 << (self.newest - seq);
        }
        Ok(())
    }
}

/// Replay state for every sender a receiver hears from, bounded in size.
#[derive(Debug)]
pub struct ReplayGuard {
    senders: HashMap<HostId, (SessionId, ReplayWindow)>,
    max_senders: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(DEFAULT_MAX_SENDERS)
    }
}

impl ReplayGuard {
    /// A guard tracking at most `max_senders` senders.
    pub fn new(max_senders: usize) -> ReplayGuard {
        ReplayGuard {
            senders: HashMap::new(),
            max_senders,
        }
    }

    /// Checks (sender, session, seq) and records it if accepted. Call only for datagrams
    /// whose MAC was verified, or forged datagrams could advance the window.
    pub fn accept(
        &mut self,
        sender: HostId,
        session: SessionId,
        seq: u64,
    ) -> Result<(), ReplayError> {
        let full = self.senders.len() >= self.max_senders;
        match self.senders.get_mut(&sender) {
            Some((current, window)) => {
                if session < *current {
                    return Err(ReplayError::StaleSession {
                        session,
                        current: *current,
                    });
                }
                if session > *current {
                    *current = session;
                    *window = ReplayWindow::starting_at(seq);
                    return Ok(());
                }
                window.accept(seq)
            }
            None if full => Err(ReplayError::TooManySenders {
                max: self.max_senders,
            }),
            None => {
                self.senders
                    .insert(sender, (session, ReplayWindow::starting_at(seq)));
                Ok(())
            }
        }
    }

    /// Forgets a sender (for example after it left the cluster).
    pub fn forget(&mut self, sender: HostId) {
        self.senders.remove(&sender);
    }

    /// Number of senders tracked.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// True if no sender is tracked.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_reordering_within_window_once() {
        let mut w = ReplayWindow::starting_at(10);
        assert_eq!(w.accept(12), Ok(()));
        assert_eq!(w.accept(11), Ok(()));
        assert_eq!(w.accept(11), Err(ReplayError::Duplicate { seq: 11 }));
        assert_eq!(w.accept(10), Err(ReplayError::Duplicate { seq: 10 }));
        assert_eq!(w.accept(12 + WINDOW), Ok(()));
        assert_eq!(
            w.accept(12),
            Err(ReplayError::TooOld {
                seq: 12,
                newest: 12 + WINDOW
            })
        );
        assert_eq!(w.accept(13), Ok(()));
    }

    #[test]
    fn newer_session_resets_older_is_refused() {
        let mut g = ReplayGuard::new(10);
        let h = HostId(1);
        assert!(g.accept(h, SessionId(5), 100).is_ok());
        assert!(g.accept(h, SessionId(6), 1).is_ok());
        assert!(matches!(
            g.accept(h, SessionId(5), 101),
            Err(ReplayError::StaleSession { .. })
        ));
        assert!(matches!(
            g.accept(h, SessionId(6), 1),
            Err(ReplayError::Duplicate { .. })
        ));
    }

    #[test]
    fn bounded_number_of_senders() {
        let mut g = ReplayGuard::new(2);
        assert!(g.accept(HostId(1), SessionId(1), 1).is_ok());
        assert!(g.accept(HostId(2), SessionId(1), 1).is_ok());
        assert_eq!(
            g.accept(HostId(3), SessionId(1), 1),
            Err(ReplayError::TooManySenders { max: 2 })
        );
        // Known senders still work when the table is full.
        assert!(g.accept(HostId(1), SessionId(1), 2).is_ok());
    }

    proptest! {
        /// Whatever the order and repetitions, a (session, seq) pair is accepted at most
        /// once, and every accepted seq was within the window of the newest at the time.
        #[test]
        fn never_accepts_the_same_pair_twice(
            events in prop::collection::vec((0u64..3, 0u64..400), 1..600)
        ) {
            let mut guard = ReplayGuard::new(4);
            let mut accepted = std::collections::HashSet::new();
            for (session, seq) in events {
                if guard.accept(HostId(9), SessionId(session), seq).is_ok() {
                    prop_assert!(accepted.insert((session, seq)), "accepted twice: {session} {seq}");
                }
            }
        }

        /// In-order delivery with no duplicates is always accepted.
        #[test]
        fn in_order_is_accepted(start in 0u64..1_000_000, n in 1usize..500) {
            let mut w = ReplayWindow::starting_at(start);
            for seq in start + 1..start + n as u64 {
                prop_assert_eq!(w.accept(seq), Ok(()));
            }
        }
    }
}
