//! Shared helpers for Ringwatch's whole-binary integration tests.

pub mod procs;
