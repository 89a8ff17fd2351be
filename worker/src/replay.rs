//! The worker as a pure function of the log: every worker entry records what its turn read
//! besides the queue ([`TurnRecord`]: the worker's clock, the tick time, the commands
//! settled, the probes its limiter refused), so a fresh worker fed the committed log
//! computes every turn again and must propose the same entry, byte for byte.
//!
//! [`Replay`] takes the committed entries in log order with the term of the leader that
//! wrote each. It applies every entry to a queue state of its own, as Raft does, and before
//! applying a worker entry it computes that turn again: on the entries between the
//! worker's offset and the entry's, with the recorded inputs, from a worker state that it
//! reloads from the rows whenever the term changes (as a new leader does, restarts
//! included). A turn that computes another entry is a [`Mismatch`]. At the end its queue
//! state holds the tables the live cluster must hold ([`QueueState::digest`]).

use crate::run::{self, TurnInput, TurnRecord};
use crate::state::{WorkerSettings, WorkerState};
use crate::tables::{self, DecodeError};
use crate::CONSUMER;
use queue::state::{DedupLimits, QueueState};
use queue::{Command, TableWrite};
use std::collections::BTreeSet;

/// A worker entry whose turn, computed again, gave something else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Its log index.
    pub index: u64,
    /// What differed.
    pub what: String,
}

/// What a replay checked.
#[derive(Clone, Debug, Default)]
pub struct ReplayReport {
    /// Worker entries computed again and compared.
    pub turns: u64,
    /// Times the worker state was reloaded from the rows (one per leader term seen).
    pub leaderships: u64,
    /// Queue entries the turns processed.
    pub entries: u64,
    /// Worker entries without a record (written by an older version): applied, not
    /// checked; the next recorded one reloads the state from the rows.
    pub unrecorded: u64,
    /// Turns that computed another entry.
    pub mismatches: Vec<Mismatch>,
}

/// The replayed worker while one leader's entries go by.
struct Leading {
    term: u64,
    state: WorkerState,
    offset: u64,
}

/// A replay in progress (module docs).
pub struct Replay {
    queue: QueueState,
    settings: WorkerSettings,
    config: fsm::Config,
    leading: Option<Leading>,
    report: ReplayReport,
}

impl Replay {
    /// A replay from an empty log, with the worker's settings and fsm config and the
    /// queue's deduplication limits (all as the live nodes have them).
    pub fn new(settings: WorkerSettings, config: fsm::Config, dedup: DedupLimits) -> Replay {
        Replay::resume(QueueState::new(dedup), settings, config)
    }

    /// A replay that starts from a snapshot's state (the log before it purged): the
    /// first worker entry reloads the worker state from its rows.
    pub fn resume(queue: QueueState, settings: WorkerSettings, config: fsm::Config) -> Replay {
        Replay {
            queue,
            settings,
            config,
            leading: None,
            report: ReplayReport::default(),
        }
    }

    /// The next committed entry: its index, the term of the leader that wrote it, and its
    /// command (`None` for blank and membership entries).
    pub fn entry(
        &mut self,
        index: u64,
        term: u64,
        command: Option<&Command>,
    ) -> Result<(), DecodeError> {
        let Some(command) = command else {
            return Ok(());
        };
        match command {
            Command::ApplyRecorded {
                consumer,
                offset,
                writes,
                input,
            } if consumer == CONSUMER => self.check_turn(index, term, *offset, writes, input)?,
            Command::Apply { consumer, .. } if consumer == CONSUMER => {
                self.report.unrecorded += 1;
                self.leading = None;
            }
            _ => {}
        }
        self.queue.apply(command.clone());
        Ok(())
    }

    /// The report, and the queue state the log built.
    pub fn finish(self) -> (ReplayReport, QueueState) {
        (self.report, self.queue)
    }

    /// What a node does when it becomes leader (`run::Worker::lead`): reload the committed
    /// state and offset, and count the events committed after `published_upto` as handed
    /// to the sinks.
    fn lead(&mut self, term: u64) -> Result<Leading, DecodeError> {
        let mut state = tables::load_state(&self.queue, self.config)?;
        let offset = self
            .queue
            .consumer_offset(CONSUMER)
            .unwrap_or_else(|| self.queue.first_offset());
        for e in tables::events_from(&self.queue, state.published_upto + 1, usize::MAX) {
            state.published_upto = state.published_upto.max(e.id);
        }
        self.report.leaderships += 1;
        Ok(Leading {
            term,
            state,
            offset,
        })
    }

    fn check_turn(
        &mut self,
        index: u64,
        term: u64,
        offset: Option<u64>,
        writes: &[TableWrite],
        input: &[u8],
    ) -> Result<(), DecodeError> {
        let mut leading = match self.leading.take() {
            Some(l) if l.term == term => l,
            _ => self.lead(term)?,
        };
        let mismatch = |what: String| Mismatch { index, what };
        let record: TurnRecord = match postcard::from_bytes(input) {
            Ok(r) => r,
            Err(e) => {
                self.report
                    .mismatches
                    .push(mismatch(format!("the turn record does not decode: {e}")));
                return Ok(());
            }
        };
        if leading.state.now_us > record.clock_us {
            self.report.mismatches.push(mismatch(format!(
                "the worker's clock is {} µs, the turn recorded {} µs",
                leading.state.now_us, record.clock_us
            )));
        }
        leading.state.now_us = leading.state.now_us.max(record.clock_us);
        let count = match offset {
            Some(to) if to < leading.offset => {
                self.report.mismatches.push(mismatch(format!(
                    "the entry moves the offset back from {} to {to}",
                    leading.offset
                )));
                0
            }
            Some(to) => to - leading.offset,
            None => 0,
        };
        let entries = self
            .queue
            .read(leading.offset, usize::try_from(count).unwrap_or(usize::MAX));
        if entries.len() as u64 != count {
            self.report.mismatches.push(mismatch(format!(
                "the turn consumed {count} queue entries from offset {}, the queue holds {}",
                leading.offset,
                entries.len()
            )));
        }
        let refused: BTreeSet<u32> = record.refused.iter().copied().collect();
        let mut position = 0u32;
        let turn = run::turn(
            &mut leading.state,
            &self.settings,
            TurnInput {
                entries: &entries,
                tick_at_us: record.tick_at_us,
                settled: record.settled.clone(),
            },
            &mut leading.offset,
            |_| {
                let allowed = !refused.contains(&position);
                position += 1;
                allowed
            },
        );
        self.report.turns += 1;
        self.report.entries += entries.len() as u64;
        match turn {
            Ok(turn) => {
                match &turn.entry {
                    Some(Command::ApplyRecorded {
                        offset: again_offset,
                        writes: again,
                        input: again_input,
                        ..
                    }) => {
                        if *again_offset != offset {
                            self.report.mismatches.push(mismatch(format!(
                                "offset {again_offset:?} computed, {offset:?} committed"
                            )));
                        }
                        if let Some(what) = first_difference(again, writes) {
                            self.report.mismatches.push(mismatch(what));
                        }
                        if again_input.as_slice() != input {
                            self.report
                                .mismatches
                                .push(mismatch("another turn record computed".into()));
                        }
                    }
                    _ => self
                        .report
                        .mismatches
                        .push(mismatch("the turn computed no entry".into())),
                }
                // The leader hands the turn's events to the sinks once it commits.
                for e in &turn.events {
                    leading.state.published_upto = leading.state.published_upto.max(e.id);
                }
            }
            Err(e) => self
                .report
                .mismatches
                .push(mismatch(format!("the turn failed to encode: {e}"))),
        }
        self.leading = Some(leading);
        Ok(())
    }
}

/// The first write that differs between what a turn computed and what was committed.
fn first_difference(computed: &[TableWrite], committed: &[TableWrite]) -> Option<String> {
    let show = |w: &TableWrite| {
        let value = match &w.value {
            Some(v) => format!("{} bytes", v.len()),
            None => "deleted".into(),
        };
        format!("{} key {:02x?} ({value})", w.table, w.key)
    };
    for (i, (a, b)) in computed.iter().zip(committed).enumerate() {
        if a != b {
            let at = match (&a.value, &b.value) {
                (Some(x), Some(y)) if a.table == b.table && a.key == b.key => {
                    let at = x.iter().zip(y).take_while(|(p, q)| p == q).count();
                    let around =
                        |v: &[u8]| v[at.saturating_sub(4)..(at + 12).min(v.len())].to_vec();
                    format!(
                        "; values differ from byte {at}: computed {:02x?}, committed {:02x?}",
                        around(x),
                        around(y)
                    )
                }
                _ => String::new(),
            };
            return Some(format!(
                "write {i}: computed {}, committed {}{at}",
                show(a),
                show(b)
            ));
        }
    }
    (computed.len() != committed.len()).then(|| {
        format!(
            "{} writes computed, {} committed",
            computed.len(),
            committed.len()
        )
    })
}
