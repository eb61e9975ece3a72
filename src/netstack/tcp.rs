//! Async TCP sockets over the netstack: [`TcpListener`] and [`TcpStream`].
//!
//! Each operation locks the stack, works on the smoltcp socket's buffers directly (one copy
//! between the caller's buffer and the socket's ring), and signals the driver so that the ACK,
//! window update, data or FIN goes out on the next poll. When an operation cannot proceed it
//! registers the task's waker with smoltcp, which wakes it from inside `poll`.
//!
//! smoltcp keeps ONE waker per direction per socket: the read half of a stream must be polled by
//! one task at a time, and so must the write half (the usual case; `tokio::io::split` is fine).
//! A second task polling the same direction would replace the first one's waker and leave it
//! hanging.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{RecvError, State};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Shared;
use super::config::PeerTag;
use super::stack::{ListenerId, Release};

/// Connects (see [`Netstack::connect`](super::Netstack::connect)).
pub(super) async fn connect(shared: Arc<Shared>, remote: SocketAddr) -> io::Result<TcpStream> {
    let (handle, local) = shared.stack.lock().connect(remote)?;
    // From here the stream owns the socket: an error or a cancelled future releases it.
    let stream = TcpStream {
        shared: shared.clone(),
        handle,
        local,
        remote,
        peer: None,
        write_shut: false,
        release: Release::Graceful,
    };
    shared.wake_driver();
    let established = poll_fn(|cx| {
        let mut stack = shared.stack.lock();
        let socket = stack.socket(handle);
        match socket.state() {
            State::SynSent | State::SynReceived => {
                socket.register_send_waker(cx.waker());
                Poll::Pending
            }
            // Closed straight from SYN-SENT: the peer answered with RST.
            State::Closed | State::Listen => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("connection to {remote} refused"),
            ))),
            _ => Poll::Ready(Ok(())),
        }
    });
    match tokio::time::timeout(shared.connect_timeout, established).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connection to {remote} timed out"),
        )),
    }
}

/// A listening socket with an accept queue (see `NetstackConfig::backlog`). Dropping it stops
/// listening and resets connections not yet accepted.
pub struct TcpListener {
    shared: Arc<Shared>,
    id: ListenerId,
    local: SocketAddr,
}

impl TcpListener {
    pub(super) fn new(shared: Arc<Shared>, id: ListenerId, local: SocketAddr) -> Self {
        Self { shared, id, local }
    }

    /// Waits for the next established connection.
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let shared = &self.shared;
        let id = self.id;
        let accepted = poll_fn(|cx| shared.stack.lock().poll_accept(id, cx.waker())).await;
        let a = accepted.ok_or_else(|| io::Error::other("listener is closed"))?;
        // A backlog slot is free again: let the driver put a LISTEN socket back if needed.
        shared.wake_driver();
        let stream = TcpStream {
            shared: shared.clone(),
            handle: a.handle,
            local: a.local,
            remote: a.remote,
            peer: a.peer,
            write_shut: false,
            release: Release::Graceful,
        };
        Ok((stream, a.remote))
    }

    /// The address this listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListener")
            .field("local", &self.local)
            .finish()
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.shared.stack.lock().unlisten(self.id);
        self.shared.wake_driver();
    }
}

impl axum::serve::Listener for TcpListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match TcpListener::accept(self).await {
                Ok(conn) => return conn,
                // Only happens if the listener was removed underneath us; back off like axum's
                // own listener does rather than spin.
                Err(e) => {
                    tracing::debug!(error = %e, "netstack: accept failed");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A TCP connection. Reads return EOF after the peer's FIN and `ConnectionReset` after an RST
/// (or an idle timeout); `shutdown` sends FIN and reading continues until the peer's EOF.
/// Dropping it closes the connection: RST if unread data remains, as Linux does, unless
/// [`set_lingering_close`](Self::set_lingering_close) asked for a lingering close, or
/// [`set_reset_on_close`](Self::set_reset_on_close) for an RST.
pub struct TcpStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
    local: SocketAddr,
    remote: SocketAddr,
    peer: Option<PeerTag>,
    write_shut: bool,
    release: Release,
}

impl TcpStream {
    /// Our end of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The remote end of the connection (a tunnel address).
    pub fn peer_addr(&self) -> SocketAddr {
        self.remote
    }

    /// The WireGuard peer an accepted connection came from (the one whose session carried its
    /// SYN); `None` for connections we opened.
    pub fn peer_tag(&self) -> Option<PeerTag> {
        self.peer
    }

    /// On drop, close gracefully even if unread data remains: FIN after the queued data, then
    /// discard what the peer still sends for at most `limit` (at most 60 s), then reset. A
    /// server uses it so that a reply it sent without reading the whole request (a 413, a 400)
    /// reaches a client that is still sending, instead of being destroyed by an RST.
    pub fn set_lingering_close(&mut self, limit: std::time::Duration) {
        self.release = Release::Linger(limit);
    }

    /// On drop, abort the connection (RST) whatever is queued in either direction: for a
    /// server giving up on a client that is too slow, so its socket is freed at once.
    pub fn set_reset_on_close(&mut self) {
        self.release = Release::Reset;
    }
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("peer", &self.peer)
            .finish()
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.shared.stack.lock().release(self.handle, self.release);
        self.shared.wake_driver();
    }
}

/// The error for a socket that can no longer carry data in some direction.
fn closed_error(state: State) -> io::Error {
    match state {
        State::Closed => io::ErrorKind::ConnectionReset.into(),
        _ => io::ErrorKind::NotConnected.into(),
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut stack = this.shared.stack.lock();
        let socket = stack.socket(this.handle);
        let mut read = 0;
        // Twice at most: the ring buffer may hand out its data in two pieces.
        while buf.remaining() > 0 {
            let r = socket.recv(|data| {
                let n = data.len().min(buf.remaining());
                buf.put_slice(&data[..n]);
                (n, n)
            });
            match r {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(RecvError::Finished) if read == 0 => return Poll::Ready(Ok(())),
                Err(RecvError::InvalidState) if read == 0 => {
                    return Poll::Ready(Err(closed_error(socket.state())));
                }
                Err(_) => break,
            }
        }
        if read > 0 || buf.remaining() == 0 {
            stack.note_read(this.handle, read);
            drop(stack);
            // The window opened: the driver may need to tell the peer.
            this.shared.wake_driver();
            return Poll::Ready(Ok(()));
        }
        socket.register_recv_waker(cx.waker());
        Poll::Pending
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut stack = this.shared.stack.lock();
        let socket = stack.socket(this.handle);
        match socket.send_slice(data) {
            Ok(0) => {
                socket.register_send_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                stack.note_written(this.handle, n);
                drop(stack);
                this.shared.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(_) => match socket.state() {
                State::Closed => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
                _ => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            },
        }
    }

    /// Data is in the socket's send buffer and the driver has been signalled; there is no
    /// further user-space buffer to flush (as with tokio's `TcpStream`).
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Sends FIN after the queued data; the read half stays open until the peer's FIN.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_shut {
            this.write_shut = true;
            this.shared.stack.lock().socket(this.handle).close();
            this.shared.wake_driver();
        }
        Poll::Ready(Ok(()))
    }
}
