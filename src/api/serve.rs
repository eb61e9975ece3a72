//! Serving the API router: an HTTP/1 connection loop (hyper) over a listener, with the limits
//! that keep slow, stuck or malformed clients from holding the agent.
//!
//! Owns, per connection:
//! - **header timeout**: a request line and headers must arrive within `header_timeout` of
//!   their first byte (of the connection's start, for its first request); otherwise the
//!   connection is reset (a slow-loris client holds nothing longer than that);
//! - **body timeout and minimum rate**: a request body may pause at most `body_timeout`, and
//!   after that grace must average `body_min_rate` bytes/s; otherwise the handler's read fails
//!   with [`BodyTimedOut`] (the API answers 408) and the connection closes;
//! - **idle timeout**: a keep-alive connection with no request in progress is closed (FIN)
//!   after `idle_timeout`;
//! - **send timeout**: a response the client does not read for `send_timeout` resets the
//!   connection;
//! - **400 for malformed requests**: hyper answers a request line or header it cannot parse
//!   with an empty 400 (414, 431) and closes; that answer is replaced by our JSON error, so the
//!   client learns what was wrong (see `io`);
//! - **lingering close**: a connection closed before its request was read entirely (a 413, a
//!   400, a 408) sends FIN after the answer and discards what the client still sends for
//!   `linger`, so the client reads the answer instead of an RST.
//!
//! Every timeout and malformed request is counted in [`ServeCounters`]. Callers' identity goes
//! into each request's extensions: `ConnectInfo<CallerAddr>` (what the API's filters read) and
//! [`Caller`] (address and WireGuard peer tag).
//!
//! Leaves to the caller: the router, the listener, when to stop (the cancellation token; on
//! cancel no new connection is accepted, in-flight requests finish, idle connections close) and
//! how long to wait for that.

mod body;
mod io;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

pub use self::body::{BodyTimedOut, is_body_timeout};
use self::body::{ResponseBody, TimedBody};
use self::io::{Guarded, Phase};
use super::CallerAddr;
use crate::netstack::PeerTag;

/// Limits of [`serve`] (see the module docs for what each does).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Bytes per second; 0 turns the minimum rate off (the pause limit stays).
    pub body_min_rate: u64,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    /// Longest lingering close.
    pub linger: Duration,
    /// Connections served at once; one accepted beyond it is closed at once and counted in
    /// `refused_connections`. `None`: the listener bounds them (the tunnel API's netstack caps
    /// sockets per peer and in all); a host TCP listener (`[metrics] listen`) sets it.
    pub max_connections: Option<usize>,
    /// Shared by every connection of this server (and of other servers given the same `Arc`).
    pub counters: Arc<ServeCounters>,
}

impl Default for ServeConfig {
    /// The `[api]` defaults of `config::Api`, and a 5 s lingering close (enough for a client
    /// to read a short answer; bounded so it cannot hold a socket).
    fn default() -> Self {
        Self::from_api(&crate::config::Api::default())
    }
}

impl ServeConfig {
    /// The limits an `[api]` section sets, with fresh counters.
    pub fn from_api(api: &crate::config::Api) -> Self {
        Self {
            header_timeout: api.header_timeout,
            body_timeout: api.body_timeout,
            body_min_rate: api.body_min_rate,
            idle_timeout: api.idle_timeout,
            send_timeout: api.send_timeout,
            linger: Duration::from_secs(5),
            max_connections: None,
            counters: Arc::new(ServeCounters::default()),
        }
    }
}

/// What the server counts; monotonic. Read with [`ServeCounters::snapshot`].
#[derive(Debug, Default)]
pub struct ServeCounters {
    connections: AtomicU64,
    requests: AtomicU64,
    header_timeouts: AtomicU64,
    body_timeouts: AtomicU64,
    idle_closes: AtomicU64,
    send_timeouts: AtomicU64,
    malformed_requests: AtomicU64,
    refused_connections: AtomicU64,
}

/// A snapshot of [`ServeCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Connections accepted.
    pub connections: u64,
    /// Requests handed to the router.
    pub requests: u64,
    /// Connections reset because a request line and headers did not arrive in time.
    pub header_timeouts: u64,
    /// Requests whose body paused too long or arrived too slowly (answered 408).
    pub body_timeouts: u64,
    /// Keep-alive connections closed after `idle_timeout` without a request.
    pub idle_closes: u64,
    /// Connections reset because the client did not read a response.
    pub send_timeouts: u64,
    /// Request lines or headers that could not be parsed (answered 400, 414 or 431).
    pub malformed_requests: u64,
    /// Connections closed unserved because `max_connections` were open.
    pub refused_connections: u64,
}

impl ServeCounters {
    pub fn snapshot(&self) -> ServeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServeStats {
            connections: get(&self.connections),
            requests: get(&self.requests),
            header_timeouts: get(&self.header_timeouts),
            body_timeouts: get(&self.body_timeouts),
            idle_closes: get(&self.idle_closes),
            send_timeouts: get(&self.send_timeouts),
            malformed_requests: get(&self.malformed_requests),
            refused_connections: get(&self.refused_connections),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Who is calling: inserted into every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The caller's (tunnel) address.
    pub addr: SocketAddr,
    /// The WireGuard peer whose session carried the connection (tunnel connections only).
    pub peer: Option<PeerTag>,
}

/// A connection [`serve`] can run: a byte stream that knows its caller and how to close.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn caller(&self) -> Caller;
    /// Close gracefully even with unread data, discarding what still arrives for `limit`.
    fn set_lingering_close(&mut self, limit: Duration);
    /// Close with RST instead of FIN.
    fn set_reset_on_close(&mut self);
}

impl Connection for crate::netstack::TcpStream {
    fn caller(&self) -> Caller {
        Caller {
            addr: self.peer_addr(),
            peer: self.peer_tag(),
        }
    }

    fn set_lingering_close(&mut self, limit: Duration) {
        crate::netstack::TcpStream::set_lingering_close(self, limit);
    }

    fn set_reset_on_close(&mut self) {
        crate::netstack::TcpStream::set_reset_on_close(self);
    }
}

/// Plain TCP: the host metrics listener (`[metrics] listen`, with `max_connections`), tests and
/// the loopback baseline benchmark serve on it. The kernel closes
/// with RST when unread data remains; no lingering close here.
impl Connection for tokio::net::TcpStream {
    fn caller(&self) -> Caller {
        Caller {
            addr: self
                .peer_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            peer: None,
        }
    }

    fn set_lingering_close(&mut self, _limit: Duration) {}

    fn set_reset_on_close(&mut self) {}
}

/// Serves `router` on every connection `listener` accepts until `cancel` fires, then lets
/// in-flight requests finish, closes idle connections and returns once all are gone (the
/// caller bounds that wait). Dropping the future stops accepting; connections already running
/// finish on their own.
pub async fn serve<L>(mut listener: L, router: Router, cfg: ServeConfig, cancel: CancellationToken)
where
    L: axum::serve::Listener,
    L::Io: Connection,
{
    let tracker = TaskTracker::new();
    loop {
        let (io, _addr) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            conn = listener.accept() => conn,
        };
        if let Some(max) = cfg.max_connections
            && tracker.len() >= max
        {
            // Closing at once (rather than leaving it in the kernel's backlog) keeps the
            // listener answering: a scraper retries, and nothing piles up.
            bump(&cfg.counters.refused_connections);
            tracing::debug!(
                max,
                "connection closed unserved: the connection limit is reached"
            );
            drop(io);
            continue;
        }
        bump(&cfg.counters.connections);
        tracker.spawn(connection(io, router.clone(), cfg.clone(), cancel.clone()));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// One connection, from accept to close.
async fn connection<C: Connection>(
    mut io: C,
    router: Router,
    cfg: ServeConfig,
    cancel: CancellationToken,
) {
    io.set_lingering_close(cfg.linger);
    let caller = io.caller();
    let phase = Arc::new(Phase::new());
    let guarded = Guarded::new(io, phase.clone(), &cfg);
    let counters = cfg.counters.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        phase.begin_request();
        bump(&counters.requests);
        let (mut parts, body) = req.into_parts();
        parts
            .extensions
            .insert(ConnectInfo(CallerAddr(caller.addr)));
        parts.extensions.insert(caller);
        let body = axum::body::Body::new(TimedBody::new(body, &cfg));
        let request = hyper::Request::from_parts(parts, body);
        let router = router.clone();
        let phase = phase.clone();
        async move {
            let Ok(response) = router.oneshot(request).await;
            Ok::<_, Infallible>(response.map(|b| ResponseBody::new(b, phase)))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None) // ours is in `io` (hyper's also runs while idle)
        .keep_alive(true)
        .serve_connection(TokioIo::new(guarded), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(caller = %caller.addr, error = %e, "API connection ended with an error");
    }
}
