//! The workspace file routes (Coder-compatible, see `docs/API.md` "Workspace files"):
//! `list-directory`, `resolve-path`, `read-file` (streamed bytes), `read-file-lines`,
//! `write-file` (streamed body, atomic) and `edit-files` (all or nothing), on top of
//! [`crate::files::Files`].
//!
//! Owns: query and body decoding, statuses, `ETag`/`If-Match`/`If-None-Match`, streaming.
//! Every handler names its [`FileOp`] first and reports through [`record`] last: the one place
//! per route where the trust layer's permission check (`FileOp::permission`) and audit record
//! (paths, bytes, hashes before and after — never content) belong.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::file_types::*;
use super::trust::Ctx;
use super::{ApiError, AppState};
use crate::files::lines::{LineLimits, LineRange};
use crate::files::{
    EditOutcome, EditSpec, FilesError, ListRequest, OwnedEdit, Precondition, Relativity,
};

/// Bytes per chunk of a streamed read.
const READ_CHUNK: usize = 64 * 1024;

/// The file routes, merged into `api::router`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v0/list-directory", post(list_directory))
        .route("/api/v0/resolve-path", get(resolve_path))
        .route("/api/v0/read-file", get(read_file))
        .route("/api/v0/read-file-lines", get(read_file_lines))
        .route("/api/v0/write-file", post(write_file))
        .route("/api/v0/edit-files", post(edit_files))
}

/// A file operation: the unit of permission and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    List,
    Resolve,
    Read,
    ReadLines,
    Write,
    Edit,
}

impl FileOp {
    /// The per-peer permission the operation needs: `read` for reading and listing, `files`
    /// for writes and edits.
    pub fn permission(self) -> &'static str {
        match self {
            Self::List | Self::Resolve | Self::Read | Self::ReadLines => "read",
            Self::Write | Self::Edit => "files",
        }
    }

    pub fn route(self) -> &'static str {
        match self {
            Self::List => "list-directory",
            Self::Resolve => "resolve-path",
            Self::Read => "read-file",
            Self::ReadLines => "read-file-lines",
            Self::Write => "write-file",
            Self::Edit => "edit-files",
        }
    }
}

/// What an operation did, for the audit record (never file content).
#[derive(Debug, Default)]
struct Facts {
    paths: Vec<String>,
    bytes: u64,
    before: Vec<String>,
    after: Vec<String>,
}

/// Runs one request of operation `op` and reports its outcome: the single place per route
/// where the audit record gets the facts (the permission was checked by `api::trust` before,
/// from [`FileOp::permission`]'s rule).
async fn handle(
    op: FileOp,
    ctx: &Ctx,
    work: impl Future<Output = Result<(Response, Facts), FileApiError>>,
) -> Response {
    match work.await {
        Ok((resp, facts)) => {
            record(op, &facts, resp.status());
            ctx.note(|e| {
                e.paths = Some(facts.paths);
                e.bytes = Some(facts.bytes);
                e.hash_before = Some(facts.before);
                e.hash_after = Some(facts.after);
            });
            resp
        }
        Err(e) => {
            record(op, &Facts::default(), e.status());
            let resp = e.into_response();
            ctx.note(|e| e.error = Some(format!("status {}", resp.status().as_u16())));
            resp
        }
    }
}

/// Reports one finished operation: state-changing ones at info, reads at debug.
fn record(op: FileOp, facts: &Facts, status: StatusCode) {
    if op.permission() == "files" {
        tracing::info!(route = op.route(), status = status.as_u16(), paths = ?facts.paths,
            bytes = facts.bytes, before = ?facts.before, after = ?facts.after, "file change");
    } else {
        tracing::debug!(route = op.route(), status = status.as_u16(), paths = ?facts.paths,
            bytes = facts.bytes, "file read");
    }
}

/// An error of a file route: a file-operation failure or a malformed request.
#[derive(Debug)]
pub enum FileApiError {
    Files(FilesError),
    Api(ApiError),
}

impl From<FilesError> for FileApiError {
    fn from(e: FilesError) -> Self {
        Self::Files(e)
    }
}

impl From<ApiError> for FileApiError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl FileApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Api(e) => e.status,
            Self::Files(e) => status_of(e),
        }
    }
}

/// The HTTP status for a file-operation failure; several failures answer with the highest.
pub fn status_of(e: &FilesError) -> StatusCode {
    use FilesError::*;
    match e {
        PathRequired
        | Relative(_)
        | InvalidPath { .. }
        | NotAFile(_)
        | IsADirectory(_)
        | NotADirectory(_)
        | SymlinkLoop(_)
        | Invalid(_) => StatusCode::BAD_REQUEST,
        NotFound(_) => StatusCode::NOT_FOUND,
        PermissionDenied(_) => StatusCode::FORBIDDEN,
        TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
        Changed(_) => StatusCode::CONFLICT,
        NoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
        Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        Multiple(v) => v
            .iter()
            .map(status_of)
            .max()
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// The first precondition failure in `e`, for the 412 body.
fn precondition(e: &FilesError) -> Option<&FilesError> {
    match e {
        FilesError::PreconditionFailed { .. } => Some(e),
        FilesError::Multiple(v) => v.iter().find_map(precondition),
        _ => None,
    }
}

impl IntoResponse for FileApiError {
    fn into_response(self) -> Response {
        let e = match self {
            Self::Api(e) => return e.into_response(),
            Self::Files(e) => e,
        };
        let status = status_of(&e);
        if status.is_server_error() {
            tracing::warn!(%status, "{e}");
        } else {
            tracing::debug!(%status, "{e}");
        }
        let mut body = FileErrorResponse {
            message: e.to_string(),
            detail: None,
            path: None,
            current_hash: None,
        };
        let mut etag = None;
        if let Some(FilesError::PreconditionFailed { path, current, .. }) = precondition(&e) {
            body.path = Some(path.display().to_string());
            body.current_hash = current.map(|h| h.to_string());
            etag = current.map(|h| h.etag());
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(v) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        resp
    }
}

/// Decodes a query, naming what is wrong (unknown parameters are refused, as the reference
/// does, so a typo is not silently ignored).
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "Query parameters have invalid values.",
        )
        .with_detail(e.body_text())
    })
}

/// A non-negative integer query parameter (absent or empty: `default`).
fn number(name: &str, v: Option<&str>, default: u64) -> Result<u64, ApiError> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    match v.parse::<i64>() {
        Ok(n) if n < 0 => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Query parameter {name:?} is invalid: value is negative."),
        )),
        Ok(n) => Ok(n as u64),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Query parameter {name:?} must be an integer, not {v:?}."),
        )),
    }
}

fn required(path: Option<String>) -> Result<String, ApiError> {
    path.filter(|p| !p.is_empty()).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "Query parameter \"path\" is required.",
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathQuery {
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    path: Option<String>,
    offset: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinesQuery {
    path: Option<String>,
    offset: Option<String>,
    limit: Option<String>,
    max_file_size: Option<String>,
    max_line_bytes: Option<String>,
    max_response_lines: Option<String>,
    max_response_bytes: Option<String>,
    /// **ext**: `true` returns the lines that fit instead of failing when a page is too big.
    partial: Option<bool>,
}

async fn list_directory(
    State(st): State<AppState>,
    ctx: Ctx,
    q: Result<Query<PathQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    let files = st.files.as_user(ctx.run_as());
    handle(FileOp::List, &ctx, async move {
        let q = query(q)?;
        // The reference SDK always sends a body; an empty one is taken as `{}`.
        let req: LsRequest = if body.iter().all(u8::is_ascii_whitespace) {
            LsRequest::default()
        } else {
            serde_json::from_slice(&body).map_err(ApiError::invalid_json)?
        };
        let listing = files
            .list(ListRequest {
                path: q.path,
                components: req.path,
                relativity: match req.relativity {
                    LsRelativity::Unspecified => Relativity::Unspecified,
                    LsRelativity::Root => Relativity::Root,
                    LsRelativity::Home => Relativity::Home,
                },
            })
            .await?;
        let shown = listing.entries.len();
        let resp = LsResponse {
            absolute_path: crate::files::path::components(&listing.path),
            absolute_path_string: listing.path.display().to_string(),
            contents: listing
                .entries
                .into_iter()
                .map(|e| LsFile {
                    name: e.name,
                    absolute_path_string: e.path.display().to_string(),
                    is_dir: e.is_dir,
                    is_symlink: e.is_symlink,
                    size: e.size,
                    mode: e.mode.map(|m| format!("{m:04o}")),
                    modified_unix: e.modified_unix,
                })
                .collect(),
            total_entries: Some(listing.total as u64),
            truncated: listing.total > shown,
        };
        let facts = Facts {
            paths: vec![resp.absolute_path_string.clone()],
            ..Facts::default()
        };
        Ok((axum::Json(resp).into_response(), facts))
    })
    .await
}

async fn resolve_path(
    State(st): State<AppState>,
    ctx: Ctx,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> Response {
    let files = st.files.as_user(ctx.run_as());
    handle(FileOp::Resolve, &ctx, async move {
        let path = required(query(q)?.path)?;
        let resolved = files.resolve(&path).await?;
        let resolved_path = resolved.display().to_string();
        let facts = Facts {
            paths: vec![path],
            ..Facts::default()
        };
        Ok((
            axum::Json(ResolvePathResponse { resolved_path }).into_response(),
            facts,
        ))
    })
    .await
}

async fn read_file(
    State(st): State<AppState>,
    ctx: Ctx,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Response {
    let files = st.files.as_user(ctx.run_as());
    handle(FileOp::Read, &ctx, async move {
        let q = query(q)?;
        let offset = number("offset", q.offset.as_deref(), 0)?;
        let limit = number("limit", q.limit.as_deref(), 0)?;
        let path = required(q.path)?;
        let rf = files.open_read(&path, offset, limit).await?;
        let file = tokio::fs::File::from_std(rf.file).take(rf.len);
        let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file, READ_CHUNK,
        ));
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&rf.content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(rf.len));
        h.insert("wgagent-file-size", HeaderValue::from(rf.size));
        if let Some(v) = rf.hash.and_then(|x| HeaderValue::from_str(&x.etag()).ok()) {
            h.insert(header::ETAG, v);
        }
        let facts = Facts {
            paths: vec![path],
            bytes: rf.len,
            ..Facts::default()
        };
        Ok((resp, facts))
    })
    .await
}

async fn read_file_lines(
    State(st): State<AppState>,
    ctx: Ctx,
    q: Result<Query<LinesQuery>, QueryRejection>,
) -> Response {
    let files = st.files.as_user(ctx.run_as());
    handle(FileOp::ReadLines, &ctx, async move {
        let q = query(q)?;
        let d = LineLimits::default();
        let range = LineRange {
            offset: number("offset", q.offset.as_deref(), 1)?,
            limit: number("limit", q.limit.as_deref(), 0)?,
            partial: q.partial.unwrap_or(false),
        };
        let limits = LineLimits {
            max_file_size: number("max_file_size", q.max_file_size.as_deref(), d.max_file_size)?,
            max_line_bytes: usize_of(
                number("max_line_bytes", q.max_line_bytes.as_deref(), 0)?,
                d.max_line_bytes,
            ),
            max_response_lines: usize_of(
                number("max_response_lines", q.max_response_lines.as_deref(), 0)?,
                d.max_response_lines,
            ),
            max_response_bytes: usize_of(
                number("max_response_bytes", q.max_response_bytes.as_deref(), 0)?,
                d.max_response_bytes,
            ),
        };
        let path = required(q.path)?;
        let (resp, etag) = match files.read_lines(&path, range, limits).await {
            Ok(r) => (
                ReadFileLinesResponse {
                    success: true,
                    file_size: r.file_size,
                    total_lines: r.page.total_lines,
                    lines_read: r.page.lines_read,
                    content: r.page.content,
                    error: String::new(),
                    hash: Some(r.hash.to_string()),
                    next_offset: r.page.next_offset,
                },
                Some(r.hash.etag()),
            ),
            // The reference answers failures in the body, with 200.
            Err(e) => (
                ReadFileLinesResponse {
                    error: e.to_string(),
                    ..ReadFileLinesResponse::default()
                },
                None,
            ),
        };
        let facts = Facts {
            paths: vec![path],
            bytes: resp.content.len() as u64,
            ..Facts::default()
        };
        let mut out = axum::Json(resp).into_response();
        if let Some(v) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
            out.headers_mut().insert(header::ETAG, v);
        }
        Ok((out, facts))
    })
    .await
}

/// A limit from the query: 0 means the default. Huge values are capped by `usize`.
fn usize_of(n: u64, default: usize) -> usize {
    if n == 0 {
        default
    } else {
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

async fn write_file(
    State(st): State<AppState>,
    ctx: Ctx,
    q: Result<Query<PathQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let files = st.files.as_user(ctx.run_as());
    handle(FileOp::Write, &ctx, async move {
        let path = required(query(q)?.path)?;
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let pre = Precondition::from_headers(text(header::IF_MATCH), text(header::IF_NONE_MATCH))
            .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
        let limit = files.limits().max_write_bytes;
        let declared = text(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|&n| n > limit) {
            return Err(FilesError::TooLarge {
                what: "the request body".to_owned(),
                size: n,
                limit,
            }
            .into());
        }
        let mut w = files.begin_write(&path).await?;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "Could not read the request body.")
                    .with_detail(e.to_string())
            })?;
            if let Ok(data) = frame.into_data() {
                w.write(&data).await?;
            }
        }
        let out = w.commit(pre).await?;
        let facts = Facts {
            paths: vec![path.clone()],
            bytes: out.bytes,
            before: out.previous.iter().map(ToString::to_string).collect(),
            after: vec![out.hash.to_string()],
        };
        let mut resp = axum::Json(WriteFileResponse {
            message: format!("Successfully wrote to {path:?}"),
            hash: Some(out.hash.to_string()),
            bytes: Some(out.bytes),
        })
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&out.hash.etag()) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        Ok((resp, facts))
    })
    .await
}

async fn edit_files(State(st): State<AppState>, ctx: Ctx, body: Body) -> Response {
    let files = st.files.as_user(ctx.run_as());
    handle(FileOp::Edit, &ctx, async move {
        let limit = files.limits().max_write_bytes;
        let bytes =
            http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        FileApiError::Files(FilesError::TooLarge {
                            what: "the request body".to_owned(),
                            size: limit + 1,
                            limit,
                        })
                    } else {
                        ApiError::new(StatusCode::BAD_REQUEST, "Could not read the request body.")
                            .with_detail(e.to_string())
                            .into()
                    }
                })?
                .to_bytes();
        let req: FileEditRequest =
            serde_json::from_slice(&bytes).map_err(ApiError::invalid_json)?;
        let specs = req
            .files
            .into_iter()
            .map(|f| EditSpec {
                path: f.path,
                edits: f
                    .edits
                    .into_iter()
                    .map(|e| OwnedEdit {
                        search: e.search,
                        replace: e.replace,
                        replace_all: e.replace_all,
                    })
                    .collect(),
                if_match: f.if_match.filter(|m| !m.trim().is_empty()),
            })
            .collect();
        let outcomes: Vec<EditOutcome> = files.edit(specs, req.include_diff).await?;
        let facts = Facts {
            paths: outcomes.iter().map(|o| o.path.clone()).collect(),
            bytes: outcomes.iter().map(|o| o.bytes).sum(),
            before: outcomes.iter().map(|o| o.before.to_string()).collect(),
            after: outcomes.iter().map(|o| o.after.to_string()).collect(),
        };
        let files = req.include_diff.then(|| {
            outcomes
                .into_iter()
                .map(|o| FileEditResult {
                    path: o.path,
                    diff: o.diff.unwrap_or_default(),
                    hash: Some(o.after.to_string()),
                })
                .collect()
        });
        Ok((
            axum::Json(FileEditResponse { files }).into_response(),
            facts,
        ))
    })
    .await
}
