//! The connection's byte stream as hyper sees it: read deadlines that depend on where the
//! connection is between requests, a send deadline, and the JSON body of hyper's automatic
//! answer to a request it cannot parse.
//!
//! Where the connection is ([`Phase`]) is told by the service and by hyper's calls: a request
//! was handed to the router (busy), hyper dropped its response body (finishing: the last bytes
//! may still sit in hyper's buffer), hyper flushed (idle). Bytes arriving while idle start the
//! next request's header deadline.
//!
//! Why the automatic answer is rewritten here: when hyper cannot parse a request line or header
//! it writes a bodiless `400 Bad Request` (or 414, 431) itself and closes; it offers no hook
//! for that answer. It is the only thing hyper writes while no request is busy or finishing
//! (every answer of the router is written before the flush that ends it, and the router's own
//! 400s carry a JSON body), so a bodiless 400, 414 or 431 head written then is that answer, and
//! is replaced with the same status and a JSON `{message, detail}`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::{Connection, ServeConfig, ServeCounters, bump};

/// Where a connection is between requests (shared by the stream and the service).
#[derive(Debug)]
pub(super) struct Phase(Mutex<State>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request's line and headers, which started arriving at this time (or the
    /// connection was accepted then).
    Head(Instant),
    /// Nothing in progress since this time (keep-alive).
    Idle(Instant),
    /// A request is with the router or its response is being written.
    Busy,
    /// The response body is done; hyper has not flushed its last bytes yet.
    Finishing,
}

impl Phase {
    pub(super) fn new() -> Self {
        Self(Mutex::new(State::Head(Instant::now())))
    }

    pub(super) fn begin_request(&self) {
        *self.0.lock() = State::Busy;
    }

    /// hyper dropped the response body of the busy request.
    pub(super) fn end_request(&self) {
        let mut s = self.0.lock();
        if *s == State::Busy {
            *s = State::Finishing;
        }
    }

    /// hyper flushed: a finished response is all written.
    fn flushed(&self) {
        let mut s = self.0.lock();
        if *s == State::Finishing {
            *s = State::Idle(Instant::now());
        }
    }

    fn get(&self) -> State {
        *self.0.lock()
    }

    /// Bytes arrived: an idle connection is now reading a request head.
    fn bytes_arrived(&self) {
        let mut s = self.0.lock();
        if let State::Idle(_) = *s {
            *s = State::Head(Instant::now());
        }
    }
}

/// A connection with the deadlines of `ServeConfig`.
pub(super) struct Guarded<C> {
    inner: C,
    phase: Arc<Phase>,
    header_timeout: Duration,
    idle_timeout: Duration,
    send_timeout: Duration,
    counters: Arc<ServeCounters>,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// Since when writes have been blocked (no progress).
    write_blocked: Option<Instant>,
    /// Bytes of a rewritten answer still to be written, and how many already are.
    pending: Vec<u8>,
    pending_done: usize,
}

impl<C: Connection> Guarded<C> {
    pub(super) fn new(inner: C, phase: Arc<Phase>, cfg: &ServeConfig) -> Self {
        Self {
            inner,
            phase,
            header_timeout: cfg.header_timeout,
            idle_timeout: cfg.idle_timeout,
            send_timeout: cfg.send_timeout,
            counters: cfg.counters.clone(),
            read_timer: None,
            write_timer: None,
            write_blocked: None,
            pending: Vec::new(),
            pending_done: 0,
        }
    }

    /// Writes what remains of a rewritten answer; Ready once all of it is out.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_done < self.pending.len() {
            let n = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pending_done..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_done += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// Arms `timer` for `at` and polls it: true once it fired.
fn fired(timer: &mut Option<Pin<Box<Sleep>>>, at: Instant, cx: &mut Context<'_>) -> bool {
    match timer {
        Some(t) => {
            if t.deadline() != at {
                t.as_mut().reset(at);
            }
        }
        None => *timer = Some(Box::pin(tokio::time::sleep_until(at))),
    }
    timer
        .as_mut()
        .is_some_and(|t| t.as_mut().poll(cx).is_ready())
}

impl<C: Connection> AsyncRead for Guarded<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let state = this.phase.get();
        let deadline = match state {
            State::Head(since) => Some(since + this.header_timeout),
            State::Idle(since) => Some(since + this.idle_timeout),
            State::Busy | State::Finishing => None,
        };
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.phase.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(at) = deadline else {
                    return Poll::Pending;
                };
                if Instant::now() < at && !fired(&mut this.read_timer, at, cx) {
                    return Poll::Pending;
                }
                match state {
                    State::Idle(_) => {
                        // A normal end of a keep-alive connection: EOF, hyper closes with FIN.
                        bump(&this.counters.idle_closes);
                        Poll::Ready(Ok(()))
                    }
                    _ => {
                        bump(&this.counters.header_timeouts);
                        this.inner.set_reset_on_close();
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "request headers not received in time",
                        )))
                    }
                }
            }
        }
    }
}

impl<C: Connection> AsyncWrite for Guarded<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if matches!(this.phase.get(), State::Head(_) | State::Idle(_))
            && let Some(answer) = rewrite_automatic_answer(data)
        {
            bump(&this.counters.malformed_requests);
            this.pending = answer;
            this.pending_done = 0;
            // Reported as written; the replacement goes out on this and later calls.
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(data.len()));
        }
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Pending => {
                let since = *this.write_blocked.get_or_insert_with(Instant::now);
                let at = since + this.send_timeout;
                if Instant::now() < at && !fired(&mut this.write_timer, at, cx) {
                    return Poll::Pending;
                }
                bump(&this.counters.send_timeouts);
                this.inner.set_reset_on_close();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read the response in time",
                )))
            }
            ready => {
                this.write_blocked = None;
                ready
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        this.phase.flushed();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// hyper's automatic answers to unparsable requests, with our message for each.
const AUTOMATIC: [(&str, &str, &str); 3] = [
    (
        "400 Bad Request",
        "Malformed HTTP request: the request line or a header is not valid HTTP/1.1.",
        "a method, target, version, header name or header value contains a byte HTTP does not allow (such as NUL or a control character), or the line is not `METHOD TARGET HTTP/1.1`",
    ),
    (
        "414 URI Too Long",
        "Request target is too long.",
        "the request line exceeds the server's buffer",
    ),
    (
        "431 Request Header Fields Too Large",
        "Request headers are too large.",
        "too many header fields (at most 100) or too many bytes of headers",
    ),
];

/// If `data` is hyper's bodiless automatic answer, the complete replacement to send instead.
fn rewrite_automatic_answer(data: &[u8]) -> Option<Vec<u8>> {
    let head_end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
    if head_end + 4 != data.len() {
        return None; // something follows the head: not a bodiless answer
    }
    let head = std::str::from_utf8(&data[..head_end]).ok()?;
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line.strip_prefix("HTTP/1.1 ")?;
    let (_, message, detail) = AUTOMATIC.iter().find(|(s, _, _)| *s == status)?;
    if !headers
        .split("\r\n")
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let body = serde_json::to_vec(&super::super::types::Response {
        message: (*message).to_owned(),
        detail: Some((*detail).to_owned()),
    })
    .ok()?;
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_automatic_answers_are_rewritten() {
        let auto = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite_automatic_answer(auto).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(out.contains("content-type: application/json\r\n"));
        let body = out.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("Malformed HTTP request")
        );
        let len: usize = out
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());

        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(rewrite_automatic_answer(big).is_some());
        for not_auto in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nextra",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"some body bytes",
            b"",
        ] {
            assert_eq!(rewrite_automatic_answer(not_auto), None);
        }
    }
}
