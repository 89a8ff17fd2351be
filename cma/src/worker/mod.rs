//! The worker: runs on the Raft leader, consumes the queue in order, drives the fsm and the
//! ring planner, and carries out their decisions once they are committed through Raft.

pub mod commander;
pub mod outbox;
pub mod probe_limit;
