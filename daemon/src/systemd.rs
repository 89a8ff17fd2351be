//! systemd integration: readiness (`Type=notify`), the watchdog and the stopping notice.
//! Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.

use std::time::Duration;

/// Tells systemd the daemon is ready, and returns how often the watchdog must be pinged
/// (half of `WatchdogSec`, so one late ping does not get the daemon killed), if systemd
/// asked for one.
pub fn notify_ready() -> Option<Duration> {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify READY");
    }
    sd_notify::watchdog_enabled().map(|timeout| (timeout / 2).max(Duration::from_millis(100)))
}

/// Pings the watchdog once. Daemons with one main loop call this from the loop, so a stuck
/// loop stops the pings and systemd restarts the daemon.
pub fn ping_watchdog() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
}

/// [`notify_ready`], then pings the watchdog from a task of the runtime, for daemons whose
/// liveness is the runtime's.
pub fn notify_ready_with_watchdog_task() {
    if let Some(period) = notify_ready() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                ping_watchdog();
            }
        });
    }
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}
