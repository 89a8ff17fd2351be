//! The worker's I/O shell: waits for leadership, reloads the committed worker state,
//! processes the queue in order, commits each step's state and effects through one Raft
//! `Apply` entry (with the new consumer offset), and only then sends commands and hands
//! events to the sinks.
//!
//! The state is stored as JSON (its failure rows carry free-form JSON evidence, which
//! postcard cannot decode).
//!
//! Failover: a new leader reloads the state committed with the offset, so every queue
//! entry after it is processed again from the same state, giving the same decisions with
//! the same ids. Commands that were committed but not acknowledged are in the `commands`
//! table and are sent again (nanoprobes ignore ids they applied); events after
//! `published_upto` are handed to the sinks again (sinks see them at least once).

use super::commander::{Commander, CommanderMetrics};
use super::config::WorkerSection;
use super::outbox::{Outbound, Settled};
use super::probe_limit::ProbeLimiter;
use super::state::{Effects, WorkerSettings, WorkerState};
use super::views::{id_key, COMMANDS, EVENTS, STATE_KEY, WORKER};
use super::CONSUMER;
use crate::raft::{Command, Node, TableWrite};
use crate::sinks::{Event, SinkMetrics, Sinks};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use proto::{HostId, KeyRing};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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
    node: Node,
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
        node: Node,
        config: WorkerSection,
        metrics: WorkerMetrics,
    ) -> anyhow::Result<Worker> {
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
        .await?;
        let sinks = Sinks::start(&config.sinks, metrics.sinks.clone())?;
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
    pub fn probe_context(&self) -> super::api::ProbeContext {
        super::api::ProbeContext {
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

    fn load_state(&self) -> anyhow::Result<WorkerState> {
        let state = self.node.state();
        match state.table_get(WORKER, STATE_KEY) {
            Some(bytes) => Ok(serde_json::from_slice(bytes)?),
            None => Ok(WorkerState::new(self.config.fsm_config())),
        }
    }

    async fn lead(&mut self) -> anyhow::Result<()> {
        // Everything committed before we became leader is applied locally after this.
        self.node.read_barrier().await?;
        let mut state = self.load_state()?;
        let mut persisted = serde_json::to_vec(&state)?;
        let mut offset = {
            let s = self.node.state();
            s.consumer_offset(CONSUMER)
                .unwrap_or_else(|| s.first_offset())
        };
        // Commands committed by an earlier leader and maybe never acknowledged.
        let pending: Vec<Outbound> = {
            let s = self.node.state();
            s.table(COMMANDS)
                .map(|t| {
                    t.values()
                        .filter_map(|v| postcard::from_bytes(v).ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        self.commander.send(pending).await;
        // Events committed but maybe never handed to the sinks.
        let unpublished: Vec<Event> = {
            let s = self.node.state();
            s.table(EVENTS)
                .map(|t| {
                    t.range(id_key(state.published_upto + 1)..)
                        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        for e in &unpublished {
            self.sinks.publish(e);
            state.published_upto = state.published_upto.max(e.id);
        }
        let mut limiter = ProbeLimiter::new(self.config.probes);
        let started = Instant::now();
        let mut applied = self.node.subscribe_applied();
        let tick = Duration::from_millis(self.config.tick_ms.max(10));
        let mut last_tick = Instant::now();
        loop {
            if !self.node.is_leader() {
                return Ok(());
            }
            let entries = self.node.read_local(offset, self.config.batch.max(1));
            let mut fx = Effects::default();
            let had_entries = !entries.is_empty();
            for (entry_offset, packet) in &entries {
                state.step_packet(&self.settings, packet, &mut fx);
                offset = entry_offset + 1;
                self.metrics.entries.inc();
            }
            let tick_due = last_tick.elapsed() >= tick;
            if tick_due {
                last_tick = Instant::now();
                state.step_tick(&self.settings, wall_us(), &mut fx);
            }
            // Acknowledged or abandoned commands leave the table.
            while let Ok(settled) = self.settled.try_recv() {
                let id = match settled {
                    Settled::Acked { id, .. } | Settled::GaveUp { id, .. } => id,
                };
                fx.writes.push(TableWrite {
                    table: COMMANDS.into(),
                    key: id_key(id),
                    value: None,
                });
            }
            let now = started.elapsed();
            for (investigation, command) in std::mem::take(&mut fx.probes) {
                if limiter.allow(&investigation, now).is_ok() {
                    fx.commands.push(command);
                } else {
                    self.metrics.probes_refused.inc();
                }
            }
            for command in &fx.commands {
                if let Ok(bytes) = postcard::to_allocvec(command) {
                    fx.writes.push(TableWrite {
                        table: COMMANDS.into(),
                        key: id_key(command.command.id),
                        value: Some(bytes),
                    });
                }
            }
            let blob = serde_json::to_vec(&state)?;
            let state_changed = blob != persisted;
            // A tick that changed nothing visible need not be replicated: replaying it
            // later on another leader gives the same result.
            let worth_proposing = had_entries || !fx.writes.is_empty() || !fx.commands.is_empty();
            if worth_proposing {
                if state_changed {
                    fx.writes.push(TableWrite {
                        table: WORKER.into(),
                        key: STATE_KEY.to_vec(),
                        value: Some(blob.clone()),
                    });
                }
                self.metrics.proposals.inc();
                let entry = Command::Apply {
                    consumer: CONSUMER.into(),
                    offset: had_entries.then_some(offset),
                    writes: fx.writes,
                };
                if let Err(e) = self.node.propose(entry).await {
                    // Not committed: none of this step's effects happen. Whoever leads
                    // next starts again from the committed state.
                    self.metrics.proposal_failures.inc();
                    return Err(e.into());
                }
                persisted = blob;
                // Committed: now act.
                self.commander.send(fx.commands).await;
                for e in &fx.events {
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
