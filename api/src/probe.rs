//! `POST /v1/probe`: an authenticated UDP echo from the answering node to a host's
//! nanoprobe (`cmactl probe`).

use serde::{Deserialize, Serialize};

/// `POST /v1/probe` body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProbeRequest {
    /// Host id to probe.
    pub host: u64,
    /// Timeout in ms (default 2000, at most 10000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `POST /v1/probe` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProbeAnswer {
    pub host: u64,
    pub addr: std::net::SocketAddr,
    /// `reachable` or `timeout`.
    pub outcome: String,
    pub rtt_us: Option<u64>,
}
