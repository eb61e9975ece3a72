//! The serving layer over an in-memory netstack pair, spoken to with raw bytes: timeouts,
//! malformed requests, lingering close, long waits left alone, shutdown.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::routing::get;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use super::{ServeConfig, ServeStats, serve};
use crate::api::{self, AppState};
use crate::netstack::TcpStream;
use crate::netstack::tests::driver::Network;
use crate::proc::{Manager, ManagerConfig};

const SERVER: [u8; 4] = [100, 64, 0, 10];
const CLIENT: [u8; 4] = [100, 64, 0, 1];

struct Server {
    net: Network,
    addr: SocketAddr,
    cfg: ServeConfig,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    fn start(cfg: ServeConfig, router: axum::Router) -> Self {
        let net = Network::new(&[&[IpAddr::from(SERVER)], &[IpAddr::from(CLIENT)]], |c| c);
        let addr = SocketAddr::from((SERVER, 4));
        let listener = net.stacks[0].listen(addr).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listener, router, cfg.clone(), cancel.clone()));
        Self {
            net,
            addr,
            cfg,
            cancel,
            task,
        }
    }

    /// The API router with a default manager.
    fn api(cfg: ServeConfig) -> Self {
        let manager = Manager::new(ManagerConfig::default());
        Self::start(cfg, api::router(AppState::new(manager)))
    }

    async fn connect(&self) -> TcpStream {
        self.net.stacks[1].connect(self.addr).await.unwrap()
    }

    fn stats(&self) -> ServeStats {
        self.cfg.counters.snapshot()
    }

    /// Waits (bounded) until the server side holds no socket.
    async fn sockets_freed(&self) {
        for _ in 0..300 {
            if self.net.stacks[0].counters().sockets_open == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server sockets: {:?}", self.net.stacks[0].counters());
    }
}

fn fast() -> ServeConfig {
    ServeConfig {
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        send_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    }
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    timeout(Duration::from_secs(30), f)
        .await
        .expect("test timed out")
}

/// Everything until the server closes (or an error such as a reset).
async fn read_all(s: &mut TcpStream) -> io::Result<String> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// One response on a keep-alive connection: status and body (content-length framed).
async fn read_response<R: AsyncRead + Unpin>(s: &mut R) -> (u16, String) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = head[9..12].parse().unwrap();
    (
        status,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned(),
    )
}

fn message(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_lines_and_headers_get_a_json_400() {
    bounded(async {
        let srv = Server::api(ServeConfig::default());
        for (i, raw) in [
            &b"G\0T /api/v0/health HTTP/1.1\r\nhost: a\r\n\r\n"[..],
            b"GET /api/v0/health HTTP/1.1\r\nho\0st: a\r\n\r\n",
            b"GET /api/v0/health HTTP/1.1\r\nhost: a\x01b\r\n\r\n",
            b"GET /api/v0/health HTTP/9.9\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello\r\n\r\n",
        ]
        .iter()
        .enumerate()
        {
            let mut s = srv.connect().await;
            s.write_all(raw).await.unwrap();
            let answer = read_all(&mut s).await.expect("an answer, not a reset");
            assert!(
                answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{i}: {answer}"
            );
            let body = answer.split_once("\r\n\r\n").unwrap().1;
            assert!(
                message(body).contains("Malformed HTTP request"),
                "{i}: {body}"
            );
        }
        assert_eq!(srv.stats().malformed_requests, 5);
        // A well-formed request on a fresh connection is still served.
        let mut s = srv.connect().await;
        s.write_all(b"GET /api/v0/health HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await.0, 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_a_json_431() {
    bounded(async {
        let srv = Server::api(ServeConfig::default());
        let mut s = srv.connect().await;
        let mut raw = b"GET /api/v0/health HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            raw.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        s.write_all(&raw).await.unwrap();
        let answer = read_all(&mut s).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(
            answer.contains("Request headers are too large."),
            "{answer}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_reset_within_the_header_timeout() {
    bounded(async {
        let srv = Server::api(fast());
        let t = Instant::now();
        let mut partial = srv.connect().await;
        partial
            .write_all(b"POST /api/v0/processes/start HTTP/1.1\r\nhost:")
            .await
            .unwrap();
        let mut silent = srv.connect().await;
        for s in [&mut partial, &mut silent] {
            let e = read_all(s).await.expect_err("reset");
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        }
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(srv.stats().header_timeouts, 2);
        drop((partial, silent));
        srv.sockets_freed().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_gracefully() {
    bounded(async {
        let srv = Server::api(fast());
        let mut s = srv.connect().await;
        for _ in 0..2 {
            s.write_all(b"GET /api/v0/health HTTP/1.1\r\nhost: a\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(read_response(&mut s).await.0, 200);
            // Pauses shorter than the idle timeout keep the connection.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rest = read_all(&mut s).await.expect("EOF, not a reset");
        assert_eq!(rest, "");
        let st = srv.stats();
        assert_eq!((st.idle_closes, st.requests, st.header_timeouts), (1, 2, 0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_trickling_body_gets_408() {
    bounded(async {
        let srv = Server::api(ServeConfig {
            body_min_rate: 1000,
            ..fast()
        });
        // Stalled: 10 of 100 announced bytes.
        let mut s = srv.connect().await;
        s.write_all(b"POST /api/v0/processes/start HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n{\"command\"")
            .await
            .unwrap();
        let (status, body) = read_response(&mut s).await;
        assert_eq!(status, 408, "{body}");
        assert_eq!(message(&body), "Request body not received in time.");
        // Trickling: a byte every 100 ms (pauses under the limit) is below 1000 B/s.
        let (mut r, mut w) = tokio::io::split(srv.connect().await);
        w.write_all(b"POST /api/v0/processes/start HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n")
            .await
            .unwrap();
        let t = Instant::now();
        let trickle = tokio::spawn(async move {
            for _ in 0..50 {
                if w.write_all(b" ").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let (status, _) = read_response(&mut r).await;
        assert_eq!(status, 408);
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        trickle.abort();
        assert_eq!(srv.stats().body_timeouts, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_reaches_a_client_that_is_still_sending() {
    bounded(async {
        let srv = Server::api(ServeConfig::default());
        let s = srv.connect().await;
        let (mut r, mut w) = tokio::io::split(s);
        let len = 3 << 20;
        let writer = tokio::spawn(async move {
            let head = format!(
                "POST /api/v0/processes/start HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
            );
            w.write_all(head.as_bytes()).await?;
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..len / chunk.len() {
                w.write_all(&chunk).await?;
            }
            io::Result::Ok(())
        });
        let mut answer = Vec::new();
        r.read_to_end(&mut answer)
            .await
            .expect("the 413 and a FIN, not a reset");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
        assert!(answer.contains("Request body is too large."), "{answer}");
        let _ = writer.await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_waits_are_not_cut_by_the_read_timeouts() {
    bounded(async {
        let srv = Server::api(fast());
        let mut s = srv.connect().await;
        let body = r#"{"command":"sleep 1; echo done"}"#;
        let start = format!(
            "POST /api/v0/processes/start HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(start.as_bytes()).await.unwrap();
        let (status, started) = read_response(&mut s).await;
        assert_eq!(status, 200, "{started}");
        let v: serde_json::Value = serde_json::from_str(&started).unwrap();
        let id = v["id"].as_str().unwrap();
        let wait =
            format!("GET /api/v0/processes/{id}/output?wait=true HTTP/1.1\r\nhost: a\r\n\r\n");
        s.write_all(wait.as_bytes()).await.unwrap();
        let (status, out) = read_response(&mut s).await;
        assert_eq!(status, 200);
        assert!(out.contains("done"), "{out}");
        assert_eq!(srv.stats().header_timeouts + srv.stats().idle_closes, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_reset_after_the_send_timeout() {
    bounded(async {
        let big = "x".repeat(8 << 20);
        let router = axum::Router::new().route("/big", get(move || async move { big.clone() }));
        let srv = Server::start(fast(), router);
        let mut s = srv.connect().await;
        s.write_all(b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        for _ in 0..300 {
            if srv.stats().send_timeouts == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(srv.stats().send_timeouts, 1);
        drop(s);
        srv.sockets_freed().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_finishes_in_flight_requests_then_returns() {
    bounded(async {
        let router = axum::Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "late"
            }),
        );
        let srv = Server::start(ServeConfig::default(), router);
        let mut s = srv.connect().await;
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        srv.cancel.cancel();
        let (status, body) = read_response(&mut s).await;
        assert_eq!((status, body.as_str()), (200, "late"));
        assert_eq!(read_all(&mut s).await.unwrap(), "", "then closed");
        timeout(Duration::from_secs(5), srv.task)
            .await
            .expect("serve returns")
            .unwrap();
        assert!(
            srv.net.stacks[1].connect(srv.addr).await.is_err(),
            "no longer listening"
        );
    })
    .await;
}
