//! Shared helpers for Ringwatch's whole-binary integration tests.

pub mod attack;
pub mod lab;
pub mod labrun;
pub mod procs;
pub mod verdicts;
