//! The web console: a read-only page every `cma` node serves on its admin listener, for an
//! operator's browser or the wall screen (docs/console.md).
//!
//! - [`assets`]: the page itself (`/console/`: HTML, one script, one style sheet),
//!   embedded in the binary with `include_str!`: nothing is fetched from anywhere else,
//!   nothing is built at run time. The assets hold no data, so they are served without
//!   the admin token; the strict `Content-Security-Policy` lets the page load only its own
//!   script and style and talk only to the node that served it.
//! - [`live`]: `GET /console/live`, a server-sent event stream that says "the replicated
//!   state moved" (a [`Tick`]: applied index, term, leader, this node's role) at most
//!   every [`LiveLimits::min_interval`]. The page then reads the admin API's JSON
//!   (`/v1/*`, `/cluster/status`) with the token, as `cmactl` does. Mounted behind the
//!   admin token check by the caller.
//!
//! A stream is a long-lived connection, so the listener bounds them apart from ordinary
//! requests: at most [`LiveLimits::max_streams`] at once (more are answered 503 and
//! counted in `cma_console_live_refused_total`), each ends after
//! [`LiveLimits::lifetime`] (the page reconnects by itself), and an idle one carries a
//! keep-alive comment every [`LiveLimits::keepalive`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/console.js");
const APP_CSS: &str = include_str!("../assets/console.css");

/// The page may load its own script, style and JSON, and nothing else; no inline script,
/// no framing by another site.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// This node's role in the Raft cluster, as the console shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Leads the cluster: its worker runs.
    Leader,
    /// Follows a leader.
    #[default]
    Follower,
    /// Standing for election (no leader known).
    Candidate,
    /// A non-voting member catching up.
    Learner,
    /// Stopping.
    Shutdown,
}

/// What a live stream sends: where this node's replicated state stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// The node sending it.
    pub node_id: u64,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// The last log index it applied: the page reads the tables again when it moves.
    pub applied_index: u64,
}

/// What the live streams may cost the node.
#[derive(Clone, Copy, Debug)]
pub struct LiveLimits {
    /// Most streams open at once.
    pub max_streams: usize,
    /// Shortest time between two ticks of one stream (ticks in between are merged).
    pub min_interval: Duration,
    /// Keep-alive comment period of an idle stream.
    pub keepalive: Duration,
    /// A stream ends after this long; the page opens a new one.
    pub lifetime: Duration,
}

impl Default for LiveLimits {
    fn default() -> Self {
        LiveLimits {
            max_streams: 32,
            min_interval: Duration::from_millis(200),
            keepalive: Duration::from_secs(10),
            lifetime: Duration::from_secs(600),
        }
    }
}

/// The console's own series.
#[derive(Clone, Default)]
pub struct ConsoleMetrics {
    streams: Gauge,
    refused: Counter,
}

impl ConsoleMetrics {
    /// Registers `cma_console_live_streams` and `cma_console_live_refused_total`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("cma_console");
        sub.register(
            "live_streams",
            "Console live streams open",
            self.streams.clone(),
        );
        sub.register(
            "live_refused",
            "Console live streams refused because max_streams were open",
            self.refused.clone(),
        );
    }

    /// Streams open now.
    pub fn streams_open(&self) -> i64 {
        self.streams.get()
    }

    /// Streams refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }
}

/// The live stream's shared state: the node's ticks, the stream budget and the metrics.
#[derive(Clone)]
pub struct Live {
    ticks: watch::Receiver<Tick>,
    budget: Arc<Semaphore>,
    limits: LiveLimits,
    metrics: ConsoleMetrics,
}

impl Live {
    /// Streams ticks from `ticks` (the cma binary feeds it from the Raft metrics).
    pub fn new(ticks: watch::Receiver<Tick>, limits: LiveLimits, metrics: ConsoleMetrics) -> Live {
        Live {
            ticks,
            budget: Arc::new(Semaphore::new(limits.max_streams)),
            limits,
            metrics,
        }
    }
}

/// The page's assets: `/` redirects to `/console/`, which serves the page, its script and
/// its style. No data, so no token (the page asks for one when the API answers 401).
pub fn assets() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route(
            "/console/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/console.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/console.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /console/live`: the tick stream (mount it behind the admin token check).
pub fn live(live: Live) -> Router {
    Router::new()
        .route("/console/live", get(stream))
        .with_state(live)
}

/// Holds a stream's permit and counts it as open until the stream is dropped (the client
/// went away, the lifetime ended, or the node stops).
struct OpenStream {
    _permit: OwnedSemaphorePermit,
    metrics: ConsoleMetrics,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics.streams.dec();
    }
}

struct StreamState {
    ticks: watch::Receiver<Tick>,
    limits: LiveLimits,
    deadline: tokio::time::Instant,
    last_sent: Option<tokio::time::Instant>,
    _open: OpenStream,
}

async fn stream(axum::extract::State(live): axum::extract::State<Live>) -> Response {
    let Ok(permit) = live.budget.clone().try_acquire_owned() else {
        live.metrics.refused.inc();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "too many console live streams open",
        )
            .into_response();
    };
    live.metrics.streams.inc();
    let mut ticks = live.ticks.clone();
    ticks.mark_changed();
    let state = StreamState {
        ticks,
        limits: live.limits,
        deadline: tokio::time::Instant::now() + live.limits.lifetime,
        last_sent: None,
        _open: OpenStream {
            _permit: permit,
            metrics: live.metrics.clone(),
        },
    };
    let events = futures::stream::unfold(state, next_tick);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(live.limits.keepalive))
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Waits for the state to move (or the stream's end), spaced by `min_interval`.
async fn next_tick(
    mut s: StreamState,
) -> Option<(Result<Event, std::convert::Infallible>, StreamState)> {
    if let Some(last) = s.last_sent {
        let not_before = last + s.limits.min_interval;
        tokio::time::sleep_until(not_before.min(s.deadline)).await;
    }
    match tokio::time::timeout_at(s.deadline, s.ticks.changed()).await {
        Ok(Ok(())) => {}
        // The lifetime ended, or the node is stopping: end the stream; the page reconnects.
        Ok(Err(_)) | Err(_) => return None,
    }
    let tick = *s.ticks.borrow_and_update();
    s.last_sent = Some(tokio::time::Instant::now());
    let data = serde_json::to_string(&tick).unwrap_or_else(|_| "{}".into());
    Some((Ok(Event::default().event("tick").data(data)), s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use futures::StreamExt;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn limits(max_streams: usize) -> LiveLimits {
        LiveLimits {
            max_streams,
            min_interval: Duration::from_millis(50),
            keepalive: Duration::from_secs(10),
            lifetime: Duration::from_secs(5),
        }
    }

    async fn get(app: &Router, path: &str) -> Response {
        app.clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn assets_are_embedded_and_locked_down() {
        let app = assets();
        let page = get(&app, "/console/").await;
        assert_eq!(page.status(), StatusCode::OK);
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
        let body = page.into_body().collect().await.unwrap().to_bytes();
        let html = String::from_utf8(body.to_vec()).unwrap();
        // Nothing from elsewhere, no inline script: the CSP would block it.
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("console.js") && html.contains("console.css"));
        for path in ["/console/console.js", "/console/console.css"] {
            assert_eq!(get(&app, path).await.status(), StatusCode::OK, "{path}");
        }
        assert_eq!(get(&app, "/").await.status(), StatusCode::SEE_OTHER);
    }

    /// Reads the next SSE frame (up to the blank line) from the body.
    async fn frame(body: &mut axum::body::BodyDataStream) -> String {
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
                .await
                .expect("a frame within 5 s")
                .expect("stream open")
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        text
    }

    #[tokio::test]
    async fn a_stream_sends_the_state_then_each_move() {
        let (tx, rx) = watch::channel(Tick {
            node_id: 1,
            applied_index: 7,
            ..Tick::default()
        });
        let metrics = ConsoleMetrics::default();
        let app = live(Live::new(rx, limits(4), metrics.clone()));
        let response = get(&app, "/console/live").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(metrics.streams_open(), 1);
        let mut body = response.into_body().into_data_stream();
        let first = frame(&mut body).await;
        assert!(first.contains("event: tick"), "{first}");
        assert!(first.contains("\"applied_index\":7"), "{first}");
        tx.send_modify(|t| {
            t.applied_index = 9;
            t.role = Role::Leader;
        });
        let second = frame(&mut body).await;
        assert!(second.contains("\"applied_index\":9"), "{second}");
        assert!(second.contains("\"role\":\"leader\""), "{second}");
        drop(body);
        assert_eq!(
            metrics.streams_open(),
            0,
            "a closed stream gives its slot back"
        );
    }

    #[tokio::test]
    async fn streams_beyond_the_bound_are_refused_and_counted() {
        let (_tx, rx) = watch::channel(Tick::default());
        let metrics = ConsoleMetrics::default();
        let app = live(Live::new(rx, limits(2), metrics.clone()));
        let a = get(&app, "/console/live").await;
        let b = get(&app, "/console/live").await;
        assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
        let c = get(&app, "/console/live").await;
        assert_eq!(c.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(metrics.refused(), 1);
        assert_eq!(metrics.streams_open(), 2);
        drop(a);
        assert_eq!(get(&app, "/console/live").await.status(), StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_after_its_lifetime() {
        let (_tx, rx) = watch::channel(Tick::default());
        let app = live(Live::new(rx, limits(1), ConsoleMetrics::default()));
        let mut body = get(&app, "/console/live")
            .await
            .into_body()
            .into_data_stream();
        let _ = frame(&mut body).await;
        // Paused time jumps to the deadline: the stream ends (keep-alives aside).
        let ended = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.unwrap();
                assert!(chunk.starts_with(b":"), "only keep-alives before the end");
            }
        })
        .await;
        assert!(ended.is_ok(), "the stream ended");
    }
}
