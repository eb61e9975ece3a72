//! The SDK's workspace-file methods: one per file route (`docs/API.md` "Workspace files").
//! JSON calls and small writes share the agent's connection pool; `read_file` streams its body
//! on a pooled connection (returned to the pool once read to the end); `write_file_stream`
//! uploads on a connection of its own (a streamed body cannot be retried on another one).

use std::time::Instant;

use bytes::Bytes;
use futures_core::Stream;
use http::{HeaderMap, HeaderValue, Method, Request, header};
use serde::de::DeserializeOwned;

use super::pool::{Call, Streamed};
use super::{AgentConn, ClientError, Connect, status_error};
use crate::api::file_types::{
    FileEditRequest, FileEditResponse, LsRequest, LsResponse, ReadFileLinesLimits,
    ReadFileLinesResponse, ResolvePathResponse, WriteFileResponse,
};

/// What a write requires of the file it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteCondition<'a> {
    /// Replace whatever is there (or create it).
    #[default]
    Always,
    /// `If-Match`: the file's content hash must be this one (from a read's `ETag`/`hash`);
    /// `"*"`: the file must exist. Otherwise the agent answers 412 with the current hash.
    IfMatch(&'a str),
    /// `If-None-Match: *`: create only; 412 if the file exists.
    IfAbsent,
}

/// A file being downloaded (`read_file`): headers now, bytes as they arrive.
pub struct FileDownload {
    /// From the file name's extension; `application/octet-stream` when unknown.
    pub content_type: String,
    /// The whole file's content hash (the `ETag`), when the agent computed one.
    pub hash: Option<String>,
    /// The whole file's size.
    pub file_size: Option<u64>,
    /// Bytes this download carries (`Content-Length`).
    pub len: Option<u64>,
    body: Streamed,
    timeout: std::time::Duration,
}

impl FileDownload {
    /// The next piece; `None` at the end. Each piece must arrive within the request timeout.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, ClientError>> {
        match tokio::time::timeout(self.timeout, self.body.chunk()).await {
            Ok(c) => c,
            Err(_) => Some(Err(ClientError::Timeout {
                after: self.timeout,
            })),
        }
    }

    /// Reads the rest into memory (at most `max` bytes: more is an error).
    pub async fn bytes(mut self, max: usize) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await {
            let c = c?;
            if out.len() + c.len() > max {
                return Err(ClientError::Http(
                    format!("file larger than the {max} bytes asked for").into(),
                ));
            }
            out.extend_from_slice(&c);
        }
        Ok(out)
    }
}

impl<C: Connect> AgentConn<C> {
    /// `POST /api/v0/list-directory`: `path` (absolute) when given, else `req`'s components
    /// under the root or home directory.
    pub async fn list_directory(
        &self,
        path: Option<&str>,
        req: &LsRequest,
    ) -> Result<LsResponse, ClientError> {
        let mut uri = "/api/v0/list-directory".to_owned();
        if let Some(p) = path {
            uri.push_str(&format!("?path={}", encode_query(p)));
        }
        let body = serde_json::to_vec(req).map_err(ClientError::Decode)?;
        self.file_call(
            Method::POST,
            &uri,
            Some(Bytes::from(body)),
            HeaderMap::new(),
        )
        .await
    }

    /// `GET /api/v0/resolve-path`: `path` with symbolic links in its existing part resolved.
    pub async fn resolve_path(&self, path: &str) -> Result<String, ClientError> {
        let uri = format!("/api/v0/resolve-path?path={}", encode_query(path));
        let r: ResolvePathResponse = self
            .file_call(Method::GET, &uri, None, HeaderMap::new())
            .await?;
        Ok(r.resolved_path)
    }

    /// `GET /api/v0/read-file`: `limit` bytes (0: to the end) from `offset`, streamed.
    pub async fn read_file(
        &self,
        path: &str,
        offset: u64,
        limit: u64,
    ) -> Result<FileDownload, ClientError> {
        let uri = format!(
            "/api/v0/read-file?path={}&offset={offset}&limit={limit}",
            encode_query(path)
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let call = Call {
            method: Method::GET,
            path: &uri,
            body: None,
            headers,
        };
        let limit = self.opts.request_timeout;
        let mut body = tokio::time::timeout(limit, self.pool.send_streaming(&call, Instant::now()))
            .await
            .map_err(|_| ClientError::Timeout { after: limit })??;
        if !body.status.is_success() {
            let mut err = Vec::new();
            while let Some(Ok(c)) = body.chunk().await {
                if err.len() + c.len() > 64 * 1024 {
                    break;
                }
                err.extend_from_slice(&c);
            }
            return Err(status_error(body.status, &err));
        }
        let text =
            |h: &HeaderMap, n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(FileDownload {
            content_type: text(&body.headers, "content-type")
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            hash: text(&body.headers, "etag").map(|t| t.trim_matches('"').to_owned()),
            file_size: text(&body.headers, "wgagent-file-size").and_then(|v| v.parse().ok()),
            len: text(&body.headers, "content-length").and_then(|v| v.parse().ok()),
            timeout: limit,
            body,
        })
    }

    /// `GET /api/v0/read-file-lines`: numbered lines `offset..` (1-based; 0 means 1), at most
    /// `limit` (0: the limits' maximum). Failures come back as `success: false` with `error`.
    /// With `partial`, a page over the byte budget returns the lines that fit and
    /// `next_offset` instead of failing.
    pub async fn read_file_lines(
        &self,
        path: &str,
        offset: u64,
        limit: u64,
        limits: &ReadFileLinesLimits,
        partial: bool,
    ) -> Result<ReadFileLinesResponse, ClientError> {
        let mut uri = format!(
            "/api/v0/read-file-lines?path={}&offset={offset}&limit={limit}&max_file_size={}\
             &max_line_bytes={}&max_response_lines={}&max_response_bytes={}",
            encode_query(path),
            limits.max_file_size,
            limits.max_line_bytes,
            limits.max_response_lines,
            limits.max_response_bytes
        );
        if partial {
            uri.push_str("&partial=true");
        }
        self.file_call(Method::GET, &uri, None, HeaderMap::new())
            .await
    }

    /// `POST /api/v0/write-file` with the whole content in memory (atomic on the agent).
    pub async fn write_file(
        &self,
        path: &str,
        content: impl Into<Bytes>,
        cond: WriteCondition<'_>,
    ) -> Result<WriteFileResponse, ClientError> {
        let uri = format!("/api/v0/write-file?path={}", encode_query(path));
        let mut headers = condition_headers(cond)?;
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        self.file_call(Method::POST, &uri, Some(content.into()), headers)
            .await
    }

    /// `POST /api/v0/write-file` with a streamed body (chunked), on a connection of its own.
    /// Nothing is held in memory beyond a chunk; the agent refuses bodies over its
    /// `max_write_bytes` with 413 and keeps the old file.
    pub async fn write_file_stream<S>(
        &self,
        path: &str,
        body: S,
        cond: WriteCondition<'_>,
    ) -> Result<WriteFileResponse, ClientError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        use futures_util::TryStreamExt;
        let uri = format!("/api/v0/write-file?path={}", encode_query(path));
        let body = http_body_util::StreamBody::new(body.map_ok(hyper::body::Frame::data));
        let mut req = Request::new(body);
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::Http(Box::new(e)))?;
        *req.headers_mut() = condition_headers(cond)?;
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        // A streamed upload takes as long as the data takes: the connect timeout still bounds
        // reaching the agent, and the agent's own read timeouts bound a stalled body.
        let (status, bytes) = self.pool.send_once(req, Instant::now()).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(ClientError::Decode);
        }
        Err(status_error(status, &bytes))
    }

    /// `POST /api/v0/edit-files`: every file's edits, or none.
    pub async fn edit_files(&self, req: &FileEditRequest) -> Result<FileEditResponse, ClientError> {
        let body = serde_json::to_vec(req).map_err(ClientError::Decode)?;
        self.file_call(
            Method::POST,
            "/api/v0/edit-files",
            Some(Bytes::from(body)),
            HeaderMap::new(),
        )
        .await
    }

    async fn file_call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: HeaderMap,
    ) -> Result<T, ClientError> {
        let limit = self.opts.request_timeout;
        let call = Call {
            method,
            path,
            body,
            headers,
        };
        let (status, bytes) = tokio::time::timeout(limit, self.pool.send(&call, Instant::now()))
            .await
            .map_err(|_| ClientError::Timeout { after: limit })??;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(ClientError::Decode);
        }
        Err(status_error(status, &bytes))
    }
}

fn condition_headers(cond: WriteCondition<'_>) -> Result<HeaderMap, ClientError> {
    let mut h = HeaderMap::new();
    match cond {
        WriteCondition::Always => {}
        WriteCondition::IfAbsent => {
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        }
        WriteCondition::IfMatch(tag) => {
            let tag = tag.trim();
            let value = if tag == "*" || tag.starts_with('"') || tag.starts_with("W/") {
                tag.to_owned()
            } else {
                format!("\"{tag}\"")
            };
            let v = HeaderValue::from_str(&value).map_err(|e| ClientError::Http(Box::new(e)))?;
            h.insert(header::IF_MATCH, v);
        }
    }
    Ok(h)
}

/// Percent-encodes a query value: everything but RFC 3986 unreserved characters and `/`.
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query("/a b/ü&x=1#"), "/a%20b/%C3%BC%26x%3D1%23");
    }

    #[test]
    fn conditions_become_headers() {
        let h = condition_headers(WriteCondition::IfMatch("abc")).unwrap();
        assert_eq!(h[header::IF_MATCH], "\"abc\"");
        let h = condition_headers(WriteCondition::IfMatch("*")).unwrap();
        assert_eq!(h[header::IF_MATCH], "*");
        let h = condition_headers(WriteCondition::IfAbsent).unwrap();
        assert_eq!(h[header::IF_NONE_MATCH], "*");
        assert!(
            condition_headers(WriteCondition::Always)
                .unwrap()
                .is_empty()
        );
    }
}
