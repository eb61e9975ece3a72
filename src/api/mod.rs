//! The process HTTP API: `router(state) -> Router` serving every route of `docs/API.md`.
//!
//! Owns: routing, request decoding (1 MiB limit, JSON errors on every path including 404/405),
//! mapping manager results to wire types, the optional caller-address filter.
//! Leaves to the caller: where the router is served. In the agent that is only the WireGuard
//! tunnel address (`node`), through [`serve::serve`]; tests call the router directly with
//! `tower::ServiceExt::oneshot`.

pub mod error;
pub mod file_types;
pub mod files;
pub mod metrics;
pub mod openapi;
pub mod procio;
pub mod serve;
pub mod trust;
pub mod types;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response as AxumResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
use types::*;

use crate::proc::{Manager, ProcessId, Signal, Snapshot, StartSpec, StdinMode};

/// The caller's tunnel address, as axum connect info (`ConnectInfo<CallerAddr>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerAddr(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, crate::netstack::TcpListener>,
    > for CallerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::netstack::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for CallerAddr
{
    /// Plain TCP is only used by tests and the loopback baseline benchmark.
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct AppState {
    pub manager: Manager,
    pub started: Instant,
    /// When non-empty, only callers whose tunnel address is inside one of these may use the API.
    /// Shared and live: a config reload replaces the list for every connection at once.
    pub allowed_sources: Arc<parking_lot::RwLock<Vec<ip_network::IpNetwork>>>,
    /// The workspace file operations (`[files]` limits).
    pub files: crate::files::Files,
    /// What `GET /metrics` exports; the API records its requests into `metrics.api`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Who is calling and what they may do; the audit log.
    pub trust: crate::trust::Trust,
}

impl AppState {
    pub fn new(manager: Manager) -> Self {
        Self {
            started: Instant::now(),
            allowed_sources: Arc::default(),
            files: crate::files::Files::default(),
            metrics: Arc::new(
                crate::metrics::Metrics::new()
                    .with_api()
                    .with_processes(&manager),
            ),
            trust: crate::trust::Trust::default(),
            manager,
        }
    }
}

/// Builds the API router. Serve it with `into_make_service_with_connect_info::<CallerAddr>()`
/// when `allowed_sources` is set; without connect info such a filter refuses every request.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v0/processes/start", post(start))
        .route("/api/v0/processes/list", get(list))
        .route("/api/v0/processes/{id}/output", get(output))
        .route("/api/v0/processes/{id}/signal", post(signal))
        .route("/api/v0/processes/{id}", delete(remove))
        .route("/api/v0/health", get(health))
        .merge(procio::routes())
        .merge(files::routes())
        .merge(openapi::routes())
        .merge(metrics::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            trust::authorize,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), source_filter))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn start(
    State(st): State<AppState>,
    ctx: trust::Ctx,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StartProcessResponse>, ApiError> {
    let req: StartProcessRequest = decode(body)?;
    validate::start_request(&req)?;
    ctx.note(|e| {
        e.command = Some(req.command.clone());
        e.workdir.clone_from(&req.workdir);
        e.env_keys = Some(req.env.keys().cloned().collect());
        e.user.clone_from(&req.user);
        e.limits = req
            .limits
            .as_ref()
            .and_then(|l| serde_json::to_value(l).ok());
    });
    let user = run_as_user(&st, &ctx, req.user.as_deref().filter(|u| !u.is_empty()))?;
    let stdin = match (req.stdin.as_deref(), req.pty) {
        (_, Some(TerminalSize { rows, cols })) if rows == 0 || cols == 0 => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "Terminal rows and cols must be at least 1.",
            ));
        }
        (None | Some("null") | Some("pipe"), Some(TerminalSize { rows, cols })) => {
            StdinMode::Pty { rows, cols }
        }
        (None | Some("null"), None) => StdinMode::Null,
        (Some("pipe"), None) => StdinMode::Pipe,
        (Some(other), _) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Unsupported stdin \"{other}\". Use \"null\" or \"pipe\"."),
            ));
        }
    };
    let spec = StartSpec {
        command: req.command,
        workdir: req.workdir.map(Into::into),
        env: req.env,
        background: req.background,
        idempotency_key: req.idempotency_key.filter(|k| !k.is_empty()),
        timeout: req.timeout_ms.map(Duration::from_millis),
        stdin,
        limits: req.limits.map(Into::into).unwrap_or_default(),
        user,
        started_by: ctx.caller.started_by(),
    };
    let spec = StartSpec {
        // Under isolation a key belongs to the peer that used it: another peer's key must not
        // reveal (or replay) that peer's process.
        idempotency_key: match (st.trust.isolation(), ctx.caller.public_key()) {
            (crate::trust::Isolation::Peer, Some(key)) => {
                spec.idempotency_key.map(|k| format!("{key}:{k}"))
            }
            _ => spec.idempotency_key,
        },
        ..spec
    };
    let id = match &ctx.audit {
        None => st.manager.start(spec),
        Some(audit) => st.manager.start_gated(spec, &mut |facts| {
            audit.note(|e| {
                e.process_id = Some(facts.id.to_string());
                e.workdir = Some(facts.workdir.display().to_string());
                e.user = Some(facts.user.to_owned());
                e.limits = Some(ProcessLimits::from(*facts.limits))
                    .filter(|l| !l.is_empty())
                    .and_then(|l| serde_json::to_value(l).ok());
            });
            audit.write_now(StatusCode::OK)
        }),
    }
    .inspect_err(|e| ctx.note(|a| a.error = Some(e.to_string())))?;
    Ok(Json(StartProcessResponse {
        id: id.to_string(),
        started: true,
    }))
}

/// The user a start runs as: the one asked for, if this peer may ask for it (`run_as` or
/// `users`); else the peer's `run_as`; else the agent's own user (`None`).
fn run_as_user(
    st: &AppState,
    ctx: &trust::Ctx,
    requested: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let Some(access) = ctx.caller.access() else {
        return Ok(requested.map(str::to_owned));
    };
    let Some(user) = requested else {
        return Ok(access.run_as.clone());
    };
    // The agent's own user only for a peer that runs as the agent anyway: a peer with
    // `run_as` must never escape to the agent's user (root) by asking for it.
    let own = access.run_as.is_none() && user == st.manager.agent_user().name;
    // An agent that cannot switch users answers 400 for any other user (the manager says why).
    if !own && !access.may_run_as(user) && crate::proc::is_root() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Peer \"{}\" may not run commands as user \"{user}\".",
                ctx.caller.label()
            ),
        )
        .with_detail("the user is not in this peer's `users` list (nor its `run_as`)"));
    }
    Ok(Some(user.to_owned()))
}

async fn list(State(st): State<AppState>, ctx: trust::Ctx) -> Json<ListProcessesResponse> {
    let isolation = st.trust.isolation();
    let processes = st
        .manager
        .list()
        .into_iter()
        .filter(|s| ctx.sees(isolation, s.started_by.as_ref()))
        .map(process_info)
        .collect();
    Json(ListProcessesResponse { processes })
}

async fn output(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<OutputQuery>, QueryRejection>,
) -> Result<Json<ProcessOutputResponse>, ApiError> {
    let id = process_id(path)?;
    let Query(q) = query.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "Invalid query.").with_detail(e.body_text())
    })?;
    if q.wait {
        let ms = q.timeout_ms.unwrap_or(MAX_WAIT_MS).min(MAX_WAIT_MS);
        st.manager.wait(&id, Duration::from_millis(ms)).await?;
    }
    let rec = st.manager.get(&id)?;
    // State first, then output: an exit is only recorded after the pipe hit EOF, so
    // `running: false` always comes with the complete output.
    let exit = rec.exit();
    let rendered = rec.output.render();
    Ok(Json(ProcessOutputResponse {
        output: rendered.text,
        truncated: rendered.truncation.map(Into::into),
        running: exit.is_none(),
        exit_code: exit.map(|e| e.code),
    }))
}

async fn signal(
    State(st): State<AppState>,
    ctx: trust::Ctx,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Response>, ApiError> {
    let id = process_id(path)?;
    let req: SignalProcessRequest = decode(body)?;
    if req.signal.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Signal is required.",
        ));
    }
    let Some(sig) = Signal::from_wire(&req.signal) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Unsupported signal \"{}\". Use \"kill\", \"terminate\", \"interrupt\" or \"hangup\".",
                req.signal
            ),
        ));
    };
    ctx.note(|e| e.signal = Some(sig.as_str().to_owned()));
    st.manager.signal(&id, sig)?;
    Ok(Json(Response {
        message: format!("Signal \"{}\" sent to process \"{}\".", sig.as_str(), id),
        detail: None,
    }))
}

async fn remove(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Response>, ApiError> {
    let id = process_id(path)?;
    st.manager.remove(&id)?;
    Ok(Json(Response {
        message: format!("Process \"{id}\" removed."),
        detail: None,
    }))
}

async fn health(State(st): State<AppState>) -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: st.started.elapsed().as_secs(),
        processes_running: st.manager.running_count(),
        instance_id: Some(st.manager.instance_id().to_owned()),
        limits_mode: Some(st.manager.enforcement().mode().to_owned()),
        limits_detail: Some(st.manager.enforcement().describe()),
    })
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Route not found.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed on this route.",
    )
}

/// Refuses callers outside `allowed_sources` (403). A no-op when the list is empty.
async fn source_filter(State(st): State<AppState>, req: Request, next: Next) -> AxumResponse {
    use axum::response::IntoResponse;
    let refused = {
        let sources = st.allowed_sources.read();
        let peer = req
            .extensions()
            .get::<ConnectInfo<CallerAddr>>()
            .map(|c| c.0.0.ip());
        let allowed =
            sources.is_empty() || peer.is_some_and(|ip| sources.iter().any(|n| n.contains(ip)));
        (!allowed).then_some(peer)
    };
    if let Some(peer) = refused {
        let who = peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let err = ApiError::new(StatusCode::FORBIDDEN, "Caller address is not allowed.")
            .with_detail(format!("source {who} is outside api.allowed_sources"));
        trust::record_refusal(&st, &req, &err, "allowed_sources");
        return err.into_response();
    }
    next.run(req).await
}

/// The `{id}` of a route; an id that is not valid UTF-8 after percent-decoding is a JSON 400
/// (axum's own rejection would be plain text).
fn process_id(path: Result<Path<String>, PathRejection>) -> Result<ProcessId, ApiError> {
    let Path(id) = path.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "Invalid process id in the URL.")
            .with_detail(e.body_text())
    })?;
    Ok(ProcessId::from(id.as_str()))
}

fn decode<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large.")
                .with_detail(format!("the limit is {MAX_BODY_BYTES} bytes"))
        } else if serve::is_body_timeout(&e) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "Request body not received in time.",
            )
            .with_detail(e.body_text())
        } else {
            ApiError::new(e.status(), "Could not read the request body.").with_detail(e.body_text())
        }
    })?;
    // Every body this decodes is a JSON object; serde would also take an array as a struct's
    // fields in order (so `[]` became an empty start request and "Command is required.").
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid_json("expected a JSON object"));
    }
    serde_json::from_slice(&bytes).map_err(ApiError::invalid_json)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn process_info(s: Snapshot) -> ProcessInfo {
    ProcessInfo {
        id: s.id.to_string(),
        command: s.command,
        workdir: s.workdir.to_string_lossy().into_owned(),
        background: s.background,
        running: s.exit.is_none(),
        exit_code: s.exit.as_ref().map(|e| e.code),
        started_at_unix: unix(s.started_at),
        exited_at_unix: s.exit.as_ref().map(|e| unix(e.at)),
        pid: Some(s.pid),
        exit_signal: s.exit.as_ref().and_then(|e| e.signal.map(str::to_owned)),
        exit_reason: s.exit.as_ref().map(|e| e.reason.as_str().to_owned()),
        output_bytes: Some(s.output_bytes),
        log_start: Some(s.log_start),
        log_error: s.log_error,
        started_by: s.started_by.map(|b| StartedBy {
            peer: b.peer,
            public_key: b.public_key,
        }),
        user: Some(s.user).filter(|u| !u.is_empty()),
        limits: Some(ProcessLimits::from(s.limits)).filter(|l| !l.is_empty()),
    }
}
