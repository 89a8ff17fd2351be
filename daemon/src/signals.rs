//! The signals that stop a daemon gracefully: SIGTERM (systemd) and SIGINT (a terminal).

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Handlers for the stop signals, installed once at start so a failure shows up before
/// the daemon reports ready.
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Installs the handlers (needs a running tokio runtime).
    pub fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next stop signal and returns its name. Cancel-safe, so it can sit
    /// in a `select!` loop.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
