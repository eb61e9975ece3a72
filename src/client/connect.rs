//! How the SDK reaches an agent: the [`Connect`] trait, its implementations for plain TCP (tests)
//! and for any connector behind one type ([`BoxConnector`]).
//!
//! Owns: the `Connect` abstraction (one implementation per transport: the WireGuard `Node` in
//! production, the control daemon's Unix socket, plain loopback TCP in tests).
//! Leaves to the caller: which address to dial (the pool) and how the stream is carried.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

/// Opens a byte stream to an agent's API address.
///
/// Implementations are cheap handles (`Clone`) onto a shared transport: every `AgentConn` of a
/// control replica shares one connector, and each keeps its own pool of connections on top.
pub trait Connect: Clone + Send + Sync + 'static {
    /// The byte stream a connection is.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Connects to `addr`. May take as long as the transport needs (a WireGuard handshake, TCP
    /// retransmissions); the SDK bounds it with its own connect timeout.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Prefix in front of every API path sent to the agent at `addr`: empty when the stream
    /// reaches the agent itself, `/agents/<addr>` through the control daemon, which forwards
    /// what follows to that agent.
    fn base_path(&self, addr: SocketAddr) -> String {
        let _ = addr;
        String::new()
    }
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

/// A byte stream of any transport.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Any connector behind one type, so that code choosing its transport at run time (the CLI:
/// the daemon's socket or its own node) holds one `AgentConn<BoxConnector>`. Costs one
/// allocation per new connection, none per request.
#[derive(Clone)]
pub struct BoxConnector(Arc<dyn DynConnect>);

impl BoxConnector {
    /// Boxes `connector`.
    pub fn new(connector: impl Connect) -> Self {
        Self(Arc::new(connector))
    }
}

type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Box<dyn Stream>>> + Send + 'a>>;

/// `Connect` in object-safe form.
trait DynConnect: Send + Sync {
    fn connect_boxed(&self, addr: SocketAddr) -> ConnectFuture<'_>;
    fn base_path_dyn(&self, addr: SocketAddr) -> String;
}

impl<C: Connect> DynConnect for C {
    fn connect_boxed(&self, addr: SocketAddr) -> ConnectFuture<'_> {
        Box::pin(async move {
            let s = self.connect(addr).await?;
            Ok(Box::new(s) as Box<dyn Stream>)
        })
    }

    fn base_path_dyn(&self, addr: SocketAddr) -> String {
        self.base_path(addr)
    }
}

impl Connect for BoxConnector {
    type Stream = Box<dyn Stream>;

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        self.0.connect_boxed(addr)
    }

    fn base_path(&self, addr: SocketAddr) -> String {
        self.0.base_path_dyn(addr)
    }
}
