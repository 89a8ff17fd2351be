//! The bounded HTTP/1 accept loop of every daemon's HTTP listener (the `/metrics`
//! listener of [`crate::metrics`], the manager's admin API).
//!
//! A listener is reachable by whoever can reach its address, so [`serve_bounded`] bounds
//! what a client can make it spend: at most [`Bounds::max_connections`] connections at once
//! (further ones are closed at accept), request headers within
//! [`Bounds::header_read_timeout`], optionally a header buffer of
//! [`Bounds::max_buf_size`] and a whole connection within [`Bounds::connection_lifetime`].
//! Failed accepts (out of descriptors and the like) pause the loop for
//! [`ACCEPT_BACKOFF`] instead of spinning. Every refusal is reported to the caller's
//! [`Refusals`], which counts and logs it under its own names.

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Pause after a failed `accept` (typically `EMFILE`), so the loop does not spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What one client may make a listener spend.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// Time to receive a request's headers (also while a kept-alive connection idles).
    pub header_read_timeout: Duration,
    /// Largest buffer for a request's headers (`None`: hyper's default).
    pub max_buf_size: Option<usize>,
    /// Time a connection may stay open, keep-alive included (`None`: no bound).
    pub connection_lifetime: Option<Duration>,
}

/// What the listener does with each refusal: count it, log it (rate-limited where an
/// attacker could repeat it). One value serves the accept loop; each connection's task
/// gets a clone.
pub trait Refusals: Clone + Send + 'static {
    /// `accept` failed; the loop pauses [`ACCEPT_BACKOFF`] and goes on.
    fn accept_failed(&mut self, error: &std::io::Error);
    /// A connection beyond [`Bounds::max_connections`], closed at once.
    fn over_limit(&mut self, peer: SocketAddr);
    /// A connection ended with an error (`error.is_timeout()`: the header-read timeout).
    fn connection_failed(&self, peer: SocketAddr, error: &hyper::Error);
    /// A connection cut at [`Bounds::connection_lifetime`].
    fn lifetime_reached(&self, peer: SocketAddr);
}

/// Serves `service` on `listener` within `bounds`, reporting refusals to `refusals`;
/// returns only if the listener fails for good (it does not: failed accepts are reported
/// and retried after a pause).
pub async fn serve_bounded<S, B, R>(
    listener: TcpListener,
    bounds: Bounds,
    service: S,
    mut refusals: R,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    R: Refusals,
{
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read_timeout);
    if let Some(max) = bounds.max_buf_size {
        http.max_buf_size(max);
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                refusals.accept_failed(&e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refusals.over_limit(peer);
            continue;
        };
        let connection = http.serve_connection(TokioIo::new(stream), service.clone());
        let refusals = refusals.clone();
        tokio::spawn(async move {
            let ended = match bounds.connection_lifetime {
                Some(lifetime) => tokio::time::timeout(lifetime, connection).await,
                None => Ok(connection.await),
            };
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => refusals.connection_failed(peer, &e),
                Err(_) => refusals.lifetime_reached(peer),
            }
            drop(slot);
        });
    }
}
