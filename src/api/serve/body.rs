//! Request and response bodies as the router sees them: the request body with its pause limit
//! and minimum rate, and the response body that tells the connection when it is done.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::io::Phase;
use super::{ServeConfig, ServeCounters, bump};

/// A request body paused longer than `body_timeout`, or averaged less than `body_min_rate`
/// after it. The API answers 408; retrying over a better link helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request body not received in time (paused {paused:?}, {received} bytes in {elapsed:?})")]
pub struct BodyTimedOut {
    /// Bytes of the body that did arrive.
    pub received: u64,
    /// Time since the body's first byte was expected.
    pub elapsed: Duration,
    /// Time since the last byte.
    pub paused: Duration,
}

/// hyper's request body with the limits of `ServeConfig`.
pub(super) struct TimedBody {
    inner: Incoming,
    started: Instant,
    last: Instant,
    received: u64,
    gap: Duration,
    min_rate: u64,
    timer: Option<Pin<Box<Sleep>>>,
    counters: Arc<ServeCounters>,
    failed: bool,
}

impl TimedBody {
    pub(super) fn new(inner: Incoming, cfg: &ServeConfig) -> Self {
        let now = Instant::now();
        Self {
            inner,
            started: now,
            last: now,
            received: 0,
            gap: cfg.body_timeout,
            min_rate: cfg.body_min_rate,
            timer: None,
            counters: cfg.counters.clone(),
            failed: false,
        }
    }

    /// When the body is late: `gap` after the last byte, or when the bytes so far fall below
    /// the minimum rate after the first `gap`.
    fn deadline(&self) -> Instant {
        let pause = self.last + self.gap;
        if self.min_rate == 0 {
            return pause;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        pause.min(self.started + self.gap + earned)
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    this.last = Instant::now();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let at = this.deadline();
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.failed = true;
                bump(&this.counters.body_timeouts);
                let now = Instant::now();
                Poll::Ready(Some(Err(Box::new(BodyTimedOut {
                    received: this.received,
                    elapsed: now - this.started,
                    paused: now - this.last,
                }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The router's response body; dropping it (hyper does once the body is complete) ends the
/// connection's busy phase.
pub(super) struct ResponseBody {
    inner: axum::body::Body,
    phase: Arc<Phase>,
}

impl ResponseBody {
    pub(super) fn new(inner: axum::body::Body, phase: Arc<Phase>) -> Self {
        Self { inner, phase }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.phase.end_request();
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// True when `e` (an error from reading a request body, at any depth) is a [`BodyTimedOut`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    // Bounded: error chains are short; guard against a cycle anyway.
    for _ in 0..16 {
        let Some(err) = cur else { return false };
        if err.is::<BodyTimedOut>() {
            return true;
        }
        cur = err.source();
    }
    false
}
