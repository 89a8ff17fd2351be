//! Groups verified reports into queue appends: a batch is closed when it holds
//! `max_packets` reports or `max_bytes` datagram bytes, or when its first report has waited
//! `max_delay`. At most `max_in_flight` appends await their commit at once; while all are
//! busy the batcher stops taking reports, the bounded channel in front of it fills, and the
//! receive loops drop new reports (counted) instead of growing memory.

use crate::accepted::Accepted;
use crate::acker::{submit, Submitter};
use crate::config::BatchConfig;

use std::sync::Arc;
use tokio::sync::{mpsc, watch, Semaphore, TryAcquireError};
use tokio::time::Instant;

/// The batch being filled (pure: time is passed in).
#[derive(Debug, Default)]
pub struct Batch {
    items: Vec<Accepted>,
    bytes: usize,
    opened: Option<Instant>,
}

impl Batch {
    /// Adds a report; the first one opens the batch at `now`.
    pub fn push(&mut self, item: Accepted, now: Instant) {
        if self.items.is_empty() {
            self.opened = Some(now);
        }
        self.bytes += item.packet.report.len();
        self.items.push(item);
    }

    /// True when the batch must be sent now because of its size.
    pub fn is_full(&self, limits: &BatchConfig) -> bool {
        self.items.len() >= limits.max_packets || self.bytes >= limits.max_bytes
    }

    /// When the batch must be sent at the latest (None while empty).
    pub fn deadline(&self, limits: &BatchConfig) -> Option<Instant> {
        self.opened.map(|t| t + limits.max_delay())
    }

    /// Number of reports held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Empties the batch, returning its reports and when it was opened.
    pub fn take(&mut self) -> (Vec<Accepted>, Option<Instant>) {
        self.bytes = 0;
        (std::mem::take(&mut self.items), self.opened.take())
    }
}

/// Runs until `shutdown` turns true and every in-flight append has finished (or
/// `give_up` passed).
pub async fn run(
    limits: BatchConfig,
    mut rx: mpsc::Receiver<Accepted>,
    submitter: Arc<Submitter>,
    mut shutdown: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let mut batch = Batch::default();
    let mut closing = false;
    loop {
        if closing {
            // Take what already arrived (the receive loops stop on the same signal), one
            // batch at a time.
            while !batch.is_full(&limits) {
                match rx.try_recv() {
                    Ok(item) => batch.push(item, Instant::now()),
                    Err(_) => break,
                }
            }
        }
        let send_now = batch.is_full(&limits)
            || (!batch.is_empty() && closing)
            || batch.deadline(&limits).is_some_and(|d| d <= Instant::now());
        if send_now {
            let permit = match in_flight.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(TryAcquireError::Closed) => return,
                Err(TryAcquireError::NoPermits) => {
                    // Every slot is busy. Keep filling this batch meanwhile (bigger appends
                    // are what lets a slow queue catch up); once it is full, stop taking
                    // reports: the channel fills and the receive loops drop new ones.
                    tokio::select! {
                        permit = in_flight.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => return,
                        },
                        item = rx.recv(), if !batch.is_full(&limits) && !closing => {
                            match item {
                                Some(item) => batch.push(item, Instant::now()),
                                None => closing = true,
                            }
                            continue;
                        }
                    }
                }
            };
            let (items, opened) = batch.take();
            let submitter = submitter.clone();
            tokio::spawn(async move {
                submit(&submitter, items, opened.unwrap_or_else(Instant::now)).await;
                drop(permit);
            });
            continue;
        }
        if closing {
            break;
        }
        let deadline = batch.deadline(&limits);
        tokio::select! {
            item = rx.recv() => match item {
                Some(item) => {
                    let now = Instant::now();
                    batch.push(item, now);
                    // Take what is already waiting without another trip through select.
                    while !batch.is_full(&limits) {
                        match rx.try_recv() {
                            Ok(item) => batch.push(item, now),
                            Err(_) => break,
                        }
                    }
                }
                None => closing = true,
            },
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                }
            }
        }
    }
    // Wait for every in-flight append (each bounded by give_up).
    let _ = in_flight.acquire_many(limits.max_in_flight as u32).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue::QueuedPacket;
    use std::time::Duration;

    fn item(len: usize) -> Accepted {
        Accepted {
            packet: QueuedPacket {
                sender: 1,
                session: 1,
                seq: 1,
                received_at_us: 0,
                source: "127.0.0.1:1".parse().unwrap(),
                report: vec![0; len],
            },
            report_id: 1,
            reply_to: "127.0.0.1:1".parse().unwrap(),
            socket: 0,
        }
    }

    #[test]
    fn closes_on_count_bytes_or_age() {
        let limits = BatchConfig {
            max_packets: 3,
            max_bytes: 2000,
            max_delay_us: 1000,
            ..BatchConfig::default()
        };
        let t0 = Instant::now();
        let mut b = Batch::default();
        assert_eq!(b.deadline(&limits), None);
        b.push(item(100), t0);
        b.push(item(100), t0 + Duration::from_micros(500));
        assert!(!b.is_full(&limits));
        assert_eq!(b.deadline(&limits), Some(t0 + Duration::from_micros(1000)));
        b.push(item(100), t0);
        assert!(b.is_full(&limits));
        let (items, opened) = b.take();
        assert_eq!((items.len(), opened), (3, Some(t0)));
        assert!(b.is_empty() && b.deadline(&limits).is_none());
        b.push(item(1500), t0);
        assert!(!b.is_full(&limits));
        b.push(item(600), t0);
        assert!(b.is_full(&limits), "byte bound");
    }
}
