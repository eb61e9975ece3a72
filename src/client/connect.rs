//! How the SDK reaches an agent: the [`Connect`] trait and its adapter to hyper's connector.
//!
//! Owns: the `Connect` abstraction (one implementation per transport: the WireGuard `Node` in
//! production, plain loopback TCP in tests).
//! Leaves to the caller: which address to dial (the pool) and how the stream is carried.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

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
