//! SDK methods for process I/O: log ranges, a follow stream that resumes by itself, stdin,
//! terminal resize.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, HeaderValue, Method, header};

use super::pool::{Call, Streamed};
use super::{AgentConn, ClientError, Connect, encode_segment, status_error};
use crate::api::types::{
    LOG_START_HEADER, RangeNotRetained, Response, StdinResponse, TerminalSize,
};

/// A piece of a process's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Absolute offset of `bytes[0]`.
    pub from: u64,
    /// The log bytes from `from` on.
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
            headers: range_header(&range),
        };
        let limit = self.opts.request_timeout;
        let max = self.opts.max_response_bytes;
        let (status, headers, bytes) = tokio::time::timeout(limit, async {
            let mut r = self.pool.send_streaming(&call, Instant::now()).await?;
            let bytes = read_all(&mut r, max).await?;
            Ok::<_, ClientError>((r.status, r.headers, bytes))
        })
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
            body: Option<Streamed>,
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
                    match body.chunk().await {
                        None => return None, // the process exited and everything was sent
                        Some(Ok(data)) => {
                            if data.is_empty() {
                                continue;
                            }
                            st.pos += data.len() as u64;
                            st.failures = 0;
                            return Some((Ok(data), st));
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
                    headers: range_header(&format!("bytes={}-", st.pos)),
                };
                let opened = tokio::time::timeout(
                    st.conn.opts.request_timeout,
                    st.conn.pool.send_streaming(&call, Instant::now()),
                )
                .await;
                let mut resp = match opened {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) | Err(_) => {
                        st.failures += 1;
                        continue;
                    }
                };
                let status = resp.status;
                if status.is_success() {
                    st.body = Some(resp);
                    continue;
                }
                let bytes = read_all(&mut resp, 64 * 1024).await.unwrap_or_default();
                let headers = resp.headers;
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
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let call = Call {
            method: Method::POST,
            path: &path,
            body: Some(data),
            headers,
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

fn range_header(range: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(range) {
        h.insert(header::RANGE, v);
    }
    h
}

/// The whole body, refusing more than `max` bytes.
async fn read_all(r: &mut Streamed, max: usize) -> Result<Bytes, ClientError> {
    let mut out = Vec::new();
    while let Some(chunk) = r.chunk().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > max {
            return Err(ClientError::Http(
                format!("answer larger than {max} bytes; ask for a smaller range").into(),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
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
