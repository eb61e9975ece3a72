//! Following a process's output through the tunnel survives dropped connections: a process
//! prints a numbered line every 10 ms for 3 s; the follow loses its connection once (the SDK
//! resumes by itself) and then its whole control node (resumed through another replica with
//! `Range: bytes=<received>-`); every line arrives exactly once, in order.

mod common;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wgagent::api::types::StartProcessRequest;
use wgagent::client::{AgentConn, AgentOptions, Connect};
use wgagent::node::NodeConnector;

/// A connector whose streams can all be broken at once (they fail with a reset).
#[derive(Clone)]
struct Breakable {
    inner: NodeConnector,
    generation: Arc<AtomicU64>,
    connects: Arc<AtomicU64>,
}

struct BStream<S> {
    inner: S,
    born: u64,
    generation: Arc<AtomicU64>,
}

impl<S> BStream<S> {
    fn broken(&self) -> bool {
        self.generation.load(Ordering::SeqCst) != self.born
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "broken by the test")
}

impl<S: AsyncRead + Unpin> AsyncRead for BStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.broken() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.broken() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connect for Breakable {
    type Stream = BStream<<NodeConnector as Connect>::Stream>;
    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let inner = self.inner.connect(addr).await?;
        self.connects.fetch_add(1, Ordering::SeqCst);
        Ok(BStream {
            inner,
            born: self.generation.load(Ordering::SeqCst),
            generation: self.generation.clone(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_survives_a_dropped_connection_and_a_dead_control_node() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (agent, c1, c2) = agent_and_two_controls().await;
        let _manager = serve_api(&agent);
        let generation = Arc::new(AtomicU64::new(0));
        let connects = Arc::new(AtomicU64::new(0));
        let conn1 = AgentConn::new(
            Breakable {
                inner: c1.connector(),
                generation: generation.clone(),
                connects: connects.clone(),
            },
            api_addr(),
            AgentOptions::default(),
        );
        let conn2 = AgentConn::new(c2.connector(), api_addr(), AgentOptions::default());
        let id = conn1
            .start(&StartProcessRequest {
                command: "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); sleep 0.01; done"
                    .into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .id;

        let mut got: Vec<u8> = Vec::new();
        let lines = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
        {
            let mut s = std::pin::pin!(conn1.follow(&id, 0));
            let mut broke = false;
            while let Some(chunk) = s.next().await {
                got.extend_from_slice(&chunk.unwrap());
                if !broke && lines(&got) >= 50 {
                    // Drop 1: every connection of replica 1 breaks; the stream resumes itself.
                    generation.fetch_add(1, Ordering::SeqCst);
                    broke = true;
                }
                if lines(&got) >= 150 {
                    break;
                }
            }
        }
        // The pooled connection (the start's, reused by the follow) and the follow's own
        // reconnect after the break.
        assert!(
            connects.load(Ordering::SeqCst) >= 2,
            "the stream did not reconnect"
        );
        // Drop 2: replica 1 dies; replica 2 resumes at the byte received.
        c1.shutdown(Duration::from_secs(1)).await;
        let mut s = std::pin::pin!(conn2.follow(&id, got.len() as u64));
        while let Some(chunk) = s.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        let text = String::from_utf8(got).unwrap();
        let expected: String = (0..300).map(|i| format!("line-{i}\n")).collect();
        assert_eq!(text, expected);
    })
    .await
    .unwrap();
}
