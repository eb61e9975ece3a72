//! How the SDK reaches an agent: the [`Connect`] trait and its adapter to hyper's connector.
//!
//! Owns: the `Connect` abstraction (one implementation per transport: the WireGuard `Node` in
//! production, plain loopback TCP in tests), the connect timeout, and the glue that lets
//! `hyper_util`'s pooled client use any `Connect`.
//! Leaves to the caller: which address to dial and how the stream itself is carried.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Opens a byte stream to an agent's API address.
///
/// Implementations are cheap handles (`Clone`) onto a shared transport: every `AgentConn` of a
/// control replica shares one connector, and each keeps its own pool of connections on top.
pub trait Connect: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Connects to `addr`. May take as long as the transport needs (a WireGuard handshake, TCP
    /// retransmissions); the SDK bounds it with its own connect timeout.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Plain host TCP. For tests and benchmarks only: the agent never serves on host TCP, but tests
/// may serve `api::router` on `127.0.0.1:0` and reach it with this.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connect for TcpConnector {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        // Requests are small; never let Nagle hold back the tail of one.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// A stream from a [`Connect`], made into something hyper's pool can hold.
pub(crate) struct Stream<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S> Connection for Stream<S> {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// hyper's connector: a `tower::Service<Uri>` dialling one fixed agent through `C`.
///
/// Each `AgentConn` owns its own pooled client, so the address is fixed here rather than parsed
/// back out of the request URI (which `AgentConn` itself builds from the same address).
#[derive(Clone)]
pub(crate) struct HyperConnector<C> {
    pub(crate) inner: C,
    pub(crate) addr: SocketAddr,
    pub(crate) timeout: Duration,
}

type ConnectFuture<S> =
    Pin<Box<dyn Future<Output = io::Result<TokioIo<Stream<S>>>> + Send + 'static>>;

impl<C: Connect> tower::Service<Uri> for HyperConnector<C> {
    type Response = TokioIo<Stream<C::Stream>>;
    type Error = io::Error;
    type Future = ConnectFuture<C::Stream>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let (inner, addr, limit) = (self.inner.clone(), self.addr, self.timeout);
        Box::pin(async move {
            match tokio::time::timeout(limit, inner.connect(addr)).await {
                Ok(Ok(s)) => Ok(TokioIo::new(Stream(s))),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {limit:?}"),
                )),
            }
        })
    }
}
