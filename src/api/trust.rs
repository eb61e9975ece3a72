//! The HTTP side of the trust boundaries (see [`crate::trust`]): one middleware,
//! [`authorize`], in front of every route.
//!
//! Owns: which permission each route needs and whether it is audited ([`rule`]), identifying
//! the caller (the WireGuard peer whose session carried the connection, never a header), the
//! 403 bodies, isolation (another peer's process id answers 404 exactly like an unknown one),
//! and the audit line of every state-changing and every denied request, written before the
//! response leaves (fail closed: 503 when it cannot be written).
//! Leaves to the handlers what only they know (the command, the resolved user and limits, the
//! file hashes): they add it to the request's [`Audit`] slot through [`Ctx`]. A start writes
//! its line itself, from the process manager's gate, right before the spawn, so that no
//! command runs without its record.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use super::{ApiError, AppState, CallerAddr};
use crate::proc::{ProcError, ProcessId};
use crate::trust::audit::{self, Entry};
use crate::trust::{AuditLog, Caller, Isolation, Permission};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub permission: Permission,
    /// State-changing: every request gets an audit line.
    pub audited: bool,
    /// "may not <what>" in the 403 message.
    pub what: &'static str,
}

const fn r(permission: Permission, audited: bool, what: &'static str) -> Rule {
    Rule {
        permission,
        audited,
        what,
    }
}

/// Every route of the API with its rule (`docs/API.md`: run = start, stdin, resize, delete;
/// read = list, output, log, health and file reads; signal; files = writes and edits;
/// metrics).
pub const RULES: &[(&str, &str, Rule)] = &[
    (
        "POST",
        "/api/v0/processes/start",
        r(Permission::Run, true, "run processes"),
    ),
    (
        "GET",
        "/api/v0/processes/list",
        r(Permission::Read, false, "read processes"),
    ),
    (
        "GET",
        "/api/v0/processes/{id}/output",
        r(Permission::Read, false, "read processes"),
    ),
    (
        "GET",
        "/api/v0/processes/{id}/log",
        r(Permission::Read, false, "read processes"),
    ),
    (
        "POST",
        "/api/v0/processes/{id}/signal",
        r(Permission::Signal, true, "signal processes"),
    ),
    (
        "DELETE",
        "/api/v0/processes/{id}",
        r(Permission::Run, true, "run processes"),
    ),
    (
        "POST",
        "/api/v0/processes/{id}/stdin",
        r(Permission::Run, true, "run processes"),
    ),
    (
        "POST",
        "/api/v0/processes/{id}/resize",
        r(Permission::Run, true, "run processes"),
    ),
    (
        "GET",
        "/api/v0/health",
        r(Permission::Read, false, "read processes"),
    ),
    (
        "POST",
        "/api/v0/list-directory",
        r(Permission::Read, false, "read files"),
    ),
    (
        "GET",
        "/api/v0/resolve-path",
        r(Permission::Read, false, "read files"),
    ),
    (
        "GET",
        "/api/v0/read-file",
        r(Permission::Read, false, "read files"),
    ),
    (
        "GET",
        "/api/v0/read-file-lines",
        r(Permission::Read, false, "read files"),
    ),
    (
        "POST",
        "/api/v0/write-file",
        r(Permission::Files, true, "write files"),
    ),
    (
        "POST",
        "/api/v0/edit-files",
        r(Permission::Files, true, "write files"),
    ),
    (
        "GET",
        "/metrics",
        r(Permission::Metrics, false, "read metrics"),
    ),
    (
        "GET",
        "/api/v0/openapi.json",
        r(Permission::Read, false, "read the API description"),
    ),
];

/// The rule of a matched route. A route missing from [`RULES`] needs `run` and is audited
/// (the strictest rule), so a route added without a rule is never open to read-only peers.
pub fn rule(method: &Method, route: &str) -> Rule {
    RULES
        .iter()
        .find(|(m, p, _)| *p == route && method.as_str() == *m)
        .map_or(
            r(Permission::Run, true, "use this route"),
            |(_, _, rule)| *rule,
        )
}

/// The audit record of one request, filled by the middleware (who, which route) and the
/// handler (what). Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    log: Option<Arc<AuditLog>>,
    entry: Arc<Mutex<Entry>>,
    /// The handler wrote the line itself (a start, from the manager's gate).
    written: Arc<AtomicBool>,
    /// ... and that write failed: the handler answered with the refusal.
    failed: Arc<AtomicBool>,
}

impl Audit {
    /// Adds what the handler knows to the record.
    pub fn note(&self, f: impl FnOnce(&mut Entry)) {
        f(&mut self.entry.lock());
    }

    /// Writes the record now with `status` (the start gate: before the spawn). `Err` with the
    /// reason when the line could not be written and the log fails closed.
    pub fn write_now(&self, status: StatusCode) -> Result<(), String> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        let mut entry = self.entry.lock().clone();
        entry.time = audit::now();
        entry.status = status.as_u16();
        let result = checked(log, log.write(&entry));
        self.written.store(true, Ordering::Release);
        self.failed.store(result.is_err(), Ordering::Release);
        result
    }
}

/// A write result under the log's failure policy.
fn checked(log: &AuditLog, result: std::io::Result<()>) -> Result<(), String> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let why = format!("writing {}: {e}", log.config().path.display());
            tracing::error!("audit log: {why}");
            if log.fail_closed() { Err(why) } else { Ok(()) }
        }
    }
}

/// What a handler learns about its request: the caller and the audit slot. Never fails: a
/// router used without the middleware sees a local caller and no audit.
pub struct Ctx {
    pub caller: Caller,
    pub audit: Option<Audit>,
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Ctx {
            caller: parts
                .extensions
                .get::<Caller>()
                .cloned()
                .unwrap_or(Caller::Local { addr: None }),
            audit: parts.extensions.get::<Audit>().cloned(),
        })
    }
}

impl Ctx {
    pub fn note(&self, f: impl FnOnce(&mut Entry)) {
        if let Some(a) = &self.audit {
            a.note(f);
        }
    }

    /// The user this caller's file operations and default commands run as (`run_as`).
    pub fn run_as(&self) -> Option<&str> {
        self.caller.access().and_then(|a| a.run_as.as_deref())
    }

    /// False when isolation hides `started_by`'s processes from this caller.
    pub fn sees(&self, isolation: Isolation, started_by: Option<&crate::proc::StartedBy>) -> bool {
        sees(&self.caller, isolation, started_by)
    }
}

fn sees(
    caller: &Caller,
    isolation: Isolation,
    started_by: Option<&crate::proc::StartedBy>,
) -> bool {
    match (isolation, caller.public_key()) {
        (Isolation::None, _) | (_, None) => true,
        (Isolation::Peer, Some(key)) => started_by.is_some_and(|b| b.public_key == key),
    }
}

/// The middleware: identify, check the permission, hide other peers' processes, and write the
/// audit line of state-changing and refused requests before the response leaves.
pub async fn authorize(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let addr = req
        .extensions()
        .get::<ConnectInfo<CallerAddr>>()
        .map(|c| c.0.0);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let rule = rule(&method, &route);
    let log = st.trust.audit_log();
    let base = |caller: Option<&Caller>| Entry {
        peer: caller.map_or_else(|| "unknown".to_owned(), Caller::label),
        public_key: caller.and_then(Caller::public_key),
        source: addr.map(|a| a.to_string()),
        method: method.to_string(),
        route: path.clone(),
        ..Entry::default()
    };
    let refuse = |entry: Entry, err: ApiError| -> Response {
        if let Some(log) = &log {
            let entry = Entry {
                time: audit::now(),
                status: err.status.as_u16(),
                error: Some(err.message.clone()),
                ..entry
            };
            // A refusal did nothing: it is answered as refused even when the line fails.
            let _ = checked(log, log.write(&entry));
        }
        err.into_response()
    };

    let caller = match st.trust.caller(addr, peer_id(&req)) {
        Ok(c) => c,
        Err(u) => {
            let err = ApiError::new(StatusCode::FORBIDDEN, "Caller is not a configured peer.")
                .with_detail(format!(
                    "no WireGuard peer owns the source address {} (was it removed?)",
                    u.addr.ip()
                ));
            return refuse(
                Entry {
                    denied: Some(rule.permission.to_string()),
                    ..base(None)
                },
                err,
            );
        }
    };
    if !caller.allows(rule.permission) {
        let err = ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Peer \"{}\" may not {}.", caller.label(), rule.what),
        )
        .with_detail(format!(
            "permission \"{}\" is not in this peer's allow list",
            rule.permission
        ));
        return refuse(
            Entry {
                denied: Some(rule.permission.to_string()),
                ..base(Some(&caller))
            },
            err,
        );
    }

    let id = if route.contains("{id}") {
        process_id(&mut req).await
    } else {
        None
    };
    let isolation = st.trust.isolation();
    if let Some(id) = &id
        && isolation == Isolation::Peer
        && let Ok(rec) = st.manager.get(id)
        && !sees(&caller, isolation, rec.started_by.as_ref())
    {
        let err = ApiError::from(ProcError::NotFound(id.clone()));
        if rule.audited {
            return refuse(
                Entry {
                    process_id: Some(id.to_string()),
                    ..base(Some(&caller))
                },
                err,
            );
        }
        return err.into_response();
    }

    let audit = (rule.audited && log.is_some()).then(|| Audit {
        log: log.clone(),
        entry: Arc::new(Mutex::new(Entry {
            process_id: id.as_ref().map(ToString::to_string),
            ..base(Some(&caller))
        })),
        written: Arc::default(),
        failed: Arc::default(),
    });
    req.extensions_mut().insert(caller);
    if let Some(a) = &audit {
        req.extensions_mut().insert(a.clone());
    }
    let resp = next.run(req).await;
    let Some(a) = audit else {
        return resp;
    };
    let status = resp.status();
    // A start wrote its line before the spawn; a second line only when it then failed (and
    // not when the failure was that very line).
    if a.written.load(Ordering::Acquire)
        && (status.is_success() || a.failed.load(Ordering::Acquire))
    {
        return resp;
    }
    match a.write_now(status) {
        Ok(()) => resp,
        Err(why) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The request could not be recorded in the audit log.",
        )
        .with_detail(why)
        .into_response(),
    }
}

/// Records a request refused before routing (`api.allowed_sources`) in the audit log, with the
/// caller as far as it can be identified.
pub fn record_refusal(st: &AppState, req: &Request, err: &ApiError, denied: &str) {
    let Some(log) = st.trust.audit_log() else {
        return;
    };
    let addr = req
        .extensions()
        .get::<ConnectInfo<CallerAddr>>()
        .map(|c| c.0.0);
    let caller = st.trust.caller(addr, peer_id(req)).ok();
    let entry = Entry {
        time: audit::now(),
        peer: caller
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), Caller::label),
        public_key: caller.as_ref().and_then(Caller::public_key),
        source: addr.map(|a| a.to_string()),
        method: req.method().to_string(),
        route: req.uri().path().to_owned(),
        status: err.status.as_u16(),
        denied: Some(denied.to_owned()),
        error: Some(err.message.clone()),
        ..Entry::default()
    };
    let _ = checked(&log, log.write(&entry));
}

/// The WireGuard peer a connection arrived from, when the transport says so (`api::serve`
/// over the netstack tags every connection with the peer of its first packet).
fn peer_id(req: &Request) -> Option<u64> {
    req.extensions()
        .get::<super::serve::Caller>()
        .and_then(|c| c.peer)
        .map(|p| p.0)
}

/// The `{id}` of the request, decoded exactly as the handlers decode it.
async fn process_id(req: &mut Request) -> Option<ProcessId> {
    let (mut parts, body) = std::mem::take(req).into_parts();
    let params =
        axum::extract::Path::<HashMap<String, String>>::from_request_parts(&mut parts, &()).await;
    *req = Request::from_parts(parts, body);
    params
        .ok()
        .and_then(|p| p.0.get("id").map(|id| ProcessId::from(id.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_unique_and_unknown_routes_get_the_strictest() {
        for (i, (m, p, _)) in RULES.iter().enumerate() {
            assert!(
                !RULES[..i].iter().any(|(m2, p2, _)| m2 == m && p2 == p),
                "{m} {p} twice"
            );
        }
        let unknown = rule(&Method::POST, "/api/v0/new-thing");
        assert_eq!(unknown.permission, Permission::Run);
        assert!(unknown.audited);
        assert_eq!(
            rule(&Method::GET, "/api/v0/read-file").permission,
            Permission::Read
        );
        assert_eq!(
            rule(&Method::POST, "/api/v0/edit-files").permission,
            Permission::Files
        );
    }
}
