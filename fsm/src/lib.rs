//! Ringwatch failure disambiguation: a pure, deterministic state machine that turns
//! heartbeat reports and probe outcomes into verdicts (docs/design.md §5).
//!
//! Entry point: [`Engine::handle`] takes one [`Event`] (timestamps in µs from the queue
//! entry) and returns [`Action`]s. No I/O, no clock reads: ids of probes and verdicts are
//! counters in the engine, so the engine (which is `Serialize`/`Deserialize`) can be
//! snapshotted into Raft and a replay yields identical actions.
#![doc = include_str!("../TRANSITIONS.md")]

pub mod action;
pub mod config;
pub mod engine;
pub mod event;
pub mod scenario;
mod suspect;
pub mod topology;

pub use action::{Action, Evidence, ProbeId, ProbeTarget, ReportKind, VerdictId, VerdictKind};
pub use config::Config;
pub use engine::{
    Engine, EngineChanges, EngineCounters, GroupEntry, GroupKey, HostRecord, HostState,
};
pub use event::Event;
pub use suspect::{AgentRecord, FLAP_COUNT, FLAP_QUIET_US, FLAP_WINDOW_US};
pub use topology::{HostFacts, RouterId, SwitchId, Topology};
