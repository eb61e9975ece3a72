//! A keep-alive pool of HTTP/1 connections to one agent, on hyper's low-level client.
//!
//! Owns: opening connections through a [`Connect`] (bounded by the connect timeout), handing an
//! idle one to each request (most recently used first), taking it back once the answer was read
//! completely, discarding closed or long-idle ones, and one retry on a fresh connection when a
//! reused one turns out to have been closed by the agent before the request went out.
//! Requests go to `base + path`: the connector's [`Connect::base_path`] (empty on a node,
//! `/agents/<addr>` through the control daemon), whose own failures to reach the agent
//! ([`super::DAEMON_ERROR_HEADER`]) become the errors a direct transport would give.
//! [`Pool::send_raw`] sends any request with any body on a pooled connection and streams the
//! answer as a [`ResponseBody`], which takes the connection back when read to its end.
//! Leaves to the caller: timeouts of whole requests and what the answers mean.
//!
//! Why not `hyper_util`'s pooled client: it hands a finished connection back from a spawned
//! task, so a request sent right after the previous answer often finds the pool empty and opens
//! a second connection. Here a connection is back in the pool before the call returns, so
//! sequential calls always share one.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;

use super::{ClientError, Connect};

/// Errors a request or response body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of the pool's connections: any body, boxed, so that whole-JSON calls and
/// streamed requests (the control daemon forwarding uploads) share one pool.
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// Closes the pool's idle connections once they pass the idle timeout even when the pool is
/// not used again (each holds a socket and buffers on the agent). Ends with the pool. Without a
/// tokio runtime at hand, expiry happens on the next checkout/checkin only.
pub(crate) fn spawn_reaper<C: Connect>(pool: &Arc<Pool<C>>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Pool<C>> = Arc::downgrade(pool);
    let period = (pool.idle_timeout / 2).max(Duration::from_millis(100));
    rt.spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(pool) = weak.upgrade() else { return };
            let mut idle = pool.idle.lock();
            pool.expire(&mut idle);
        }
    });
}

/// An answer whose body is read piece by piece (see [`Pool::send_streaming`]).
pub(crate) struct Streamed {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
    body: hyper::body::Incoming,
    /// Returns the connection to the pool; run once the body ended.
    checkin: Option<Box<dyn FnOnce() + Send>>,
}

impl Streamed {
    /// The next piece of the body; `None` at its end.
    pub(crate) async fn chunk(&mut self) -> Option<Result<Bytes, ClientError>> {
        loop {
            match self.body.frame().await {
                None => {
                    if let Some(checkin) = self.checkin.take() {
                        checkin();
                    }
                    return None;
                }
                Some(Err(e)) => {
                    self.checkin = None; // a broken connection is not reused
                    return Some(Err(ClientError::Http(Box::new(e))));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
            }
        }
    }
}

/// One agent's connections.
pub(crate) struct Pool<C> {
    connector: C,
    addr: SocketAddr,
    /// The connector's path prefix for this agent.
    base: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    max_response_bytes: usize,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

/// A request, kept as parts so it can be sent again on another connection.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) path: &'a str,
    pub(crate) body: Option<Bytes>,
    /// Added after the defaults (and replacing them: e.g. a raw body's content type).
    pub(crate) headers: http::HeaderMap,
}

impl<C: Connect> Pool<C> {
    pub(crate) fn new(
        connector: C,
        addr: SocketAddr,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        max_response_bytes: usize,
    ) -> Self {
        Self {
            base: connector.base_path(addr),
            connector,
            addr,
            connect_timeout,
            idle_timeout,
            max_idle,
            max_response_bytes,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `call` and reads the whole answer. `started` is when the caller began (for the
    /// `waited` of an unreachable error).
    pub(crate) async fn send(
        &self,
        call: &Call<'_>,
        started: Instant,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let (resp, sender) = self.exchange(call, started).await?;
        let status = resp.status();
        let daemon = daemon_error_kind(resp.headers());
        let bytes = Limited::new(resp.into_body(), self.max_response_bytes)
            .collect()
            .await
            .map_err(ClientError::Http)?
            .to_bytes();
        self.checkin(sender);
        if let Some(kind) = daemon {
            return Err(self.daemon_error(&kind, status, &bytes, started));
        }
        Ok((status, bytes))
    }

    /// Sends `call` and returns the answer with its body unread: the connection goes back to
    /// the pool when [`Streamed::chunk`] has read the body to its end, and is closed if the
    /// body is dropped before.
    pub(crate) async fn send_streaming(
        self: &Arc<Self>,
        call: &Call<'_>,
        started: Instant,
    ) -> Result<Streamed, ClientError> {
        let (resp, sender) = self.exchange(call, started).await?;
        if let Some(kind) = daemon_error_kind(resp.headers()) {
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await
                .map_err(ClientError::Http)?
                .to_bytes();
            self.checkin(sender);
            return Err(self.daemon_error(&kind, status, &bytes, started));
        }
        let (parts, body) = resp.into_parts();
        let pool = Arc::downgrade(self);
        Ok(Streamed {
            status: parts.status,
            headers: parts.headers,
            body,
            checkin: Some(Box::new(move || {
                if let Some(pool) = pool.upgrade() {
                    pool.checkin(sender);
                }
            })),
        })
    }

    /// Sends `request` (any body: e.g. a streamed upload, which cannot be retried) on a new
    /// connection of its own, closed after the answer, whose body is read whole (bounded).
    pub(crate) async fn send_once<B>(
        &self,
        request: Request<B>,
        started: Instant,
    ) -> Result<(StatusCode, Bytes), ClientError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut sender = self.open::<B>(started).await?;
        let mut request = request;
        self.rebase(request.uri_mut())?;
        self.default_headers(request.headers_mut(), false);
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Http(Box::new(e)))?;
        let status = resp.status();
        let daemon = daemon_error_kind(resp.headers());
        let bytes = Limited::new(resp.into_body(), self.max_response_bytes)
            .collect()
            .await
            .map_err(ClientError::Http)?
            .to_bytes();
        if let Some(kind) = daemon {
            return Err(self.daemon_error(&kind, status, &bytes, started));
        }
        Ok((status, bytes))
    }

    /// Sends `call` on a pooled or new connection (see `send` for the one retry); returns the
    /// answer and the connection's sender, to be checked in once the body is read.
    async fn exchange(
        &self,
        call: &Call<'_>,
        started: Instant,
    ) -> Result<
        (
            http::Response<hyper::body::Incoming>,
            SendRequest<RequestBody>,
        ),
        ClientError,
    > {
        let (mut sender, reused) = match self.checkout().await {
            Some(s) => (s, true),
            None => (self.open(started).await?, false),
        };
        let resp = match sender.send_request(self.request(call)).await {
            Ok(r) => r,
            // The agent closed an idle connection just as we used it: the request was not
            // processed (canceled: not even written; incomplete: no answer to a GET), so
            // sending it again on a new connection is safe.
            Err(e)
                if reused
                    && (e.is_canceled()
                        || (e.is_incomplete_message() && call.method == Method::GET)) =>
            {
                sender = self.open(started).await?;
                sender
                    .send_request(self.request(call))
                    .await
                    .map_err(|e| ClientError::Http(Box::new(e)))?
            }
            Err(e) => return Err(ClientError::Http(Box::new(e))),
        };
        Ok((resp, sender))
    }

    fn request(&self, call: &Call<'_>) -> Request<RequestBody> {
        let body = Full::new(call.body.clone().unwrap_or_default())
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut req = Request::new(body);
        *req.method_mut() = call.method.clone();
        // An origin-form URI that `Call` builders only ever fill with encoded paths.
        *req.uri_mut() = format!("{}{}", self.base, call.path)
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        self.default_headers(req.headers_mut(), call.body.is_some());
        for (k, v) in &call.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        req
    }

    /// Host, user agent, accept, and a JSON content type when there is a body.
    fn default_headers(&self, h: &mut http::HeaderMap, json_body: bool) {
        if let Ok(v) = header::HeaderValue::from_str(&self.addr.to_string()) {
            h.insert(header::HOST, v);
        }
        h.insert(
            header::USER_AGENT,
            header::HeaderValue::from_static(concat!("wgagent/", env!("CARGO_PKG_VERSION"))),
        );
        h.entry(header::ACCEPT)
            .or_insert(header::HeaderValue::from_static("application/json"));
        if json_body {
            h.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
        }
    }

    /// Sends `req` (origin-form URI relative to the agent, any body) on a pooled or new
    /// connection and returns as soon as the answer's head arrived; the body streams. A reused
    /// connection the agent had closed before the request went out is replaced once, with the
    /// same request (hyper hands it back unsent).
    pub(crate) async fn send_raw(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        started: Instant,
    ) -> Result<Response<ResponseBody>, ClientError> {
        self.rebase(req.uri_mut())?;
        if let Ok(v) = header::HeaderValue::from_str(&self.addr.to_string()) {
            req.headers_mut().insert(header::HOST, v);
        }
        let (mut sender, mut reused) = match self.checkout().await {
            Some(s) => (s, true),
            None => (self.open(started).await?, false),
        };
        let resp = loop {
            match sender.try_send_request(req).await {
                Ok(r) => break r,
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        req = unsent;
                        sender = self.open(started).await?;
                        reused = false;
                    }
                    _ => return Err(ClientError::Http(Box::new(e.into_error()))),
                },
            }
        };
        if let Some(kind) = daemon_error_kind(resp.headers()) {
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await
                .map_err(ClientError::Http)?
                .to_bytes();
            self.checkin(sender);
            return Err(self.daemon_error(&kind, status, &bytes, started));
        }
        let (parts, body) = resp.into_parts();
        let pool: Arc<dyn Checkin> = self.clone();
        let mut body = ResponseBody {
            inner: body,
            done: Some((sender, pool)),
        };
        if body.inner.is_end_stream() {
            // Nothing to read (e.g. `Content-Length: 0`): the connection is free now.
            body.finish();
        }
        Ok(Response::from_parts(parts, body))
    }

    /// Puts the connector's base path in front of an origin-form URI.
    fn rebase(&self, uri: &mut http::Uri) -> Result<(), ClientError> {
        if self.base.is_empty() {
            return Ok(());
        }
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        *uri = format!("{}{pq}", self.base)
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::Http(Box::new(e)))?;
        Ok(())
    }

    /// The error the control daemon reported for the agent, as the variant a direct transport
    /// would have given: `unreachable` (nothing was sent) or a broken connection.
    fn daemon_error(
        &self,
        kind: &str,
        status: StatusCode,
        body: &[u8],
        started: Instant,
    ) -> ClientError {
        let ClientError::Status {
            message, detail, ..
        } = super::status_error(status, body)
        else {
            return super::status_error(status, body);
        };
        let text = match detail {
            Some(d) => format!("{message} ({d})"),
            None => message,
        };
        match kind {
            "unreachable" => ClientError::Unreachable {
                addr: self.addr,
                waited: started.elapsed(),
                source: std::io::Error::new(std::io::ErrorKind::NotConnected, text),
            },
            _ => ClientError::Http(text.into()),
        }
    }

    /// The most recently used live idle connection, if any.
    async fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        loop {
            let mut idle = self.idle.lock().pop()?;
            if idle.since.elapsed() > self.idle_timeout || idle.sender.is_closed() {
                continue; // dropping the sender closes the connection
            }
            // A connection whose previous answer was read completely is ready at once, or
            // reports that the agent closed it meanwhile.
            if idle.sender.ready().await.is_ok() {
                return Some(idle.sender);
            }
        }
    }

    fn checkin(&self, sender: SendRequest<RequestBody>) {
        let mut idle = self.idle.lock();
        self.expire(&mut idle);
        if idle.len() < self.max_idle && !sender.is_closed() {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Drops closed and long-idle connections (dropping a sender closes its connection).
    fn expire(&self, idle: &mut Vec<Idle>) {
        idle.retain(|i| !i.sender.is_closed() && i.since.elapsed() <= self.idle_timeout);
    }

    /// Opens a new connection (bounded by the connect timeout) and starts its HTTP/1 task,
    /// which ends when the connection closes or its sender is dropped.
    async fn open<B>(&self, started: Instant) -> Result<SendRequest<B>, ClientError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let unreachable = |source| ClientError::Unreachable {
            addr: self.addr,
            waited: started.elapsed(),
            source,
        };
        let stream =
            match tokio::time::timeout(self.connect_timeout, self.connector.connect(self.addr))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(unreachable(e)),
                Err(_) => {
                    return Err(unreachable(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {:?}", self.connect_timeout),
                    )));
                }
            };
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(Box::new(e)))?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, "agent connection ended: {e}");
            }
        });
        Ok(sender)
    }
}

/// The control daemon's marker on an answer it made for the agent, if any.
fn daemon_error_kind(h: &http::HeaderMap) -> Option<String> {
    h.get(super::DAEMON_ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Takes a connection back once its answer was read completely.
trait Checkin: Send + Sync {
    fn checkin(&self, sender: SendRequest<RequestBody>);
}

impl<C: Connect> Checkin for Pool<C> {
    fn checkin(&self, sender: SendRequest<RequestBody>) {
        Pool::checkin(self, sender);
    }
}

/// The streamed body of an answer from [`super::AgentConn::send`]. Read to its end, it returns
/// its connection to the pool; dropped earlier, it closes the connection (an HTTP/1 connection
/// with unread answer bytes cannot carry another request).
pub struct ResponseBody {
    inner: Incoming,
    done: Option<(SendRequest<RequestBody>, Arc<dyn Checkin>)>,
}

impl ResponseBody {
    fn finish(&mut self) {
        if let Some((sender, pool)) = self.done.take() {
            pool.checkin(sender);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(),
            // An error: the connection is broken; dropping the sender closes it.
            Poll::Ready(Some(Err(_))) => this.done = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}
