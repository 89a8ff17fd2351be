//! The worker's I/O shell: waits for leadership, rebuilds the committed worker state from
//! its rows, processes the queue in order, commits each step's changes (the rows it
//! changed, nothing else) through one Raft `Apply` entry (with the new consumer offset),
//! and only then sends commands and hands events to the sinks.
//!
//! One turn of the loop ([`turn`]) is pure: entries and a tick time in, the Raft entry and
//! the effects out. The in-memory harness (`harness.rs`, tests only) drives the same
//! function against a [`queue::state::QueueState`], exactly as Raft applies it.
//!
//! Failover: a new leader rebuilds the state committed with the offset, so every queue
//! entry after it is processed again from the same state, giving the same decisions with
//! the same ids. Commands that were committed but not acknowledged are in the `commands`
//! table and are sent again (nanoprobes ignore ids they applied); events after
//! `published_upto` are handed to the sinks again (sinks see them at least once).

use super::commander::{Commander, CommanderMetrics};
use super::config::{SettingsError, WorkerSection};
use super::outbox::{Outbound, Settled};
use super::probe_limit::ProbeLimiter;
use super::state::{Change, Effects, WorkerSettings, WorkerState};
use super::tables::{self, DecodeError, EncodeError};
use super::CONSUMER;
use crate::door::{Door, ReplicaError};
use crate::sinks::{Event, SinkError, SinkMetrics, Sinks};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use proto::{HostId, KeyFileError, KeyRing};
use queue::{Command, QueuedPacket};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Why the worker could not start, or stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The nanoprobes' key file.
    #[error("worker key file")]
    Keys(#[from] KeyFileError),
    /// The `[worker]` section.
    #[error("worker settings")]
    Settings(#[from] SettingsError),
    /// The command socket could not be bound.
    #[error("worker command socket")]
    CommandSocket(#[source] std::io::Error),
    /// A sink could not be started.
    #[error("worker sinks")]
    Sinks(#[from] SinkError),
    /// The committed worker state does not decode (written by an incompatible version).
    #[error("loading the worker state")]
    State(#[from] DecodeError),
    /// A row could not be encoded.
    #[error("encoding the worker's rows")]
    Encode(#[from] EncodeError),
    /// Raft refused the read barrier or a proposal (lost leadership, shutting down).
    #[error("raft")]
    Raft(#[from] ReplicaError),
}

/// What one turn of the loop is given.
pub(crate) struct TurnInput<'a> {
    /// Queue entries to process, in order, with their offsets.
    pub entries: &'a [(u64, QueuedPacket)],
    /// The time of a tick to run after them, if one is due.
    pub tick_at_us: Option<u64>,
    /// Commands acknowledged or abandoned since the last turn.
    pub settled: Vec<u64>,
}

/// What a turn read besides the queue entries, recorded in its Raft entry
/// (`Command::ApplyRecorded`, postcard), so that the turn can be computed again from the
/// log alone and its writes compared ([`crate::replay`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TurnRecord {
    /// The worker's clock before the turn: ticks that changed nothing wrote no entry, but
    /// moved it.
    pub clock_us: u64,
    /// [`TurnInput::tick_at_us`].
    pub tick_at_us: Option<u64>,
    /// [`TurnInput::settled`].
    pub settled: Vec<u64>,
    /// Which of the turn's probe requests, by position, the probe limiter refused (its
    /// budgets live in the leader's memory, not in the replicated state).
    pub refused: Vec<u32>,
}

/// What one turn decided.
pub(crate) struct Turn {
    /// The Raft entry to propose; `None` when nothing changed (a tick that fired no
    /// deadline): nothing is then encoded either.
    pub entry: Option<Command>,
    /// Commands to send once `entry` commits.
    pub commands: Vec<Outbound>,
    /// Events to hand to the sinks once `entry` commits.
    pub events: Vec<Event>,
    /// Probe requests the limiter refused.
    pub probes_refused: u64,
    /// Queue entries that did not decode as reports, with the first error.
    pub undecodable: Option<(u64, String)>,
}

/// One turn of the worker loop, pure: steps `input`'s entries and tick on `state`, lets
/// probe requests through `allow_probe`, and encodes the changed rows (operator rows and
/// the rows of the worker's own state that changed) into one `Apply` entry that moves the
/// consumer offset past the entries. `offset` is advanced past the entries processed.
pub(crate) fn turn(
    state: &mut WorkerState,
    settings: &WorkerSettings,
    input: TurnInput<'_>,
    offset: &mut u64,
    mut allow_probe: impl FnMut(&str) -> bool,
) -> Result<Turn, EncodeError> {
    let mut fx = Effects::default();
    let mut record = TurnRecord {
        clock_us: state.now_us,
        tick_at_us: input.tick_at_us,
        settled: input.settled.clone(),
        refused: Vec::new(),
    };
    let had_entries = !input.entries.is_empty();
    for (entry_offset, packet) in input.entries {
        state.step_packet_in_turn(settings, packet, &mut fx);
        *offset = entry_offset + 1;
    }
    match input.tick_at_us {
        Some(at) => state.step_tick(settings, at, &mut fx),
        None => state.end_turn(settings, &mut fx),
    }
    fx.changes
        .extend(input.settled.into_iter().map(Change::CommandSettled));
    let mut probes_refused = 0;
    for (position, (investigation, command)) in
        std::mem::take(&mut fx.probes).into_iter().enumerate()
    {
        if allow_probe(&investigation) {
            fx.commands.push(command);
        } else {
            probes_refused += 1;
            record
                .refused
                .push(u32::try_from(position).unwrap_or(u32::MAX));
        }
    }
    fx.changes
        .extend(fx.commands.iter().cloned().map(Change::Command));
    // The rows of the state itself; the counters row goes with every entry.
    state.flush(&mut fx, had_entries);
    let mut turn = Turn {
        entry: None,
        commands: Vec::new(),
        events: Vec::new(),
        probes_refused,
        undecodable: fx.undecodable.take(),
    };
    if !had_entries && fx.changes.is_empty() {
        return Ok(turn);
    }
    let writes = fx
        .changes
        .iter()
        .map(tables::encode)
        .collect::<Result<Vec<_>, _>>()?;
    turn.events = fx
        .events()
        .map(tables::sink_event)
        .collect::<Result<Vec<_>, _>>()?;
    turn.commands = fx.commands;
    turn.entry = Some(Command::ApplyRecorded {
        consumer: CONSUMER.into(),
        offset: had_entries.then_some(*offset),
        writes,
        input: postcard::to_allocvec(&record).map_err(EncodeError::Record)?,
    });
    Ok(turn)
}

/// Counters of the worker.
#[derive(Clone, Default)]
pub struct WorkerMetrics {
    /// Queue entries processed (a re-processing after failover counts again).
    pub entries: Counter,
    /// Raft entries proposed by the worker.
    pub proposals: Counter,
    /// Proposals that failed (lost leadership).
    pub proposal_failures: Counter,
    /// Probe commands refused by the probe limiter.
    pub probes_refused: Counter,
    /// Queue entries skipped because they did not decode as reports.
    pub undecodable: Counter,
    /// Times this node's worker became active.
    pub activations: Counter,
    pub commander: CommanderMetrics,
    pub sinks: SinkMetrics,
}

impl WorkerMetrics {
    /// Registers under `ringwatch_worker_*` (and the commander's and sinks' own names).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ringwatch_worker_entries",
            "Queue entries processed",
            self.entries.clone(),
        );
        registry.register(
            "ringwatch_worker_proposals",
            "Raft entries proposed by the worker",
            self.proposals.clone(),
        );
        registry.register(
            "ringwatch_worker_proposal_failures",
            "Worker proposals that failed",
            self.proposal_failures.clone(),
        );
        registry.register(
            "ringwatch_worker_probes_refused",
            "Probe commands refused by the probe limiter",
            self.probes_refused.clone(),
        );
        registry.register(
            "ringwatch_worker_undecodable_entries",
            "Queue entries skipped because they did not decode as reports",
            self.undecodable.clone(),
        );
        registry.register(
            "ringwatch_worker_activations",
            "Times this node's worker became active",
            self.activations.clone(),
        );
        self.commander.register(registry);
        self.sinks.register(registry);
    }
}

use daemon::clock::wall_clock_us as wall_us;

/// Everything the worker needs, prepared by the `cma` binary.
pub struct Worker {
    node: Door,
    config: WorkerSection,
    settings: WorkerSettings,
    commander: Commander,
    settled: mpsc::UnboundedReceiver<Settled>,
    sinks: Sinks,
    metrics: WorkerMetrics,
    keys: Arc<KeyRing>,
}

impl Worker {
    /// Binds the command socket and starts the sinks.
    pub async fn start(
        node: Door,
        config: WorkerSection,
        metrics: WorkerMetrics,
    ) -> Result<Worker, WorkerError> {
        let keys = Arc::new(KeyRing::load(&config.key_file)?);
        let settings = config.settings()?;
        let (settled_tx, settled) = mpsc::unbounded_channel();
        let commander = Commander::start(
            config.command_listen,
            keys.clone(),
            HostId(config.wire_host_id(node.id())),
            config.outbox,
            metrics.commander.clone(),
            settled_tx,
        )
        .await
        .map_err(WorkerError::CommandSocket)?;
        let sinks = Sinks::start(
            &config.sinks,
            metrics.sinks.clone(),
            Some(Arc::new(node.clone()) as Arc<dyn crate::sinks::alertmanager::AlertSource>),
        )?;
        tracing::info!(command_socket = %commander.local_addr(), "worker ready");
        Ok(Worker {
            keys,
            node,
            config,
            settings,
            commander,
            settled,
            sinks,
            metrics,
        })
    }

    /// What `POST /v1/probe` needs: the key ring and the command sealer (so a probe does
    /// not start a new session that makes nanoprobes refuse this node's commands).
    pub fn probe_context(&self) -> crate::routes::ProbeContext {
        crate::routes::ProbeContext {
            keys: self.keys.clone(),
            sealer: self.commander.sealer(),
        }
    }

    /// Runs forever: leads while this node is the Raft leader, waits otherwise.
    pub async fn run(mut self) {
        loop {
            if self.node.is_leader() {
                self.metrics.activations.inc();
                tracing::info!("worker active on the leader");
                if let Err(e) = self.lead().await {
                    tracing::warn!(error = %e, "worker stepped down");
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn lead(&mut self) -> Result<(), WorkerError> {
        // Everything committed before we became leader is applied locally after this.
        self.node.read_barrier().await?;
        let (mut state, mut offset, pending, unpublished) = {
            let q = self.node.state();
            let state = tables::load_state(&q, self.config.fsm_config())?;
            let offset = q
                .consumer_offset(CONSUMER)
                .unwrap_or_else(|| q.first_offset());
            // Commands committed by an earlier leader and maybe never acknowledged.
            let pending = tables::pending_commands(&q);
            // Events committed but maybe never handed to the sinks.
            let unpublished = tables::events_from(&q, state.published_upto + 1, usize::MAX);
            (state, offset, pending, unpublished)
        };
        self.commander.send(pending).await;
        for e in &unpublished {
            self.sinks.publish(e);
            state.published_upto = state.published_upto.max(e.id);
        }
        let mut limiter = ProbeLimiter::new(self.config.probes);
        let mut undecodable_warning = daemon::warn::WarnEvery::new(Duration::from_secs(10));
        let started = Instant::now();
        let mut applied = self.node.subscribe_applied();
        let tick = Duration::from_millis(self.config.tick_ms.max(10));
        let mut last_tick = Instant::now();
        loop {
            if !self.node.is_leader() {
                return Ok(());
            }
            let entries = self.node.read_local(offset, self.config.batch.max(1));
            let had_entries = !entries.is_empty();
            let tick_due = last_tick.elapsed() >= tick;
            if tick_due {
                last_tick = Instant::now();
            }
            // Acknowledged or abandoned commands leave the table.
            let mut settled = Vec::new();
            while let Ok(s) = self.settled.try_recv() {
                settled.push(match s {
                    Settled::Acked { id, .. } | Settled::GaveUp { id, .. } => id,
                });
            }
            let now = started.elapsed();
            let input = TurnInput {
                entries: &entries,
                tick_at_us: tick_due.then(wall_us),
                settled,
            };
            let turn = turn(
                &mut state,
                &self.settings,
                input,
                &mut offset,
                |investigation| limiter.allow(investigation, now).is_ok(),
            )?;
            self.metrics.entries.inc_by(entries.len() as u64);
            self.metrics.probes_refused.inc_by(turn.probes_refused);
            if let Some((count, first)) = &turn.undecodable {
                self.metrics.undecodable.inc_by(*count);
                if let Some(suppressed) = undecodable_warning.check(Instant::now()) {
                    tracing::warn!(
                        count,
                        suppressed,
                        first = %first,
                        "queue entries that are not reports skipped (a packet-reader of \
                         another version, or another producer)"
                    );
                }
            }
            if let Some(entry) = turn.entry {
                self.metrics.proposals.inc();
                if let Err(e) = self.node.propose(entry).await {
                    // Not committed: none of this step's effects happen. Whoever leads
                    // next starts again from the committed state.
                    self.metrics.proposal_failures.inc();
                    return Err(e.into());
                }
                // Committed: now act.
                self.commander.send(turn.commands).await;
                for e in &turn.events {
                    self.sinks.publish(e);
                    // Recorded with the next proposal: a leader change in between hands
                    // these events to the sinks again rather than losing them.
                    state.published_upto = state.published_upto.max(e.id);
                }
            }
            if !had_entries {
                // Wait for new queue entries or the next tick.
                let _ = tokio::time::timeout(tick, applied.changed()).await;
            }
        }
    }
}
