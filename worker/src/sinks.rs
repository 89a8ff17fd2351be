//! Event sinks: where verdicts and state changes go besides the replicated event table.
//!
//! Each sink is chosen per event kind in the CMA config and runs on its own task behind a
//! bounded channel, so a slow or dead sink never blocks the worker: when a sink's queue is
//! full, the event is dropped for that sink and counted. Delivery is at least once across
//! leader changes (a new leader may deliver again the events the old one was delivering);
//! every event carries a stable id for receivers to deduplicate.
//!
//! The Alertmanager sink ([`alertmanager`]) is different: it reconciles the failures
//! table into Alertmanager's alerts rather than forwarding events one by one.

pub mod alertmanager;

pub use api::Event;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Which events a sink receives: a list of kind prefixes (`"verdict"` matches
/// `verdict.dead`); `"*"` or an empty list means every event.
fn wants(filter: &[String], kind: &str) -> bool {
    filter.is_empty()
        || filter.iter().any(|f| {
            f == "*"
                || kind == f
                || (kind.starts_with(f.as_str()) && kind.as_bytes().get(f.len()) == Some(&b'.'))
        })
}

/// Default bound of a sink's queue (events).
pub const DEFAULT_SINK_QUEUE: usize = 1024;
/// Default webhook request timeout.
pub const DEFAULT_WEBHOOK_TIMEOUT_MS: u64 = 2000;
/// Default number of webhook delivery attempts per event.
pub const DEFAULT_WEBHOOK_ATTEMPTS: u32 = 5;

fn default_queue() -> usize {
    DEFAULT_SINK_QUEUE
}
fn default_timeout_ms() -> u64 {
    DEFAULT_WEBHOOK_TIMEOUT_MS
}
fn default_attempts() -> u32 {
    DEFAULT_WEBHOOK_ATTEMPTS
}
fn default_alert_events() -> Vec<String> {
    vec!["verdict".into(), "failure".into()]
}
fn default_resend_ms() -> u64 {
    alertmanager::DEFAULT_RESEND_MS
}
fn default_max_alerts() -> usize {
    alertmanager::DEFAULT_MAX_ALERTS
}

/// A sink as written in the CMA config (`[[sinks]]` tables).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Log each event through tracing (journald under systemd).
    Log {
        #[serde(default)]
        events: Vec<String>,
    },
    /// Append each event as one JSON line to a file.
    Jsonl {
        path: PathBuf,
        #[serde(default)]
        events: Vec<String>,
        #[serde(default = "default_queue")]
        queue: usize,
    },
    /// POST each event as JSON to a URL, retrying with backoff.
    Webhook {
        url: String,
        #[serde(default)]
        events: Vec<String>,
        #[serde(default = "default_queue")]
        queue: usize,
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
        #[serde(default = "default_attempts")]
        attempts: u32,
    },
    /// Keep Prometheus Alertmanager's alerts in step with the failures table: open
    /// failures fire, closed ones resolve (see [`alertmanager`]). Only the leader posts.
    Alertmanager {
        /// Base URL of Alertmanager, e.g. `http://127.0.0.1:9093`.
        url: String,
        /// Events that trigger a sync at once (default: verdicts and closed failures).
        #[serde(default = "default_alert_events")]
        events: Vec<String>,
        /// Bound of the wake-up queue.
        #[serde(default = "default_queue")]
        queue: usize,
        /// Timeout of one post in ms.
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
        /// Interval between re-sends of the firing alerts, in ms (at least 1000; default
        /// 60000). Firing alerts carry `endsAt` = now + 4 × this.
        #[serde(default = "default_resend_ms")]
        resend_ms: u64,
        /// Most alerts in one post; the rest are dropped and counted.
        #[serde(default = "default_max_alerts")]
        max_alerts: usize,
        /// Labels added to every alert, e.g. `{ cluster = "prod" }`.
        #[serde(default)]
        labels: std::collections::BTreeMap<String, String>,
    },
}

impl SinkConfig {
    fn name(&self) -> String {
        match self {
            SinkConfig::Log { .. } => "log".into(),
            SinkConfig::Jsonl { path, .. } => format!("jsonl:{}", path.display()),
            SinkConfig::Webhook { url, .. } => format!("webhook:{url}"),
            SinkConfig::Alertmanager { url, .. } => format!("alertmanager:{url}"),
        }
    }

    fn events(&self) -> &[String] {
        match self {
            SinkConfig::Log { events }
            | SinkConfig::Jsonl { events, .. }
            | SinkConfig::Webhook { events, .. }
            | SinkConfig::Alertmanager { events, .. } => events,
        }
    }

    fn queue(&self) -> usize {
        match self {
            SinkConfig::Log { .. } => DEFAULT_SINK_QUEUE,
            SinkConfig::Jsonl { queue, .. }
            | SinkConfig::Webhook { queue, .. }
            | SinkConfig::Alertmanager { queue, .. } => (*queue).max(1),
        }
    }
}

/// Label of the sink counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

/// Counters of every sink, by sink name.
#[derive(Clone, Default)]
pub struct SinkMetrics {
    /// Events delivered.
    pub delivered: Family<SinkLabel, Counter>,
    /// Events dropped because the sink's queue was full or delivery gave up.
    pub dropped: Family<SinkLabel, Counter>,
    /// Failed delivery attempts (each retry counts).
    pub failures: Family<SinkLabel, Counter>,
}

impl SinkMetrics {
    /// Registers the counters under `ringwatch_sink_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ringwatch_sink_delivered",
            "Events delivered to a sink",
            self.delivered.clone(),
        );
        registry.register(
            "ringwatch_sink_dropped",
            "Events dropped by a sink (queue full or retries exhausted)",
            self.dropped.clone(),
        );
        registry.register(
            "ringwatch_sink_failures",
            "Failed delivery attempts to a sink",
            self.failures.clone(),
        );
    }
}

/// Why the sinks could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: {reason}")]
    Config { sink: String, reason: String },
}

struct SinkHandle {
    label: SinkLabel,
    events: Vec<String>,
    tx: mpsc::Sender<Event>,
}

/// The running sinks. `publish` never blocks.
pub struct Sinks {
    sinks: Vec<SinkHandle>,
    metrics: SinkMetrics,
}

impl Sinks {
    /// Starts one task per configured sink (needs a tokio runtime). `source` gives the
    /// Alertmanager sink the replicated tables; without it that sink type is refused.
    pub fn start(
        configs: &[SinkConfig],
        metrics: SinkMetrics,
        source: Option<std::sync::Arc<dyn alertmanager::AlertSource>>,
    ) -> Result<Sinks, SinkError> {
        let mut sinks = Vec::with_capacity(configs.len());
        for config in configs {
            let label = SinkLabel {
                sink: config.name(),
            };
            let (tx, rx) = mpsc::channel(config.queue());
            let task_metrics = metrics.clone();
            let task_label = label.clone();
            match config.clone() {
                SinkConfig::Log { .. } => {
                    tokio::spawn(run_log(rx, task_metrics, task_label));
                }
                SinkConfig::Jsonl { path, .. } => {
                    tokio::spawn(run_jsonl(path, rx, task_metrics, task_label));
                }
                SinkConfig::Webhook {
                    url,
                    timeout_ms,
                    attempts,
                    ..
                } => {
                    if !url.starts_with("http://") && !url.starts_with("https://") {
                        return Err(SinkError::Config {
                            sink: label.sink,
                            reason: "url must start with http:// or https://".into(),
                        });
                    }
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_millis(timeout_ms.max(1)))
                        .build()
                        .map_err(|e| SinkError::Config {
                            sink: label.sink.clone(),
                            reason: e.to_string(),
                        })?;
                    tokio::spawn(run_webhook(
                        client,
                        url,
                        attempts.max(1),
                        rx,
                        task_metrics,
                        task_label,
                    ));
                }
                SinkConfig::Alertmanager {
                    url,
                    timeout_ms,
                    resend_ms,
                    max_alerts,
                    labels,
                    ..
                } => {
                    let refuse = |reason: String| SinkError::Config {
                        sink: label.sink.clone(),
                        reason,
                    };
                    if !url.starts_with("http://") && !url.starts_with("https://") {
                        return Err(refuse("url must start with http:// or https://".into()));
                    }
                    let Some(source) = source.clone() else {
                        return Err(refuse("needs the worker's tables".into()));
                    };
                    let client = reqwest::Client::builder()
                        .timeout(Duration::from_millis(timeout_ms.max(1)))
                        .build()
                        .map_err(|e| refuse(e.to_string()))?;
                    let settings = alertmanager::AlertmanagerSettings {
                        url,
                        resend: Duration::from_millis(resend_ms.max(1000)),
                        max_alerts: max_alerts.max(1),
                        labels,
                    };
                    tokio::spawn(alertmanager::run(
                        settings,
                        client,
                        source,
                        rx,
                        task_metrics,
                        task_label,
                    ));
                }
            }
            sinks.push(SinkHandle {
                label,
                events: config.events().to_vec(),
                tx,
            });
        }
        Ok(Sinks { sinks, metrics })
    }

    /// Hands an event to every sink that wants it; a full sink drops it and counts.
    pub fn publish(&self, event: &Event) {
        for sink in &self.sinks {
            if !wants(&sink.events, &event.kind) {
                continue;
            }
            if sink.tx.try_send(event.clone()).is_err() {
                self.metrics.dropped.get_or_create(&sink.label).inc();
            }
        }
    }
}

async fn run_log(mut rx: mpsc::Receiver<Event>, metrics: SinkMetrics, label: SinkLabel) {
    while let Some(event) = rx.recv().await {
        tracing::warn!(
            event_id = event.id,
            kind = %event.kind,
            data = %event.data,
            "{}",
            event.summary
        );
        metrics.delivered.get_or_create(&label).inc();
    }
}

async fn run_jsonl(
    path: PathBuf,
    mut rx: mpsc::Receiver<Event>,
    metrics: SinkMetrics,
    label: SinkLabel,
) {
    while let Some(event) = rx.recv().await {
        let line = match serde_json::to_string(&event) {
            Ok(mut line) => {
                line.push('\n');
                line
            }
            Err(e) => {
                tracing::error!(sink = %label.sink, error = %e, "cannot encode event");
                metrics.dropped.get_or_create(&label).inc();
                continue;
            }
        };
        // Open per event: keeps working across log rotation and a file removed by hand.
        let written = async {
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await?;
            file.write_all(line.as_bytes()).await?;
            file.flush().await
        }
        .await;
        match written {
            Ok(()) => {
                metrics.delivered.get_or_create(&label).inc();
            }
            Err(e) => {
                tracing::error!(sink = %label.sink, error = %e, "cannot write event");
                metrics.failures.get_or_create(&label).inc();
                metrics.dropped.get_or_create(&label).inc();
            }
        }
    }
}

async fn run_webhook(
    client: reqwest::Client,
    url: String,
    attempts: u32,
    mut rx: mpsc::Receiver<Event>,
    metrics: SinkMetrics,
    label: SinkLabel,
) {
    while let Some(event) = rx.recv().await {
        let mut backoff = Duration::from_millis(200);
        let mut delivered = false;
        for attempt in 1..=attempts {
            match client.post(&url).json(&event).send().await {
                Ok(response) if response.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(response) => {
                    tracing::warn!(sink = %label.sink, status = %response.status(), attempt, "webhook refused event");
                }
                Err(e) => {
                    tracing::warn!(sink = %label.sink, error = %e, attempt, "webhook delivery failed");
                }
            }
            metrics.failures.get_or_create(&label).inc();
            if attempt < attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        if delivered {
            metrics.delivered.get_or_create(&label).inc();
        } else {
            metrics.dropped.get_or_create(&label).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u64, kind: &str) -> Event {
        Event {
            id,
            at_us: 1,
            kind: kind.into(),
            summary: format!("event {id}"),
            data: serde_json::json!({"id": id}),
        }
    }

    #[test]
    fn filters_by_kind_prefix() {
        let f = vec!["verdict".to_string()];
        assert!(wants(&f, "verdict.dead"));
        assert!(wants(&f, "verdict"));
        assert!(!wants(&f, "verdicts.dead"));
        assert!(!wants(&f, "host.joined"));
        assert!(wants(&[], "host.joined"));
        assert!(wants(&["*".to_string()], "host.joined"));
    }

    #[test]
    fn parses_config_and_refuses_unknown_keys() {
        #[derive(Deserialize)]
        struct File {
            sinks: Vec<SinkConfig>,
        }
        let ok: File = toml::from_str(
            r#"
            [[sinks]]
            type = "log"
            [[sinks]]
            type = "jsonl"
            path = "/tmp/x.jsonl"
            events = ["verdict"]
            [[sinks]]
            type = "webhook"
            url = "http://127.0.0.1:1/hook"
            [[sinks]]
            type = "alertmanager"
            url = "http://127.0.0.1:9093"
            resend_ms = 5000
            labels = { cluster = "lab" }
            "#,
        )
        .unwrap();
        assert_eq!(ok.sinks.len(), 4);
        match &ok.sinks[3] {
            SinkConfig::Alertmanager {
                events, max_alerts, ..
            } => {
                assert_eq!(events, &["verdict".to_string(), "failure".to_string()]);
                assert_eq!(*max_alerts, alertmanager::DEFAULT_MAX_ALERTS);
            }
            other => panic!("{other:?}"),
        }
        // Without the worker's tables the Alertmanager sink cannot run.
        let refused = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                Sinks::start(&ok.sinks[3..], SinkMetrics::default(), None).is_err()
            });
        assert!(refused);
        let bad = toml::from_str::<File>("[[sinks]]\ntype = \"log\"\ncolour = 1\n");
        assert!(bad.is_err());
        let bad = toml::from_str::<File>("[[sinks]]\ntype = \"carrier-pigeon\"\n");
        assert!(bad.is_err());
    }

    #[tokio::test]
    async fn jsonl_sink_writes_matching_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let metrics = SinkMetrics::default();
        let sinks = Sinks::start(
            &[SinkConfig::Jsonl {
                path: path.clone(),
                events: vec!["verdict".into()],
                queue: 16,
            }],
            metrics.clone(),
            None,
        )
        .unwrap();
        sinks.publish(&event(1, "verdict.dead"));
        sinks.publish(&event(2, "host.joined"));
        sinks.publish(&event(3, "verdict.switch_down"));
        let label = SinkLabel {
            sink: format!("jsonl:{}", path.display()),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while metrics.delivered.get_or_create(&label).get() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "events not written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<Event>(l).unwrap().id)
            .collect();
        assert_eq!(ids, vec![1, 3]);
    }

    #[tokio::test]
    async fn dead_webhook_never_blocks_and_drops_are_counted() {
        // Port 9 on loopback: nothing listens, connections are refused.
        let metrics = SinkMetrics::default();
        let sinks = Sinks::start(
            &[SinkConfig::Webhook {
                url: "http://127.0.0.1:9/hook".into(),
                events: vec![],
                queue: 2,
                timeout_ms: 100,
                attempts: 2,
            }],
            metrics.clone(),
            None,
        )
        .unwrap();
        let started = std::time::Instant::now();
        for id in 0..100 {
            sinks.publish(&event(id, "verdict.dead"));
        }
        // Publishing 100 events to a dead sink returns at once.
        assert!(started.elapsed() < Duration::from_secs(1));
        let label = SinkLabel {
            sink: "webhook:http://127.0.0.1:9/hook".into(),
        };
        assert!(metrics.dropped.get_or_create(&label).get() >= 90);
    }

    #[tokio::test]
    async fn webhook_delivers_to_a_live_receiver() {
        use axum::{routing::post, Json, Router};
        use std::sync::{Arc, Mutex};
        let received: Arc<Mutex<Vec<Event>>> = Arc::default();
        let store = received.clone();
        let app = Router::new().route(
            "/hook",
            post(move |Json(event): Json<Event>| {
                let store = store.clone();
                async move {
                    store.lock().unwrap().push(event);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sinks = Sinks::start(
            &[SinkConfig::Webhook {
                url: format!("http://{addr}/hook"),
                events: vec!["verdict".into()],
                queue: 16,
                timeout_ms: 2000,
                attempts: 3,
            }],
            SinkMetrics::default(),
            None,
        )
        .unwrap();
        sinks.publish(&event(7, "verdict.dead"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while received.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "webhook not called");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(received.lock().unwrap()[0].id, 7);
    }
}
