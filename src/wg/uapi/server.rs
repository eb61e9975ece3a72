//! The UAPI socket: a tokio `UnixListener` in front of the sans-IO protocol in `super`.
//!
//! Owns: creating the socket safely ([`bind`]: never takes over a path a live process serves,
//! replaces a stale one, mode 0600 from the first moment), the accept loop ([`serve`]) with a
//! bound on concurrent connections, a deadline per request and on writing each reply, and
//! removing the socket file at the end if it is still ours.
//! Leaves to the [`Handler`] (the node): what `get` reports and applying a `set`. A request is
//! read and parsed completely before the handler sees it, so a slow or hostile client can never
//! hold up the data path.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{DeviceState, Frame, MAX_REQUEST_BYTES, Request, format_errno, format_get};
use crate::wg::DeviceUpdate;

/// Connections served at once; more are closed at once (`wg` opens one per command).
pub const MAX_CONNECTIONS: usize = 8;
/// A request must arrive completely within this long of the previous reply (or of connecting);
/// so must each reply be written.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Where `wg` looks for userspace interfaces.
pub const DEFAULT_DIR: &str = "/var/run/wireguard";

/// What the socket serves; implemented by `node::Node`, for both roles.
pub trait Handler: Send + Sync + 'static {
    /// The device as `get` reports it. `secrets`: include the private and pre-shared keys
    /// (true only when the client runs as our user or root).
    fn state(&self, secrets: bool) -> DeviceState;
    /// Applies a `set` all-or-nothing; the error's errno goes on the wire.
    fn set(&self, update: DeviceUpdate) -> impl Future<Output = Result<(), Refused>> + Send;
}

/// A `set` the handler refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Negative errno for the reply (see `super::errno`).
    pub errno: i32,
    /// For the log.
    pub message: String,
}

/// A bound UAPI socket, ready for [`serve`].
#[derive(Debug)]
pub struct UapiListener {
    listener: UnixListener,
    path: PathBuf,
    /// Inode of our socket file, so that we never delete a file another process put there.
    ino: u64,
}

/// Why the socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another live process serves this path (it accepted a connection). Not retryable until
    /// that process stops; pick another `[interface] name` or `uapi_socket`.
    #[error("{} is served by another running process (another node with the same interface name?); choose another [interface] name or uapi_socket", .0.display())]
    InUse(PathBuf),
    /// Something that is not a socket is in the way; it is left alone.
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotSocket(PathBuf),
    /// The directory cannot be created or written (not root, read-only): run without a socket.
    #[error("cannot create the UAPI socket in {}: {source}", dir.display())]
    DirUnavailable {
        /// The directory the socket goes in.
        dir: PathBuf,
        /// Why it could not be used.
        #[source]
        source: io::Error,
    },
    /// Any other failure creating the socket.
    #[error("cannot create the UAPI socket {}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// The default socket path for an interface name (`/var/run/wireguard/<name>.sock`).
pub fn default_path(name: &str) -> PathBuf {
    Path::new(DEFAULT_DIR).join(format!("{name}.sock"))
}

/// Creates the socket at `path` (the directory with mode 0755 if missing, as wireguard-go).
///
/// A socket file that a live process answers on is never taken over ([`BindError::InUse`]); a
/// stale one (connection refused) is replaced. The socket is bound under a temporary name,
/// made 0600, then renamed into place, so it is never reachable with wider permissions.
/// Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> Result<UapiListener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if let Err(source) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
    {
        return Err(BindError::DirUnavailable { dir, source });
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket_like() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(BindError::InUse(path.to_owned())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing a stale UAPI socket");
                }
                // Cannot even tell (e.g. permissions): someone else's; leave it.
                Err(_) => return Err(BindError::InUse(path.to_owned())),
            }
        }
        Ok(_) => return Err(BindError::NotSocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "uapi.sock".into());
    let tmp = dir.join(format!(".{file}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = match UnixListener::bind(&tmp) {
        Ok(l) => l,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EROFS | libc::EPERM)
            ) =>
        {
            return Err(BindError::DirUnavailable { dir, source: e });
        }
        Err(e) => return Err(io_err(e)),
    };
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std::fs::symlink_metadata(path));
    match placed {
        Ok(meta) => Ok(UapiListener {
            listener,
            path: path.to_owned(),
            ino: meta.ino(),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(io_err(e))
        }
    }
}

/// `FileType::is_socket` (Unix-only trait method), named for what `bind` needs.
trait SocketLike {
    fn is_socket_like(&self) -> bool;
}

impl SocketLike for std::fs::FileType {
    fn is_socket_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_socket(self)
    }
}

impl UapiListener {
    /// Where the socket is bound.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Serves `handler` on `listener` until `cancel` fires, then removes the socket file (if it is
/// still ours) and returns once every connection has ended.
pub async fn serve<H: Handler>(listener: UapiListener, handler: Arc<H>, cancel: CancellationToken) {
    serve_with_timeout(listener, handler, cancel, REQUEST_TIMEOUT).await;
}

/// [`serve`] with another request deadline (tests).
async fn serve_with_timeout<H: Handler>(
    listener: UapiListener,
    handler: Arc<H>,
    cancel: CancellationToken,
    timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                        tracing::warn!("UAPI: {MAX_CONNECTIONS} connections busy; closing a new one");
                        continue;
                    };
                    let handler = Arc::clone(&handler);
                    let cancel = cancel.clone();
                    connections.spawn(async move {
                        let _permit = permit;
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            _ = connection(stream, &*handler, timeout) => {}
                        }
                    });
                }
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "UAPI accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    connections.close();
    connections.wait().await;
    // Dropping the listener removes the socket file.
}

impl Drop for UapiListener {
    /// Removes the socket file, unless another process has put its own there since.
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One client: requests in a loop (wireguard-go allows several per connection).
async fn connection<H: Handler>(mut stream: UnixStream, handler: &H, timeout: Duration) {
    let secrets = stream.peer_cred().is_ok_and(|cred| {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        cred.uid() == me || cred.uid() == 0
    });
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Read until one request is complete, within the deadline.
        let framed = tokio::time::timeout(timeout, async {
            loop {
                match super::frame(&buf) {
                    Frame::Incomplete => {}
                    done => return Some(done),
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if buf.len() > MAX_REQUEST_BYTES + 2 * chunk.len() {
                    // `frame` refuses beyond the limit; this only bounds the buffer itself.
                    return Some(super::frame(&buf));
                }
            }
        })
        .await;
        let frame = match framed {
            Ok(Some(frame)) => frame,
            // End of input: a partial request is refused, never applied.
            Ok(None) => {
                if !buf.is_empty() {
                    tracing::debug!(bytes = buf.len(), "UAPI: request cut short; ignored");
                    let _ = reply(&mut stream, &format_errno(super::errno::EPROTO), timeout).await;
                }
                return;
            }
            Err(_) => {
                tracing::debug!("UAPI: request not complete within {timeout:?}; closing");
                return;
            }
        };
        match frame {
            Frame::Request { request, len } => {
                buf.drain(..len);
                let answer = match request {
                    Ok(Request::Get) => format_get(&handler.state(secrets)),
                    Ok(Request::Set(update)) => match handler.set(update).await {
                        Ok(()) => format_errno(0),
                        Err(refused) => {
                            tracing::warn!(
                                errno = refused.errno,
                                "UAPI set refused: {}",
                                refused.message
                            );
                            format_errno(refused.errno)
                        }
                    },
                    Err(e) => {
                        tracing::warn!("UAPI request refused, nothing changed: {e}");
                        format_errno(e.errno())
                    }
                };
                if reply(&mut stream, &answer, timeout).await.is_err() {
                    return;
                }
            }
            Frame::Invalid(e) => {
                tracing::warn!("UAPI: {e}; closing the connection");
                let _ = reply(&mut stream, &format_errno(e.errno()), timeout).await;
                return;
            }
            Frame::Incomplete => return,
        }
    }
}

async fn reply(stream: &mut UnixStream, text: &str, timeout: Duration) -> io::Result<()> {
    tokio::time::timeout(timeout, stream.write_all(text.as_bytes()))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// A handler that records what it was asked.
    #[derive(Default)]
    struct Recorder {
        sets: Mutex<Vec<DeviceUpdate>>,
    }

    impl Handler for Recorder {
        fn state(&self, secrets: bool) -> DeviceState {
            DeviceState {
                private_key: secrets.then(|| crate::wg::StaticSecret::from([7; 32])),
                listen_port: 51820,
                fwmark: 0,
                peers: Vec::new(),
            }
        }

        async fn set(&self, update: DeviceUpdate) -> Result<(), Refused> {
            let refuse = update.listen_port == Some(1);
            self.sets.lock().push(update);
            if refuse {
                return Err(Refused {
                    errno: super::super::errno::EADDRINUSE,
                    message: "port 1".into(),
                });
            }
            Ok(())
        }
    }

    async fn roundtrip(path: &Path, request: &[u8]) -> String {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(request).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_get_and_set_and_refuses_a_live_path() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("sub/wgt0.sock");
            let listener = bind(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert!(matches!(bind(&path), Err(BindError::InUse(_))));
            let handler = Arc::new(Recorder::default());
            let cancel = CancellationToken::new();
            let task = tokio::spawn(serve(listener, Arc::clone(&handler), cancel.clone()));

            let got = roundtrip(&path, b"get=1\n\n").await;
            assert!(
                got.starts_with(&format!("private_key={}\n", "07".repeat(32))),
                "{got}"
            );
            assert!(got.ends_with("listen_port=51820\nerrno=0\n\n"), "{got}");
            // Two requests on one connection, the second refused by the handler.
            let got = roundtrip(&path, b"set=1\nlisten_port=5\n\nset=1\nlisten_port=1\n\n").await;
            assert_eq!(got, "errno=0\n\nerrno=-98\n\n");
            // Malformed: errno, nothing reaches the handler.
            let got = roundtrip(&path, b"set=1\nlisten_port=x\n\n").await;
            assert_eq!(got, "errno=-22\n\n");
            let got = roundtrip(&path, b"set=1\nlisten_port").await;
            assert_eq!(got, "errno=-71\n\n", "a truncated request is refused");
            let got = roundtrip(&path, b"hello\n").await;
            assert_eq!(got, "errno=-71\n\n");
            assert_eq!(handler.sets.lock().len(), 2);

            cancel.cancel();
            task.await.unwrap();
            assert!(!path.exists(), "socket file removed at the end");
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test]
    async fn stale_sockets_are_replaced_and_other_files_left_alone() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("stale.sock");
            // A socket nobody listens on any more.
            drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
            assert!(path.exists());
            let listener = bind(&path).unwrap();
            assert_eq!(listener.path(), path);
            drop(listener);

            let file = dir.path().join("file.sock");
            std::fs::write(&file, b"not a socket").unwrap();
            assert!(matches!(bind(&file), Err(BindError::NotSocket(_))));
            assert_eq!(std::fs::read(&file).unwrap(), b"not a socket");
        })
        .await
        .expect("test timed out");
    }

    #[tokio::test]
    async fn an_idle_client_is_dropped_and_slots_are_bounded() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let deadline = Duration::from_millis(300);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("idle.sock");
            let listener = bind(&path).unwrap();
            let cancel = CancellationToken::new();
            let task = tokio::spawn(serve_with_timeout(
                listener,
                Arc::new(Recorder::default()),
                cancel.clone(),
                deadline,
            ));
            let mut idle = Vec::new();
            for _ in 0..MAX_CONNECTIONS {
                let mut s = UnixStream::connect(&path).await.unwrap();
                s.write_all(b"get=1\n").await.unwrap();
                idle.push(s);
            }
            // All slots taken: a new client is closed without an answer.
            let mut extra = UnixStream::connect(&path).await.unwrap();
            let _ = extra.write_all(b"get=1\n\n").await;
            let mut out = Vec::new();
            let _ = extra.read_to_end(&mut out).await;
            assert!(out.is_empty());
            // After the request deadline the idle clients are gone and a new one is served.
            tokio::time::sleep(deadline * 2).await;
            for s in &mut idle {
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.unwrap();
                assert!(out.is_empty());
            }
            let got = roundtrip(&path, b"get=1\n\n").await;
            assert!(got.ends_with("errno=0\n\n"));
            cancel.cancel();
            task.await.unwrap();
        })
        .await
        .expect("test timed out");
    }
}
