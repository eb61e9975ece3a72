//! SDK methods for process I/O: log ranges, a follow stream that resumes by itself, stdin,
//! terminal resize.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use http::Method;
use http_body_util::BodyExt;

use super::pool::Call;
use super::{AgentConn, ClientError, Connect, encode_segment, status_error};
use crate::api::types::{
    LOG_START_HEADER, RangeNotRetained, Response, StdinResponse, TerminalSize,
};

/// A piece of a process's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Absolute offset of `bytes[0]`.
    pub from: u64,
    pub bytes: Bytes,
    /// First offset the agent still retains.
    pub log_start: u64,
    /// Total bytes written, once the process has exited (`None` while running).
    pub total: Option<u64>,
}

/// Consecutive failed reconnects after which a follow stream gives up.
const FOLLOW_RETRIES: u32 = 8;

impl<C: Connect> AgentConn<C> {
    /// `GET /api/v0/processes/{id}/log`: bytes `[from, to)` (`to = None`: to the current end).
    /// A start before the retained window is [`ClientError::NotRetained`].
    pub async fn log(&self, id: &str, from: u64, to: Option<u64>) -> Result<LogChunk, ClientError> {
        let path = format!("/api/v0/processes/{}/log", encode_segment(id));
        let range = match to {
            Some(t) if t <= from => {
                return Ok(LogChunk {
                    from,
                    bytes: Bytes::new(),
                    log_start: from,
                    total: None,
                });
            }
            Some(t) => format!("bytes={from}-{}", t - 1),
            None => format!("bytes={from}-"),
        };
        let call = Call {
            method: Method::GET,
            path: &path,
            body: None,
            range: Some(range),
            raw: false,
        };
        let limit = self.opts.request_timeout;
        let (status, headers, bytes) =
            tokio::time::timeout(limit, self.pool.send_full(&call, Instant::now()))
                .await
                .map_err(|_| ClientError::Timeout { after: limit })??;
        let log_start = header_u64(&headers, LOG_START_HEADER).unwrap_or(0);
        match status.as_u16() {
            200 | 206 => {
                let total = headers
                    .get(http::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.rsplit_once('/'))
                    .and_then(|(_, t)| t.parse().ok());
                Ok(LogChunk {
                    from: if status == 206 { from } else { log_start },
                    bytes,
                    log_start,
                    total,
                })
            }
            416 => Err(not_retained(&headers, &bytes, from)),
            _ => Err(status_error(status, &bytes)),
        }
    }

    /// `GET /api/v0/processes/{id}/log?follow=true` from offset `from`: every byte from there
    /// until the process has exited, exactly once and in order. A dropped connection is resumed
    /// with `Range: bytes=<received>-` (up to 8 consecutive failures, backing off from 100 ms
    /// to 2 s). Ends with [`ClientError::NotRetained`] if the agent no longer has the next byte.
    pub fn follow(
        &self,
        id: &str,
        from: u64,
    ) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + 'static {
        struct St<C: Connect> {
            conn: AgentConn<C>,
            path: String,
            pos: u64,
            body: Option<hyper::body::Incoming>,
            failures: u32,
            done: bool,
        }
        let st = St {
            conn: self.clone(),
            path: format!("/api/v0/processes/{}/log?follow=true", encode_segment(id)),
            pos: from,
            body: None,
            failures: 0,
            done: false,
        };
        futures_util::stream::unfold(st, |mut st| async move {
            loop {
                if st.done {
                    return None;
                }
                if let Some(body) = &mut st.body {
                    match body.frame().await {
                        None => return None, // the process exited and everything was sent
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data()
                                && !data.is_empty()
                            {
                                st.pos += data.len() as u64;
                                st.failures = 0;
                                return Some((Ok(data), st));
                            }
                            continue;
                        }
                        Some(Err(e)) => {
                            tracing::debug!("follow: connection lost at byte {}: {e}", st.pos);
                            st.body = None;
                            st.failures += 1;
                        }
                    }
                }
                if st.failures > FOLLOW_RETRIES {
                    st.done = true;
                    let e = ClientError::Http(
                        format!("follow gave up after {FOLLOW_RETRIES} reconnects").into(),
                    );
                    return Some((Err(e), st));
                }
                if st.failures > 0 {
                    let back = Duration::from_millis(100 << st.failures.min(5))
                        .min(Duration::from_secs(2));
                    tokio::time::sleep(back).await;
                }
                let call = Call {
                    method: Method::GET,
                    path: &st.path,
                    body: None,
                    range: Some(format!("bytes={}-", st.pos)),
                    raw: false,
                };
                let opened = tokio::time::timeout(
                    st.conn.opts.request_timeout,
                    st.conn.pool.stream(&call, Instant::now()),
                )
                .await;
                let resp = match opened {
                    Ok(Ok(r)) => r,
                    Ok(Err(ClientError::Status { .. })) | Ok(Err(_)) | Err(_) => {
                        st.failures += 1;
                        continue;
                    }
                };
                let status = resp.status();
                if status.is_success() {
                    st.body = Some(resp.into_body());
                    continue;
                }
                let headers = resp.headers().clone();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                st.done = true;
                if status == 416 {
                    // Everything was received already (the process ended at our offset).
                    let end = headers
                        .get(http::header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes */"))
                        .and_then(|t| t.parse::<u64>().ok());
                    let e = not_retained(&headers, &bytes, st.pos);
                    if end == Some(st.pos)
                        && !matches!(e, ClientError::NotRetained { log_start, .. } if log_start > st.pos)
                    {
                        return None;
                    }
                    return Some((Err(e), st));
                }
                return Some((Err(status_error(status, &bytes)), st));
            }
        })
    }

    /// `POST /api/v0/processes/{id}/stdin`: writes `data`, then closes stdin if `close`.
    /// Returns the bytes written.
    pub async fn stdin(&self, id: &str, data: Bytes, close: bool) -> Result<u64, ClientError> {
        let mut path = format!("/api/v0/processes/{}/stdin", encode_segment(id));
        if close {
            path.push_str("?close=true");
        }
        let call = Call {
            method: Method::POST,
            path: &path,
            body: Some(data),
            range: None,
            raw: true,
        };
        // The agent waits up to 30 s for a child that does not read.
        let limit = self.opts.request_timeout + Duration::from_secs(30);
        let (status, bytes) = tokio::time::timeout(limit, self.pool.send(&call, Instant::now()))
            .await
            .map_err(|_| ClientError::Timeout { after: limit })??;
        if status.is_success() {
            let r: StdinResponse = serde_json::from_slice(&bytes).map_err(ClientError::Decode)?;
            return Ok(r.written);
        }
        Err(status_error(status, &bytes))
    }

    /// `POST /api/v0/processes/{id}/resize`.
    pub async fn resize(&self, id: &str, rows: u16, cols: u16) -> Result<Response, ClientError> {
        let body = serde_json::to_vec(&TerminalSize { rows, cols }).map_err(ClientError::Decode)?;
        let path = format!("/api/v0/processes/{}/resize", encode_segment(id));
        self.call(Method::POST, path, Some(body), None).await
    }
}

fn header_u64(h: &http::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

fn not_retained(headers: &http::HeaderMap, body: &[u8], from: u64) -> ClientError {
    match serde_json::from_slice::<RangeNotRetained>(body) {
        Ok(r) if r.log_start > from => ClientError::NotRetained {
            message: r.message,
            log_start: r.log_start,
        },
        _ => {
            let _ = headers;
            status_error(http::StatusCode::RANGE_NOT_SATISFIABLE, body)
        }
    }
}
