//! The Alertmanager sink: open failures become firing alerts in Prometheus Alertmanager
//! (`POST /api/v2/alerts`), closed ones become resolved alerts.
//!
//! The sink does not replay events one by one: it reconciles. Whenever a verdict or a
//! closed failure is published, and every `resend_ms` anyway, it reads the replicated
//! failures table and posts the whole current picture in one request:
//!
//! - every open alarm (`dead`, `link_fault`, `reporter_isolated`, `switch_down`,
//!   `router_down`) as a firing alert with `startsAt` = the verdict time and `endsAt` =
//!   now + 4 × `resend_ms`, so the alert stays firing while it is re-sent and expires on
//!   its own if every CMA node dies;
//! - every alarm closed within the last 4 × `resend_ms` as a resolved alert (`endsAt` =
//!   the close time).
//!
//! Because each post carries the current state, a failed post is simply retried (with
//! exponential back-off, 200 ms up to 10 s) and a new leader, whose sink starts empty,
//! re-sends everything on its first sync. Only the Raft leader posts. The queue of
//! wake-ups is bounded (a full queue drops the wake-up and counts it; the next sync
//! carries the state anyway), and a post carries at most `max_alerts` alerts: the rest
//! are counted as dropped.

use super::{SinkLabel, SinkMetrics};
use crate::tables;
use api::views::{evidence_brief, FailureKind, FailureRow, FailureState, HostRow};
use chrono::{SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Default interval between re-sends of the firing alerts.
pub const DEFAULT_RESEND_MS: u64 = 60_000;
/// Default cap on alerts in one post.
pub const DEFAULT_MAX_ALERTS: usize = 1000;
/// First retry delay after a failed post.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often a sink on a follower checks whether its node became the leader.
const LEADER_POLL: Duration = Duration::from_secs(1);

/// What the sink reads: the replicated tables and whether this node leads.
pub trait AlertSource: Send + Sync + 'static {
    /// Whether this node is the Raft leader (only the leader posts).
    fn is_leader(&self) -> bool;
    /// Every row of the failures table.
    fn failures(&self) -> Vec<FailureRow>;
    /// Every row of the hosts table (for the switch label).
    fn hosts(&self) -> Vec<HostRow>;
}

impl AlertSource for crate::door::Door {
    fn is_leader(&self) -> bool {
        crate::door::Replica::is_leader(&**self)
    }

    fn failures(&self) -> Vec<FailureRow> {
        tables::failures(&self.state())
    }

    fn hosts(&self) -> Vec<HostRow> {
        tables::hosts(&self.state())
    }
}

/// One alert as Alertmanager's v2 API takes it (`postableAlert`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    /// Identity of the alert.
    pub labels: BTreeMap<String, String>,
    /// Text for people.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339; in the past for a resolved alert.
    pub ends_at: String,
}

/// The settings [`plan`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanSettings {
    /// Interval between re-sends (µs).
    pub resend_us: u64,
    /// Labels added to every alert (the sink's own labels win on a clash).
    pub extra_labels: BTreeMap<String, String>,
}

fn rfc3339(us: u64) -> String {
    let us = i64::try_from(us).unwrap_or(i64::MAX);
    match Utc.timestamp_micros(us).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Alert name and severity of an alarm kind; None for the kinds that are recorded closed
/// (`false_alarm`, `recovered`, `left`), which never become alerts.
fn alarm(kind: FailureKind) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        FailureKind::Dead => ("RingwatchHostDead", "critical"),
        FailureKind::LinkFault => ("RingwatchLinkFault", "warning"),
        FailureKind::ReporterIsolated => ("RingwatchHostIsolated", "warning"),
        FailureKind::SwitchDown => ("RingwatchSwitchDown", "critical"),
        FailureKind::RouterDown => ("RingwatchRouterDown", "critical"),
        FailureKind::AgentDown => ("RingwatchAgentDown", "warning"),
        FailureKind::AgentFlapping => ("RingwatchAgentFlapping", "warning"),
        FailureKind::FalseAlarm | FailureKind::Recovered | FailureKind::Left => return None,
    })
}

/// The alerts to post at `now_us`: open alarms firing, alarms closed within the last
/// 4 × resend resolved. When an open and a closed failure carry the same labels (a host
/// that died again), the open one wins; among closed ones, the latest close.
pub fn plan(
    failures: &[FailureRow],
    hosts: &[HostRow],
    now_us: u64,
    settings: &PlanSettings,
) -> Vec<PostableAlert> {
    let window = settings.resend_us.saturating_mul(4);
    let switch_of: BTreeMap<u64, &str> = hosts
        .iter()
        .filter_map(|h| h.switch.as_deref().map(|s| (h.id, s)))
        .collect();
    // Labels -> (open, closed_us, alert).
    let mut chosen: BTreeMap<BTreeMap<String, String>, (bool, u64, PostableAlert)> =
        BTreeMap::new();
    for f in failures {
        let Some((name, severity)) = alarm(f.kind) else {
            continue;
        };
        let open = f.state == FailureState::Open;
        let closed_us = f.closed_us.unwrap_or(now_us);
        if !open && closed_us.saturating_add(window) < now_us {
            continue;
        }
        let mut labels = settings.extra_labels.clone();
        labels.insert("alertname".into(), name.into());
        labels.insert("severity".into(), severity.into());
        labels.insert("kind".into(), f.kind.as_str().to_string());
        labels.insert("subject".into(), f.subject.clone());
        labels.insert(
            "hosts".into(),
            f.hosts
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        match f.kind {
            FailureKind::SwitchDown => {
                labels.insert("switch".into(), f.subject.clone());
            }
            FailureKind::RouterDown => {
                labels.insert("router".into(), f.subject.clone());
            }
            _ => {
                // The hosts' switch, when they share one.
                let mut switches: Vec<&str> = f
                    .hosts
                    .iter()
                    .filter_map(|h| switch_of.get(h).copied())
                    .collect();
                switches.sort_unstable();
                switches.dedup();
                if let [one] = switches.as_slice() {
                    labels.insert("switch".into(), (*one).to_string());
                }
            }
        }
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_string(), f.summary.clone());
        annotations.insert("evidence".to_string(), evidence_brief(&f.evidence));
        annotations.insert("failure_id".to_string(), f.id.to_string());
        let alert = PostableAlert {
            labels: labels.clone(),
            annotations,
            starts_at: rfc3339(f.at_us),
            ends_at: if open {
                rfc3339(now_us.saturating_add(window))
            } else {
                rfc3339(closed_us)
            },
        };
        let better = match chosen.get(&labels) {
            None => true,
            Some((was_open, was_closed, _)) => match (open, *was_open) {
                (true, false) => true,
                (false, true) => false,
                (true, true) => false,
                (false, false) => closed_us > *was_closed,
            },
        };
        if better {
            chosen.insert(labels, (open, closed_us, alert));
        }
    }
    let mut alerts: Vec<(bool, u64, PostableAlert)> = chosen.into_values().collect();
    // Firing first, so a cap on the batch drops resolved alerts before firing ones.
    alerts.sort_by_key(|(open, closed, _)| (!open, std::cmp::Reverse(*closed)));
    alerts.into_iter().map(|(_, _, a)| a).collect()
}

/// The `[[worker.sinks]]` settings of an Alertmanager sink.
#[derive(Clone, Debug)]
pub struct AlertmanagerSettings {
    /// `http://host:port` of Alertmanager (the sink posts to `/api/v2/alerts` under it).
    pub url: String,
    /// Interval between re-sends.
    pub resend: Duration,
    /// Most alerts in one post.
    pub max_alerts: usize,
    /// Labels added to every alert.
    pub labels: BTreeMap<String, String>,
}

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The sink's task: reconciles on every wake-up and every `resend`, while leading.
pub(super) async fn run(
    settings: AlertmanagerSettings,
    client: reqwest::Client,
    source: Arc<dyn AlertSource>,
    mut rx: mpsc::Receiver<super::Event>,
    metrics: SinkMetrics,
    label: SinkLabel,
) {
    let endpoint = format!("{}/api/v2/alerts", settings.url.trim_end_matches('/'));
    let plan_settings = PlanSettings {
        resend_us: settings.resend.as_micros() as u64,
        extra_labels: settings.labels.clone(),
    };
    let mut due = Instant::now();
    let mut backoff = BACKOFF_MIN;
    let mut backing_off_until = Instant::now();
    loop {
        tokio::select! {
            event = rx.recv() => {
                if event.is_none() {
                    return;
                }
                // Several wake-ups make one sync.
                while rx.try_recv().is_ok() {}
                due = due.min(backing_off_until.max(Instant::now()));
            }
            _ = tokio::time::sleep_until(due) => {}
        }
        if Instant::now() < due {
            continue;
        }
        if !source.is_leader() {
            due = Instant::now() + LEADER_POLL;
            continue;
        }
        let mut alerts = plan(
            &source.failures(),
            &source.hosts(),
            wall_us(),
            &plan_settings,
        );
        if alerts.len() > settings.max_alerts {
            let over = alerts.len() - settings.max_alerts;
            metrics.dropped.get_or_create(&label).inc_by(over as u64);
            alerts.truncate(settings.max_alerts);
        }
        if alerts.is_empty() {
            due = Instant::now() + settings.resend;
            continue;
        }
        let outcome = client.post(&endpoint).json(&alerts).send().await;
        let refused = match outcome {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("status {}", response.status())),
            Err(e) => Some(e.to_string()),
        };
        match refused {
            None => {
                metrics
                    .delivered
                    .get_or_create(&label)
                    .inc_by(alerts.len() as u64);
                backoff = BACKOFF_MIN;
                backing_off_until = Instant::now();
                due = Instant::now() + settings.resend;
            }
            Some(reason) => {
                tracing::warn!(sink = %label.sink, %reason, retry_in_ms = backoff.as_millis() as u64, "alertmanager post failed");
                metrics.failures.get_or_create(&label).inc();
                backing_off_until = Instant::now() + backoff;
                due = backing_off_until;
                backoff = (backoff * 2).min(BACKOFF_MAX).min(settings.resend);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_145_793_000_000;
    const MIN: u64 = 60_000_000;

    fn settings() -> PlanSettings {
        PlanSettings {
            resend_us: MIN,
            extra_labels: BTreeMap::from([("cluster".to_string(), "lab".to_string())]),
        }
    }

    fn row(id: u64, kind: &str, subject: &str, hosts: &[u64], closed: Option<u64>) -> FailureRow {
        FailureRow {
            id,
            // The JSON names are the typed kinds' serde names.
            kind: serde_json::from_value(serde_json::json!(kind)).unwrap(),
            subject: subject.into(),
            hosts: hosts.to_vec(),
            state: if closed.is_some() {
                FailureState::Closed
            } else {
                FailureState::Open
            },
            at_us: NOW - 10 * MIN,
            closed_us: closed,
            summary: format!("{kind} {subject}"),
            evidence: serde_json::from_value(serde_json::json!([
                { "Report": { "about": 5, "at": 1, "kind": "Dead", "reporter": 4 } }
            ]))
            .unwrap(),
        }
    }

    fn host(id: u64, switch: &str) -> HostRow {
        HostRow {
            id,
            hostname: format!("h{id}"),
            addr: "127.0.0.1:7500".parse().unwrap(),
            switch: Some(switch.into()),
            status: api::views::HostStatus::Up,
            since_us: 0,
            watchers: vec![],
            version: "0".into(),
        }
    }

    #[test]
    fn open_alarm_fires_with_labels_and_annotations() {
        let alerts = plan(
            &[row(7, "dead", "5", &[5], None)],
            &[host(5, "sw1")],
            NOW,
            &settings(),
        );
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        let labels: Vec<(&str, &str)> = a
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("alertname", "RingwatchHostDead"),
                ("cluster", "lab"),
                ("hosts", "5"),
                ("kind", "dead"),
                ("severity", "critical"),
                ("subject", "5"),
                ("switch", "sw1"),
            ]
        );
        assert_eq!(a.annotations["summary"], "dead 5");
        assert_eq!(a.annotations["evidence"], "reported dead by 4");
        assert_eq!(a.annotations["failure_id"], "7");
        assert_eq!(a.starts_at, "2026-12-01T17:13:13.000Z");
        // Firing for 4 re-send intervals unless re-sent.
        assert_eq!(a.ends_at, "2026-12-01T17:27:13.000Z");
        let json = serde_json::to_value(a).unwrap();
        assert!(json.get("startsAt").is_some() && json.get("endsAt").is_some());
    }

    #[test]
    fn closed_alarms_resolve_within_the_window_then_disappear() {
        let recent = row(1, "switch_down", "sw1", &[1, 2], Some(NOW - MIN));
        let old = row(2, "router_down", "r1", &[1, 2], Some(NOW - 5 * MIN));
        let alerts = plan(&[recent, old], &[], NOW, &settings());
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].labels["switch"], "sw1");
        assert_eq!(alerts[0].labels["alertname"], "RingwatchSwitchDown");
        assert_eq!(alerts[0].ends_at, "2026-12-01T17:22:13.000Z");
    }

    #[test]
    fn non_alarms_never_become_alerts() {
        let rows = [
            row(1, "false_alarm", "5", &[5], Some(NOW)),
            row(2, "recovered", "5", &[5], Some(NOW)),
            row(3, "left", "2", &[2], Some(NOW)),
        ];
        assert!(plan(&rows, &[], NOW, &settings()).is_empty());
    }

    #[test]
    fn a_host_that_died_again_fires_once() {
        let first = row(1, "dead", "5", &[5], Some(NOW - MIN));
        let again = row(9, "dead", "5", &[5], None);
        let alerts = plan(&[first, again], &[], NOW, &settings());
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].annotations["failure_id"], "9");
        assert_eq!(alerts[0].ends_at, "2026-12-01T17:27:13.000Z");
    }

    #[test]
    fn firing_alerts_come_first() {
        let rows = [
            row(1, "dead", "1", &[1], Some(NOW - MIN)),
            row(2, "dead", "2", &[2], None),
        ];
        let alerts = plan(&rows, &[], NOW, &settings());
        assert_eq!(alerts[0].labels["subject"], "2");
        assert_eq!(alerts[1].labels["subject"], "1");
    }

    #[test]
    fn hosts_on_different_switches_get_no_switch_label() {
        let alerts = plan(
            &[row(1, "link_fault", "1-2", &[1, 2], None)],
            &[host(1, "sw1"), host(2, "sw2")],
            NOW,
            &settings(),
        );
        assert!(!alerts[0].labels.contains_key("switch"));
        assert_eq!(alerts[0].labels["severity"], "warning");
    }

    /// Tables held in memory, standing in for a node's replica; leadership switchable.
    #[derive(Default)]
    struct Tables {
        leader: std::sync::atomic::AtomicBool,
        failures: std::sync::Mutex<Vec<FailureRow>>,
    }

    impl AlertSource for Tables {
        fn is_leader(&self) -> bool {
            self.leader.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn failures(&self) -> Vec<FailureRow> {
            self.failures.lock().unwrap().clone()
        }
        fn hosts(&self) -> Vec<HostRow> {
            Vec::new()
        }
    }

    /// An HTTP receiver that refuses the first `refuse` posts with 500, then stores them.
    async fn receiver(refuse: usize) -> (String, Arc<std::sync::Mutex<Vec<Vec<PostableAlert>>>>) {
        use axum::{routing::post, Json, Router};
        let posts: Arc<std::sync::Mutex<Vec<Vec<PostableAlert>>>> = Arc::default();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let store = posts.clone();
        let app = Router::new().route(
            "/api/v2/alerts",
            post(move |Json(alerts): Json<Vec<PostableAlert>>| {
                let store = store.clone();
                let seen = seen.clone();
                async move {
                    if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < refuse {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    store.lock().unwrap().push(alerts);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), posts)
    }

    fn start(
        url: &str,
        max_alerts: usize,
        source: Arc<Tables>,
        metrics: &SinkMetrics,
    ) -> mpsc::Sender<super::super::Event> {
        let (tx, rx) = mpsc::channel(4);
        let settings = AlertmanagerSettings {
            url: url.to_string(),
            resend: Duration::from_secs(60),
            max_alerts,
            labels: BTreeMap::new(),
        };
        tokio::spawn(run(
            settings,
            reqwest::Client::new(),
            source,
            rx,
            metrics.clone(),
            SinkLabel { sink: "am".into() },
        ));
        tx
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn only_the_leader_posts_and_refused_posts_are_retried() {
        let (url, posts) = receiver(2).await;
        let tables = Arc::new(Tables::default());
        tables
            .failures
            .lock()
            .unwrap()
            .push(row(1, "dead", "5", &[5], None));
        let metrics = SinkMetrics::default();
        let label = SinkLabel { sink: "am".into() };
        let _tx = start(&url, 10, tables.clone(), &metrics);
        // A follower: nothing is posted.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(metrics.failures.get_or_create(&label).get(), 0);
        assert!(posts.lock().unwrap().is_empty());
        // Leader within the next poll: two refusals, retried with back-off, then stored.
        tables
            .leader
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // The receiver stores the post before the sink reads its answer and counts the
        // delivery: wait for both (under load the count comes measurably later).
        wait_for("a stored and counted post", || {
            !posts.lock().unwrap().is_empty() && metrics.delivered.get_or_create(&label).get() == 1
        })
        .await;
        assert_eq!(metrics.failures.get_or_create(&label).get(), 2);
        assert_eq!(metrics.delivered.get_or_create(&label).get(), 1);
        assert_eq!(posts.lock().unwrap()[0][0].labels["subject"], "5");
    }

    #[tokio::test]
    async fn a_verdict_event_syncs_at_once_and_excess_alerts_are_counted() {
        let (url, posts) = receiver(0).await;
        let tables = Arc::new(Tables::default());
        tables
            .leader
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let metrics = SinkMetrics::default();
        let label = SinkLabel { sink: "am".into() };
        let tx = start(&url, 1, tables.clone(), &metrics);
        // Nothing open: nothing posted, and the next re-send is a minute away.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(posts.lock().unwrap().is_empty());
        tables.failures.lock().unwrap().extend([
            row(1, "dead", "5", &[5], None),
            row(2, "dead", "6", &[6], None),
        ]);
        let event = super::super::Event {
            id: 1,
            at_us: NOW,
            kind: "verdict.dead".into(),
            summary: String::new(),
            data: serde_json::Value::Null,
        };
        tx.send(event).await.unwrap();
        wait_for("a post after the event", || {
            !posts.lock().unwrap().is_empty()
        })
        .await;
        assert_eq!(posts.lock().unwrap()[0].len(), 1);
        assert_eq!(metrics.dropped.get_or_create(&label).get(), 1);
    }
}
