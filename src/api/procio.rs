//! Process I/O routes (`docs/API.md`, "Process I/O (ext)"): the log with byte ranges and
//! live follow, stdin, terminal resize.
//!
//! Owns: HTTP range semantics (`Range`/`Content-Range`, 206/416), streaming the log from its
//! file with bounded memory per reader (one 64 KiB chunk in flight; hyper asks for the next
//! only when the connection took the previous), following without polling (woken by the
//! writer), and forwarding a request body to stdin as it arrives.
//! Leaves to `proc`: the log file, the stdin writer, the pty.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::{get, post};
use futures_util::StreamExt;

use super::types::*;
use super::{ApiError, AppState, decode};
use crate::proc::{ProcError, ProcessId, Record, StdinLease};

/// Bytes read from the log file per body chunk.
const CHUNK: usize = 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v0/processes/{id}/log", get(log))
        .route("/api/v0/processes/{id}/stdin", post(stdin))
        .route("/api/v0/processes/{id}/resize", post(resize))
}

/// A parsed `Range` header (one range of bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=N-`
    From(u64),
    /// `bytes=N-M` (inclusive)
    FromTo(u64, u64),
    /// `bytes=-K`: the last K bytes.
    Suffix(u64),
}

/// Parses a `Range` value. `Ok(None)`: a unit other than bytes or several ranges, which a
/// server may ignore (RFC 9110 §14.2), and we do (whole retained log). `Err`: malformed.
pub fn parse_range(value: &str) -> Result<Option<ByteRange>, String> {
    let value = value.trim();
    let Some((unit, spec)) = value.split_once('=') else {
        return Err(format!("Range {value:?} is not \"bytes=N-M\""));
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ok(None);
    }
    if spec.contains(',') {
        return Ok(None);
    }
    let bad = || format!("Range {value:?} is not \"bytes=N-\", \"bytes=N-M\" or \"bytes=-K\"");
    let (a, b) = spec.trim().split_once('-').ok_or_else(bad)?;
    let num = |s: &str| -> Result<u64, String> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    Ok(Some(match (a.trim(), b.trim()) {
        ("", k) => ByteRange::Suffix(num(k)?),
        (n, "") => ByteRange::From(num(n)?),
        (n, m) => {
            let (n, m) = (num(n)?, num(m)?);
            if m < n {
                return Err(bad());
            }
            ByteRange::FromTo(n, m)
        }
    }))
}

/// What to send: bytes `[from, to)` of the log; `to = None` means "until the process exits".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub from: u64,
    pub to: Option<u64>,
    pub partial: bool,
}

/// Why a range cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsatisfiable {
    /// Starts before the retained window.
    BeforeStart { start: u64, end: u64 },
    /// Starts at or past what exists (and we are not following a running process).
    PastEnd { end: u64 },
}

/// Decides the bytes to send for `range` over a log retaining `[start, end)`. Sans-IO.
pub fn plan(
    range: Option<ByteRange>,
    start: u64,
    end: u64,
    running: bool,
    follow: bool,
) -> Result<Plan, Unsatisfiable> {
    let waits = follow && running;
    let (from, to, partial) = match range {
        None => (start, None, false),
        Some(ByteRange::From(n)) => (n, None, true),
        Some(ByteRange::FromTo(n, m)) => (n, Some(m.saturating_add(1)), true),
        Some(ByteRange::Suffix(k)) => {
            if k == 0 {
                return Err(Unsatisfiable::PastEnd { end });
            }
            (end.saturating_sub(k).max(start), None, true)
        }
    };
    if from < start {
        return Err(Unsatisfiable::BeforeStart { start, end });
    }
    if partial && from >= end && !waits {
        return Err(Unsatisfiable::PastEnd { end });
    }
    let to = if waits {
        to
    } else {
        Some(to.unwrap_or(end).min(end))
    };
    Ok(Plan { from, to, partial })
}

async fn log(
    State(st): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<LogQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<AxumResponse, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "Invalid query.").with_detail(e.body_text())
    })?;
    let rec = st.manager.get(&ProcessId::from(id.as_str()))?;
    let range = match headers.get(header::RANGE) {
        None => None,
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Range header is not text."))?;
            parse_range(text).map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?
        }
    };
    // State first: an exited record's log is complete.
    let running = rec.is_running();
    let (start, end) = (rec.log.start(), rec.log.end());
    let plan = match plan(range, start, end, running, q.follow) {
        Ok(p) => p,
        Err(u) => return Ok(unsatisfiable(u, running)),
    };
    let mut resp = if q.follow {
        let mut r =
            Body::from_stream(follow_stream(rec.clone(), plan.from, plan.to)).into_response();
        r.headers_mut()
            .insert(LOG_OFFSET_HEADER, HeaderValue::from(plan.from));
        r
    } else {
        let to = plan.to.unwrap_or(end);
        let mut r =
            Body::from_stream(follow_stream(rec.clone(), plan.from, Some(to))).into_response();
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(to - plan.from));
        if plan.partial {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            let total = if running {
                "*".to_owned()
            } else {
                end.to_string()
            };
            let value = format!("bytes {}-{}/{total}", plan.from, to.saturating_sub(1));
            if let Ok(v) = HeaderValue::from_str(&value) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        r
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(LOG_START_HEADER, HeaderValue::from(start));
    Ok(resp)
}

fn unsatisfiable(u: Unsatisfiable, running: bool) -> AxumResponse {
    let (message, start, end) = match u {
        Unsatisfiable::BeforeStart { start, end } => (
            format!("Output before byte {start} is no longer retained."),
            start,
            end,
        ),
        Unsatisfiable::PastEnd { end } => (
            if running {
                format!("Only {end} bytes were written so far; use follow=true to wait for more.")
            } else {
                format!("The process wrote {end} bytes; the range starts at or past the end.")
            },
            end,
            end,
        ),
    };
    let log_start = match u {
        Unsatisfiable::BeforeStart { start, .. } => start,
        Unsatisfiable::PastEnd { .. } => start,
    };
    let mut r = (
        StatusCode::RANGE_NOT_SATISFIABLE,
        Json(RangeNotRetained { message, log_start }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{end}")) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    r
}

/// The log from `from` up to `to` (exclusive), or, with `to = None`, until the process has
/// exited and every byte was sent. Reads the file (never the writer's memory), wakes on the
/// writer's signal. A reader overtaken by the writer ends with an error, so the client sees a
/// broken body rather than wrong bytes, and resumes into a 416 that names the new start.
fn follow_stream(
    rec: Arc<Record>,
    from: u64,
    to: Option<u64>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    struct S {
        rec: Arc<Record>,
        pos: u64,
        to: Option<u64>,
        log_rx: tokio::sync::watch::Receiver<u64>,
        exit_rx: tokio::sync::watch::Receiver<Option<crate::proc::Exit>>,
    }
    let s = S {
        log_rx: rec.log.subscribe(),
        exit_rx: rec.subscribe(),
        rec,
        pos: from,
        to,
    };
    futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if s.to.is_some_and(|t| s.pos >= t) {
                return None;
            }
            // Mark both signals seen before looking, so no write or exit is missed.
            s.log_rx.borrow_and_update();
            let exited = s.exit_rx.borrow_and_update().is_some();
            let end = s.rec.log.end();
            if s.pos < end {
                let want = (end - s.pos).min(s.to.map_or(u64::MAX, |t| t - s.pos));
                let mut buf = vec![0u8; (want as usize).min(CHUNK)];
                return match s.rec.log.read_at(s.pos, &mut buf) {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        s.pos += n as u64;
                        Some((Ok(Bytes::from(buf)), s))
                    }
                    Err(g) => {
                        let e = std::io::Error::other(format!(
                            "log overwritten: the reader fell behind (retained from byte {})",
                            g.start
                        ));
                        s.to = Some(s.pos);
                        Some((Err(e), s))
                    }
                };
            }
            if exited {
                return None;
            }
            tokio::select! {
                r = s.log_rx.changed() => { if r.is_err() { return None; } }
                r = s.exit_rx.changed() => { if r.is_err() { return None; } }
            }
        }
    })
}

async fn stdin(
    State(st): State<AppState>,
    ctx: super::trust::Ctx,
    Path(id): Path<String>,
    query: Result<Query<StdinQuery>, QueryRejection>,
    body: Body,
) -> Result<AxumResponse, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "Invalid query.").with_detail(e.body_text())
    })?;
    let timeout = Duration::from_millis(
        q.timeout_ms
            .unwrap_or(STDIN_TIMEOUT_MS)
            .min(MAX_STDIN_TIMEOUT_MS),
    );
    let rec = st.manager.get(&ProcessId::from(id.as_str()))?;
    let mut lease = StdinLease::open(&rec).await?;
    let mut data = body.into_data_stream();
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "Could not read the request body.")
                .with_detail(e.to_string())
        })?;
        match lease.write(&chunk, timeout).await {
            Ok(()) => {}
            Err(ProcError::StdinTimeout { id, after, written }) => {
                ctx.note(|e| e.bytes = Some(written));
                let message = format!(
                    "Process \"{id}\" did not read its stdin within {} ms; {written} bytes were written.",
                    after.as_millis()
                );
                return Ok((
                    StatusCode::REQUEST_TIMEOUT,
                    Json(StdinTimedOut { message, written }),
                )
                    .into_response());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if q.close {
        lease.close().await;
    }
    // The audit record gets the byte count, never the bytes.
    ctx.note(|e| e.bytes = Some(lease.written));
    Ok(Json(StdinResponse {
        written: lease.written,
    })
    .into_response())
}

async fn resize(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Response>, ApiError> {
    let size: TerminalSize = decode(body)?;
    if size.rows == 0 || size.cols == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Terminal rows and cols must be at least 1.",
        ));
    }
    let id = ProcessId::from(id.as_str());
    st.manager.resize(&id, size.rows, size.cols)?;
    Ok(Json(Response {
        message: format!(
            "Terminal of process \"{id}\" resized to {}x{}.",
            size.rows, size.cols
        ),
        detail: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges() {
        assert_eq!(parse_range("bytes=5-"), Ok(Some(ByteRange::From(5))));
        assert_eq!(parse_range("bytes=0-9"), Ok(Some(ByteRange::FromTo(0, 9))));
        assert_eq!(parse_range("bytes=-3"), Ok(Some(ByteRange::Suffix(3))));
        assert_eq!(parse_range(" BYTES = 7 - "), Ok(Some(ByteRange::From(7))));
        assert_eq!(parse_range("items=0-1"), Ok(None));
        assert_eq!(parse_range("bytes=0-1,4-5"), Ok(None));
        for bad in [
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-",
            "bytes=5-3",
            "bytes=1-x",
            "bytes=+1-",
        ] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plans_ranges_like_rfc_9110() {
        use Unsatisfiable::*;
        let p = |r, running, follow| plan(r, 10, 100, running, follow);
        let ok = |from, to, partial| Ok(Plan { from, to, partial });
        assert_eq!(p(None, false, false), ok(10, Some(100), false));
        assert_eq!(
            p(Some(ByteRange::From(50)), false, false),
            ok(50, Some(100), true)
        );
        assert_eq!(
            p(Some(ByteRange::FromTo(50, 59)), false, false),
            ok(50, Some(60), true)
        );
        // Beyond the end: clamped to what exists.
        assert_eq!(
            p(Some(ByteRange::FromTo(90, 500)), false, false),
            ok(90, Some(100), true)
        );
        assert_eq!(
            p(Some(ByteRange::Suffix(5)), false, false),
            ok(95, Some(100), true)
        );
        // A suffix longer than what is retained gives what is retained.
        assert_eq!(
            p(Some(ByteRange::Suffix(500)), true, false),
            ok(10, Some(100), true)
        );
        assert_eq!(
            p(Some(ByteRange::Suffix(0)), false, false),
            Err(PastEnd { end: 100 })
        );
        assert_eq!(
            p(Some(ByteRange::From(5)), false, false),
            Err(BeforeStart {
                start: 10,
                end: 100
            })
        );
        assert_eq!(
            p(Some(ByteRange::From(100)), false, false),
            Err(PastEnd { end: 100 })
        );
        assert_eq!(
            p(Some(ByteRange::From(100)), true, false),
            Err(PastEnd { end: 100 })
        );
        // Following a running process waits for bytes not yet written.
        assert_eq!(
            p(Some(ByteRange::From(150)), true, true),
            ok(150, None, true)
        );
        assert_eq!(
            p(Some(ByteRange::FromTo(150, 199)), true, true),
            ok(150, Some(200), true)
        );
        // Following an exited one ends at its end.
        assert_eq!(
            p(Some(ByteRange::From(150)), false, true),
            Err(PastEnd { end: 100 })
        );
        assert_eq!(p(None, false, true), ok(10, Some(100), false));
    }
}
