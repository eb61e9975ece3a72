//! The daemon's Unix socket: where it lives, who may open it, and the bounded accept loop.
//!
//! Owns: the default path, binding (a stale socket file is replaced, a live daemon's never),
//! the file mode (0600, or 0660 with a group), and serving HTTP/1.1 connections with a limit on
//! how many are open at once (more wait in the kernel's backlog until one closes) and a bound on
//! how long a client may take to send a request head.
//! Leaves to the caller: what each request means (a hyper service) and when to stop.
//!
//! Access to the socket equals access to every agent the daemon can reach, as `docker.sock`
//! equals root on the Docker host: grant it only to users who may run commands on all agents.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ControlError;
use crate::client::BoxError;

/// A client must send a complete request head within this (a stuck client holds a slot).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// On shutdown, connections get this long to finish the request they are serving.
pub(crate) const DRAIN: Duration = Duration::from_secs(5);

/// The socket path when none is configured: `$WGAGENT_SOCKET`, else [`fallback_path`].
pub fn default_path() -> PathBuf {
    match std::env::var_os("WGAGENT_SOCKET") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => fallback_path(),
    }
}

/// `/run/wgagent/control.sock` as root, else `$XDG_RUNTIME_DIR/wgagent/control.sock`, else
/// `/tmp/wgagent-<uid>/control.sock`.
pub fn fallback_path() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/wgagent/control.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("wgagent/control.sock"),
        _ => PathBuf::from(format!("/tmp/wgagent-{uid}/control.sock")),
    }
}

/// Binds `path` with mode 0600 (0660 and group `gid` when given). Creates a missing parent
/// directory (0700, or 0750 with the group). A socket file nobody answers on is replaced; one a
/// live daemon serves is an error naming it.
pub(crate) fn bind(path: &Path, gid: Option<u32>) -> Result<UnixListener, ControlError> {
    let err = |source: io::Error| ControlError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(err)?;
        let mode = if gid.is_some() { 0o750 } else { 0o700 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(err)?;
        if let Some(g) = gid {
            chown_group(dir, g).map_err(err)?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket; refusing to replace it",
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    if let Some(g) = gid {
        chown_group(path, g).map_err(err)?;
    }
    Ok(listener)
}

/// The gid of group `name` (or a numeric gid).
pub(crate) fn group_id(name: &str) -> Result<u32, ControlError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(ControlError::Group {
            group: name.to_owned(),
            problem: "no such group".into(),
        }),
        Err(e) => Err(ControlError::Group {
            group: name.to_owned(),
            problem: e.to_string(),
        }),
    }
}

fn chown_group(path: &Path, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, None, Some(gid))
}

/// The body of every answer on the socket.
pub(crate) type ResBody = UnsyncBoxBody<Bytes, BoxError>;

/// Serves HTTP/1.1 on `listener` until `cancel`: at most `max` connections at once, each on a
/// task of `tracker`. In-flight requests get [`DRAIN`] after `cancel` before their connection is
/// dropped.
pub(crate) async fn serve<S, F>(
    listener: UnixListener,
    max: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
    counters: Arc<super::forward::Counters>,
    service: S,
) where
    S: Fn(Request<Incoming>, Option<u32>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ResBody>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning on the error.
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        counters.connection_opened();
        let cancel = cancel.clone();
        let service = service.clone();
        let counters = counters.clone();
        tracker.spawn(async move {
            serve_connection(stream, cancel, service).await;
            counters.connection_closed();
            drop(permit);
        });
    }
}

async fn serve_connection<S, F>(stream: UnixStream, cancel: CancellationToken, service: S)
where
    S: Fn(Request<Incoming>, Option<u32>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ResBody>> + Send + 'static,
{
    let uid = stream.peer_cred().ok().map(|c| c.uid());
    let svc = hyper::service::service_fn(move |req| {
        let fut = service(req, uid);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(?uid, "control connection ended: {e}");
            }
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            if tokio::time::timeout(DRAIN, conn).await.is_err() {
                tracing::debug!(?uid, "control connection still busy at shutdown; closed");
            }
        }
    }
}
