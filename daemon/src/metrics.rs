//! A small, bounded HTTP listener that serves `GET /metrics` (Prometheus text format) and
//! nothing else.
//!
//! It is reachable by whoever can reach its address, so it bounds what a client can make
//! it spend: at most [`Limits::max_connections`] connections at once (further ones are
//! closed at accept), request headers within [`Limits::header_timeout`], and a whole
//! connection within [`Limits::connection_lifetime`]. Refusals are counted by reason in
//! `metrics_listener_refused_total`.

use crate::http::{serve_bounded, Bounds, Refusals};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Content type of the Prometheus/OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one client may make the listener spend.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once (default 16).
    pub max_connections: usize,
    /// Time to receive a request's headers (default 5 s).
    pub header_timeout: Duration,
    /// Time a connection may stay open, keep-alive included (default 30 s).
    pub connection_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16,
            header_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(30),
        }
    }
}

/// The `reason` label of a refusal or error counter, shared by every daemon (here:
/// `connections`, over the limit, or `lifetime`, closed at the lifetime bound). A static
/// name, so counting a refusal during a flood allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why (a short stable name such as `bad_mac` or `connection_limit`).
    pub reason: &'static str,
}

impl Reason {
    /// The label for `reason`.
    pub fn of(reason: &'static str) -> Reason {
        Reason { reason }
    }
}

impl From<&'static str> for Reason {
    fn from(reason: &'static str) -> Reason {
        Reason { reason }
    }
}

/// The `kind` label of a counter by message kind (a report or command kind), shared by
/// every daemon.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// The kind's short stable name (`hb_dead`, `send_expect_hb`, ...).
    pub kind: &'static str,
}

impl From<&'static str> for Kind {
    fn from(kind: &'static str) -> Kind {
        Kind { kind }
    }
}

/// Counters of the listener, to register with the daemon's other metrics.
#[derive(Clone, Debug, Default)]
pub struct ListenerStats {
    refused: Family<Reason, Counter>,
}

impl ListenerStats {
    /// Registers the counters as `metrics_listener_refused_total{reason}`.
    pub fn register(&self, registry: &mut Registry) {
        for reason in ["connections", "lifetime"] {
            let _ = self.refused.get_or_create(&Reason::of(reason));
        }
        registry.register(
            "metrics_listener_refused",
            "Connections to the /metrics listener refused or cut, by reason",
            self.refused.clone(),
        );
    }

    fn count(&self, reason: &'static str) {
        self.refused.get_or_create(&Reason::of(reason)).inc();
    }
}

/// Encodes a registry in the text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode metrics");
        out.clear();
    }
    out
}

/// Serves `GET /metrics` with the text `render` returns, until the listener fails for
/// good. Accept errors (out of descriptors and the like) pause the loop briefly instead
/// of spinning.
pub async fn serve<F>(listener: TcpListener, limits: Limits, stats: ListenerStats, render: F)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let render = render.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(&request, &*render)) }
    });
    let bounds = Bounds {
        max_connections: limits.max_connections.max(1),
        header_read_timeout: limits.header_timeout,
        max_buf_size: None,
        connection_lifetime: Some(limits.connection_lifetime),
    };
    serve_bounded(listener, bounds, service, stats).await
}

impl Refusals for ListenerStats {
    fn accept_failed(&mut self, error: &std::io::Error) {
        tracing::warn!(%error, "metrics listener: accept failed");
    }

    fn over_limit(&mut self, _peer: SocketAddr) {
        self.count("connections");
    }

    fn connection_failed(&self, _peer: SocketAddr, _error: &hyper::Error) {}

    fn lifetime_reached(&self, _peer: SocketAddr) {
        self.count("lifetime");
    }
}

fn answer(request: &Request<Incoming>, render: &dyn Fn() -> String) -> Response<Full<Bytes>> {
    let (status, body) = if request.uri().path() != "/metrics" {
        (StatusCode::NOT_FOUND, String::from("not found\n"))
    } else if request.method() != Method::GET {
        (StatusCode::METHOD_NOT_ALLOWED, String::from("GET only\n"))
    } else {
        (StatusCode::OK, render())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if status == StatusCode::OK {
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(CONTENT_TYPE),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn start(limits: Limits) -> (std::net::SocketAddr, ListenerStats, Registry) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = ListenerStats::default();
        let mut registry = Registry::default();
        stats.register(&mut registry);
        let s = stats.clone();
        tokio::spawn(serve(listener, limits, s, || "up 1\n".to_string()));
        (addr, stats, registry)
    }

    #[tokio::test]
    async fn serves_metrics_and_nothing_else() {
        let (addr, _, _) = start(Limits::default()).await;
        let ok = get(addr, "/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains("openmetrics-text") && ok.ends_with("up 1\n"),
            "{ok}"
        );
        assert!(get(addr, "/admin").await.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_refused_and_slow_headers_cut() {
        let limits = Limits {
            max_connections: 2,
            header_timeout: Duration::from_millis(200),
            connection_lifetime: Duration::from_secs(30),
        };
        let (addr, _stats, registry) = start(limits).await;
        // Two clients that never finish their headers hold both slots...
        let mut idle = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
            idle.push(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...so a third is closed at once, and counted.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "connection over the limit must be closed");
        assert!(
            render(&registry).contains("metrics_listener_refused_total{reason=\"connections\"} 1")
        );
        // The header timeout closes the slow ones and frees their slots.
        for mut s in idle {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut [0u8; 512]))
                .await
                .expect("slow client not closed by the header timeout");
            let _ = n;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let answer = get(addr, "/metrics").await;
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "slots never freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
