//! Block sweeps: finding a block of consecutive dead hosts in parallel (docs/worker.md,
//! "Block failures").
//!
//! In a ring, a host is watched by its two neighbours. When a block of consecutive hosts
//! dies (a rack, or a switch nobody declared), only the hosts at the block's two ends have
//! a live watcher. Without help, each verdict rewires one more neighbour to the live
//! watcher, which then needs a full deadtime, a corroboration window and a probe before the
//! next verdict: one host per end every 7-10 s.
//!
//! A sweep starts when a host is declared dead and one of its ring neighbours did not
//! report it: that neighbour may be dead too. The worker then checks the hosts beyond the
//! dead one, in that direction, in rounds: the first round checks [`FIRST_ROUND`] hosts at
//! once (an fsm `Check`: one probe each, from the live watcher that reported the death),
//! and while every host of a round is found dead, the next round checks [`GROWTH`] times
//! as many hosts beyond it (at most [`MAX_ROUND`]). The sweep ends at the first round with
//! a host that answered, or that nobody could tell (a check without answer gives no
//! verdict: fsm row K4), or at a host already under suspicion (the sweep from the block's
//! other end meets it there). A block of 500 hosts is then found in two probe rounds
//! from each end instead of 250 deadtimes, one after the other.
//!
//! Pure: ring order and host states come from the caller.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Hosts checked by a sweep's first round.
pub const FIRST_ROUND: usize = 16;
/// How much larger each next round is, while every host of a round was dead.
pub const GROWTH: usize = 16;
/// Most hosts one round checks (the probe limiter's burst must cover two such rounds).
pub const MAX_ROUND: usize = 256;

/// Which way along a ring (rings are ordered by host id, and wrap around).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Towards higher host ids.
    Up,
    /// Towards lower host ids.
    Down,
}

/// What a sweep needs to know of a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// A ring member nobody suspects: may be checked.
    Quiet,
    /// A ring member under suspicion or check: a sweep stops there.
    Open,
    /// Declared dead (a round's host that died).
    Dead,
    /// Anything else (not in the ring, left, answered): a sweep stops there.
    Other,
}

/// Where a host sits in ring order: rings are ordered by switch (unknown first), then host
/// id; a switch ring's members all share the switch, the top ring spans switches.
pub type RingKey = (Option<String>, u64);

/// One sweep in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sweep {
    /// The ring's switch (`None`: the flat ring); unused for the top ring.
    pub switch: Option<String>,
    /// A sweep of the top ring (the representatives of every switch ring): a block of
    /// whole switch rings is only watched there.
    #[serde(default)]
    pub top: bool,
    /// Direction away from the live watcher.
    pub direction: Direction,
    /// The live host that probes (it reported the death that started the sweep).
    pub from: u64,
    /// Hosts of the current round without an outcome yet.
    pub pending: BTreeSet<u64>,
    /// Whether every host of the current round that has an outcome died.
    pub all_dead: bool,
    /// The farthest host checked so far.
    pub frontier: u64,
    /// Size of the current round.
    pub width: usize,
}

/// Up to `width` hosts after `start` (excluded) in `direction` along the ring `members`
/// (in ring order, sorted by key, wrapping), stopping before the first host that is not
/// quiet (or, with `skip_open`, skipping hosts under suspicion or check and stopping at the
/// others), or that is `from`, or `start` itself (a sweep never laps the ring).
pub fn round(
    members: &[(RingKey, u64)],
    start: &RingKey,
    direction: Direction,
    width: usize,
    from: u64,
    skip_open: bool,
    standing: impl Fn(u64) -> Standing,
) -> Vec<u64> {
    let n = members.len();
    if n == 0 {
        return Vec::new();
    }
    // Index of the first member after `start` in the direction (start need not be a member
    // any more: it may have just died and left the ring).
    let above = members.partition_point(|(k, _)| k <= start);
    let below = members.partition_point(|(k, _)| k < start);
    let mut out = Vec::new();
    for k in 0..n {
        let id = match direction {
            Direction::Up => members[(above + k) % n].1,
            Direction::Down => members[(below + n - 1 - k) % n].1,
        };
        if id == start.1 || id == from || out.len() >= width {
            break;
        }
        match standing(id) {
            Standing::Quiet => out.push(id),
            Standing::Open if skip_open => {}
            _ => break,
        }
    }
    out
}

/// Where a sweep starts: the ring, the dead host it starts beyond, which way, the prober,
/// and how many hosts its first round checks.
#[derive(Clone, Copy, Debug)]
pub struct Start<'a> {
    /// The ring's switch (`None`: the flat ring); unused for the top ring.
    pub switch: &'a Option<String>,
    /// A sweep of the top ring.
    pub top: bool,
    /// The ring's members in ring order.
    pub members: &'a [(RingKey, u64)],
    /// The dead host the sweep starts beyond.
    pub dead: &'a RingKey,
    /// Which way, away from the live watcher.
    pub direction: Direction,
    /// The live host that probes.
    pub from: u64,
    /// Hosts checked by the first round: [`FIRST_ROUND`], or [`MAX_ROUND`] for a ring
    /// whose members all went silent together (its own ring reported nothing: the whole
    /// ring is likely down, and one round finds it).
    pub width: usize,
}

impl Sweep {
    /// A sweep of the hosts beyond `start.dead`; returns it with its first round.
    pub fn start(
        start: Start<'_>,
        standing: impl Fn(u64) -> Standing,
    ) -> Option<(Sweep, Vec<u64>)> {
        let check = round(
            start.members,
            start.dead,
            start.direction,
            start.width,
            start.from,
            start.top,
            standing,
        );
        let frontier = *check.last()?;
        let sweep = Sweep {
            switch: start.switch.clone(),
            top: start.top,
            direction: start.direction,
            from: start.from,
            pending: check.iter().copied().collect(),
            all_dead: true,
            frontier,
            width: start.width,
        };
        Some((sweep, check))
    }

    /// Looks at the outcomes of the pending hosts: `None` while some are still open,
    /// then whether every host of the round died.
    pub fn settle(&mut self, standing: impl Fn(u64) -> Standing) -> Option<bool> {
        let mut settled = Vec::new();
        for &h in &self.pending {
            match standing(h) {
                Standing::Open => {}
                Standing::Dead => settled.push(h),
                Standing::Quiet | Standing::Other => {
                    self.all_dead = false;
                    settled.push(h);
                }
            }
        }
        for h in settled {
            self.pending.remove(&h);
        }
        self.pending.is_empty().then_some(self.all_dead)
    }

    /// The next round after a round where every host died (`members`: the ring now, in
    /// ring order; `frontier`: the key of the farthest host checked); empty when there is
    /// nothing left to check, which ends the sweep.
    pub fn next_round(
        &mut self,
        members: &[(RingKey, u64)],
        frontier: &RingKey,
        standing: impl Fn(u64) -> Standing,
    ) -> Vec<u64> {
        self.width = (self.width * GROWTH).min(MAX_ROUND);
        let check = round(
            members,
            frontier,
            self.direction,
            self.width,
            self.from,
            self.top,
            standing,
        );
        if let Some(&last) = check.last() {
            self.frontier = last;
            self.pending = check.iter().copied().collect();
            self.all_dead = true;
        }
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn keyed(ring: &[u64]) -> Vec<(RingKey, u64)> {
        ring.iter().map(|h| ((None, *h), *h)).collect()
    }

    fn quiet_except(open: &[u64]) -> impl Fn(u64) -> Standing + '_ {
        move |h| {
            if open.contains(&h) {
                Standing::Open
            } else {
                Standing::Quiet
            }
        }
    }

    #[test]
    fn rounds_walk_both_ways_and_wrap() {
        let ring: Vec<u64> = (1..=10).collect();
        let q = quiet_except(&[]);
        assert_eq!(
            round(&keyed(&ring), &(None, 4), Direction::Up, 3, 99, false, &q),
            vec![5, 6, 7]
        );
        assert_eq!(
            round(&keyed(&ring), &(None, 4), Direction::Down, 3, 99, false, &q),
            vec![3, 2, 1]
        );
        assert_eq!(
            round(&keyed(&ring), &(None, 9), Direction::Up, 3, 99, false, &q),
            vec![10, 1, 2]
        );
        assert_eq!(
            round(&keyed(&ring), &(None, 2), Direction::Down, 3, 99, false, &q),
            vec![1, 10, 9]
        );
        // The dead host that started the sweep has left the ring already.
        let without_4: Vec<u64> = ring.iter().copied().filter(|h| *h != 4).collect();
        assert_eq!(
            round(
                &keyed(&without_4),
                &(None, 4),
                Direction::Up,
                2,
                99,
                false,
                &q
            ),
            vec![5, 6]
        );
        assert_eq!(
            round(
                &keyed(&without_4),
                &(None, 4),
                Direction::Down,
                2,
                99,
                false,
                &q
            ),
            vec![3, 2]
        );
    }

    #[test]
    fn rounds_stop_at_the_prober_at_open_hosts_and_never_lap() {
        let ring: Vec<u64> = (1..=10).collect();
        assert_eq!(
            round(
                &keyed(&ring),
                &(None, 4),
                Direction::Up,
                100,
                8,
                false,
                quiet_except(&[])
            ),
            vec![5, 6, 7]
        );
        assert_eq!(
            round(
                &keyed(&ring),
                &(None, 4),
                Direction::Up,
                100,
                99,
                false,
                quiet_except(&[7])
            ),
            vec![5, 6]
        );
        // Around the whole ring back to the start, never twice.
        let all = round(
            &keyed(&ring),
            &(None, 4),
            Direction::Up,
            100,
            99,
            false,
            quiet_except(&[]),
        );
        assert_eq!(all.len(), 9);
        assert!(round(
            &[],
            &(None, 4),
            Direction::Up,
            5,
            99,
            false,
            quiet_except(&[])
        )
        .is_empty());
        // The top ring skips hosts under check (their own switch ring's sweep has them).
        assert_eq!(
            round(
                &keyed(&ring),
                &(None, 4),
                Direction::Up,
                100,
                99,
                true,
                quiet_except(&[5, 6])
            ),
            vec![7, 8, 9, 10, 1, 2, 3]
        );
    }

    /// Simulates a sweep over a ring where `dead` hosts are down, answering every check at
    /// once; returns the rounds it ran and the hosts it found dead.
    fn simulate(n: u64, dead: &BTreeSet<u64>, first: u64, from: u64) -> (usize, BTreeSet<u64>) {
        let mut state: BTreeMap<u64, Standing> = (1..=n).map(|h| (h, Standing::Quiet)).collect();
        state.insert(first, Standing::Dead);
        let members = |state: &BTreeMap<u64, Standing>| -> Vec<(RingKey, u64)> {
            state
                .iter()
                .filter(|(_, s)| **s != Standing::Dead)
                .map(|(h, _)| ((None, *h), *h))
                .collect()
        };
        let look = |state: &BTreeMap<u64, Standing>, h: u64| {
            state.get(&h).copied().unwrap_or(Standing::Other)
        };
        let ring = members(&state);
        let start = Start {
            switch: &None,
            top: false,
            members: &ring,
            dead: &(None, first),
            direction: Direction::Up,
            from,
            width: FIRST_ROUND,
        };
        let (mut sweep, mut check) = Sweep::start(start, |h| look(&state, h)).unwrap();
        let mut rounds = 1;
        let mut found = BTreeSet::new();
        loop {
            for h in &check {
                if dead.contains(h) {
                    state.insert(*h, Standing::Dead);
                    found.insert(*h);
                } else {
                    state.insert(*h, Standing::Other);
                }
            }
            if sweep.settle(|h| look(&state, h)) != Some(true) {
                return (rounds, found);
            }
            let frontier = (None, sweep.frontier);
            let next = sweep.next_round(&members(&state), &frontier, |h| look(&state, h));
            if next.is_empty() {
                return (rounds, found);
            }
            rounds += 1;
            assert!(rounds < 100, "a sweep must end");
            // Answered hosts are quiet ring members again.
            for (_, s) in state.iter_mut() {
                if *s == Standing::Other {
                    *s = Standing::Quiet;
                }
            }
            check = next;
        }
    }

    #[test]
    fn a_block_of_250_is_found_in_two_rounds() {
        // Hosts 501..=750 of 10,000 die; 500 reported 501 dead.
        let dead: BTreeSet<u64> = (502..=750).collect();
        let (rounds, found) = simulate(10_000, &dead, 501, 500);
        assert_eq!(found, dead);
        assert_eq!(rounds, 2, "16 + 256 hosts");
        // 2,000 hosts in a row: 16 + 8 rounds of 256.
        let dead: BTreeSet<u64> = (2..=2_000).collect();
        let (rounds, found) = simulate(5_000, &dead, 1, 5_000);
        assert_eq!(found, dead);
        assert_eq!(rounds, 9);
    }

    #[test]
    fn a_live_neighbour_ends_the_sweep_after_one_round() {
        let (rounds, found) = simulate(100, &BTreeSet::new(), 50, 49);
        assert_eq!(rounds, 1);
        assert!(found.is_empty());
    }

    #[test]
    fn pending_hosts_hold_the_round() {
        let ring: Vec<u64> = (1..=10).collect();
        let members = keyed(&ring);
        let start = Start {
            switch: &None,
            top: false,
            members: &members,
            dead: &(None, 4),
            direction: Direction::Up,
            from: 3,
            width: FIRST_ROUND,
        };
        let (mut sweep, check) = Sweep::start(start, quiet_except(&[])).unwrap();
        assert_eq!(check, vec![5, 6, 7, 8, 9, 10, 1, 2]);
        // Still under check: no outcome yet.
        assert_eq!(sweep.settle(quiet_except(&check)), None);
        // One answered: the round ends, and the sweep with it.
        assert_eq!(
            sweep.settle(|h| if h == 5 {
                Standing::Quiet
            } else {
                Standing::Dead
            }),
            Some(false)
        );
    }
}
