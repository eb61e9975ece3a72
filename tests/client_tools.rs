//! The SDK (`client::AgentConn`), the LLM tools (`tool::Tools`) and the MCP server against a real
//! `api::router` + `proc::Manager` served on loopback TCP, reached with `TcpConnector`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use wgagent::api::types::StartProcessRequest;
use wgagent::api::{AppState, router};
use wgagent::client::{AgentConn, AgentOptions, ClientError, Connect, TcpConnector};
use wgagent::proc::{Manager, ManagerConfig};
use wgagent::signal::Signal;
use wgagent::tool::{ExecuteArgs, Tools};

mod common;

const T: Duration = Duration::from_secs(60);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f).await.expect("test timed out")
}

/// An agent API on 127.0.0.1:0 that counts accepted connections.
struct Agent {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    manager: Manager,
    server: tokio::task::JoinHandle<()>,
}

impl Agent {
    async fn spawn() -> Self {
        let manager = Manager::new(ManagerConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = accepts.clone();
        let listener = listener.tap_io(move |s| {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = s.set_nodelay(true);
        });
        let app = router(AppState::new(manager.clone()));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            accepts,
            manager,
            server,
        }
    }

    fn conn(&self) -> AgentConn<TcpConnector> {
        AgentConn::new(TcpConnector, self.addr, AgentOptions::default())
    }

    fn tools(&self) -> Tools<TcpConnector> {
        Tools::single(self.conn())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn start_req(command: &str) -> StartProcessRequest {
    StartProcessRequest {
        command: command.to_owned(),
        ..StartProcessRequest::default()
    }
}

#[track_caller]
fn assert_status(r: Result<impl std::fmt::Debug, ClientError>, status: u16, message: &str) {
    match r {
        Err(ClientError::Status {
            status: s,
            message: m,
            ..
        }) => {
            assert_eq!(s, status);
            assert!(
                m.starts_with(message),
                "{m:?} does not start with {message:?}"
            );
        }
        other => panic!("expected HTTP {status}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------- SDK

#[tokio::test]
async fn sdk_every_method() {
    within(async {
        let agent = Agent::spawn().await;
        let conn = agent.conn();
        let health = conn.health().await.unwrap();
        assert_eq!(health.status, "ok");

        let id = conn.start(&start_req("echo hello")).await.unwrap().id;
        let out = conn
            .output(&id, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert!(!out.running);
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.output, "hello\n");

        let sleeper = conn.start(&start_req("sleep 30")).await.unwrap().id;
        let list = conn.list().await.unwrap();
        assert_eq!(list.processes.len(), 2);
        assert_eq!(list.processes[0].id, sleeper, "running first");
        assert!(list.processes[0].running);
        assert_eq!(conn.health().await.unwrap().processes_running, 1);

        let snap = conn.output(&sleeper, None).await.unwrap();
        assert!(snap.running);
        let t = Instant::now();
        let waited = conn
            .output(&sleeper, Some(Duration::from_millis(300)))
            .await
            .unwrap();
        assert!(waited.running);
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "the agent held the answer"
        );

        let msg = conn.signal(&sleeper, Signal::Kill).await.unwrap();
        assert_eq!(
            msg.message,
            format!("Signal \"kill\" sent to process \"{sleeper}\".")
        );
        let done = conn
            .output(&sleeper, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert!(!done.running);
        assert_eq!(done.exit_code, Some(-1));

        conn.remove(&id).await.unwrap();
        assert_status(conn.output(&id, None).await, 404, "Process \"");
    })
    .await
}

#[tokio::test]
async fn sdk_agent_errors_map_to_status() {
    within(async {
        let agent = Agent::spawn().await;
        let conn = agent.conn();
        assert_status(
            conn.output("nope", None).await,
            404,
            "Process \"nope\" not found.",
        );
        assert_status(
            conn.signal("nope", Signal::Kill).await,
            404,
            "Process \"nope\" not found.",
        );
        assert_status(
            conn.remove("nope").await,
            404,
            "Process \"nope\" not found.",
        );
        assert_status(
            conn.start(&start_req("")).await,
            400,
            "Command is required.",
        );
        // An unknown name is refused by the type, before the wire (the agent's 400 for it is
        // tested in tests/api.rs).
        assert!("stop".parse::<Signal>().is_err());

        let id = conn.start(&start_req("sleep 30")).await.unwrap().id;
        assert_status(conn.remove(&id).await, 409, "");
        conn.signal(&id, Signal::Kill).await.unwrap();
        conn.output(&id, Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_status(
            conn.signal(&id, Signal::Kill).await,
            409,
            &format!("Process \"{id}\" is not running."),
        );

        // Ids are percent-encoded: these reach the agent as one path segment.
        assert_status(
            conn.output("a/b?c#d", None).await,
            404,
            "Process \"a/b?c#d\" not found.",
        );
        assert_status(
            conn.output("..", None).await,
            404,
            "Process \"..\" not found.",
        );
    })
    .await
}

#[tokio::test]
async fn sdk_reuses_one_connection() {
    within(async {
        let agent = Agent::spawn().await;
        let conn = agent.conn();
        let id = conn.start(&start_req("true")).await.unwrap().id;
        for i in 0..10 {
            match i % 3 {
                0 => drop(conn.health().await.unwrap()),
                1 => drop(conn.list().await.unwrap()),
                _ => drop(
                    conn.output(&id, Some(Duration::from_secs(5)))
                        .await
                        .unwrap(),
                ),
            }
        }
        // Errors do not cost the connection either.
        assert_status(conn.output("missing", None).await, 404, "");
        conn.clone().health().await.unwrap();
        assert_eq!(
            agent.accepts.load(Ordering::SeqCst),
            1,
            "one TCP connection for all calls"
        );

        // The counter does see new connections: without a pool, every call opens one.
        let unpooled = AgentConn::new(
            TcpConnector,
            agent.addr,
            AgentOptions {
                max_idle: 0,
                ..AgentOptions::default()
            },
        );
        for _ in 0..3 {
            unpooled.health().await.unwrap();
        }
        assert_eq!(agent.accepts.load(Ordering::SeqCst), 4);
    })
    .await
}

/// The pool hands a connection back before the call returns, so even on a multi-thread runtime
/// a call right after the previous one never finds the pool empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_reuse_is_deterministic_on_a_multi_thread_runtime() {
    within(async {
        let agent = Agent::spawn().await;
        for round in 0..20 {
            let before = agent.accepts.load(Ordering::SeqCst);
            let conn = agent.conn();
            for _ in 0..10 {
                conn.health().await.unwrap();
            }
            let opened = agent.accepts.load(Ordering::SeqCst) - before;
            assert_eq!(opened, 1, "round {round}");
        }
    })
    .await
}

#[tokio::test]
async fn sdk_replaces_connections_the_agent_closed() {
    within(async {
        // Every answer says `Connection: close`.
        let agent = Agent::spawn().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = accepts.clone();
        let listener = listener.tap_io(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let app = router(AppState::new(agent.manager.clone())).layer(
            axum::middleware::map_response(|mut r: axum::response::Response| async move {
                r.headers_mut()
                    .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                r
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let conn = AgentConn::new(TcpConnector, addr, AgentOptions::default());
        for _ in 0..5 {
            conn.list().await.unwrap();
        }
        assert_eq!(accepts.load(Ordering::SeqCst), 5);

        // An agent that closes idle connections silently (no `Connection: close`).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = accepts.clone();
        let closer = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            while let Ok((mut s, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0);
                    got.extend_from_slice(&buf[..n]);
                }
                let body = r#"{"processes":[]}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
                drop(s);
            }
        });
        let conn = AgentConn::new(TcpConnector, addr, AgentOptions::default());
        for _ in 0..3 {
            assert!(conn.list().await.unwrap().processes.is_empty());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Back to back: the close may not be noticed before the next request goes out; the
        // request is then sent again on a new connection.
        for _ in 0..10 {
            assert!(conn.list().await.unwrap().processes.is_empty());
        }
        assert_eq!(accepts.load(Ordering::SeqCst), 13);
        server.abort();
        closer.abort();
    })
    .await
}

/// An agent whose connections answer one request and drop the next one unanswered (as when an
/// agent closes an idle connection just as a request arrives).
#[tokio::test]
async fn sdk_retries_a_get_the_agent_dropped_but_not_a_post() {
    within(async {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = accepts.clone();
        let server = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for answered in [true, false] {
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        if answered {
                            let body = r#"{"processes":[]}"#;
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            s.write_all(resp.as_bytes()).await.unwrap();
                        }
                    }
                    // second request read, never answered: close
                });
            }
        });
        let conn = AgentConn::new(TcpConnector, addr, AgentOptions::default());
        for _ in 0..5 {
            assert!(conn.list().await.unwrap().processes.is_empty());
        }
        assert_eq!(
            accepts.load(Ordering::SeqCst),
            5,
            "each GET after the first was resent once"
        );
        let before = accepts.load(Ordering::SeqCst);
        match conn.start(&start_req("true")).await {
            Err(ClientError::Http(_)) => {}
            other => panic!("a POST is not resent: expected Http error, got {other:?}"),
        }
        assert_eq!(accepts.load(Ordering::SeqCst), before);
        server.abort();
    })
    .await
}

#[tokio::test]
async fn sdk_unreachable_agent_fails_fast() {
    within(async {
        // A port nobody listens on: refused at once.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let conn = AgentConn::new(TcpConnector, closed, AgentOptions::default());
        match conn.health().await {
            Err(ClientError::Unreachable {
                addr,
                waited,
                source,
            }) => {
                assert_eq!(addr, closed);
                assert!(waited < Duration::from_secs(2), "{waited:?}");
                assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused);
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    })
    .await
}

/// A transport on which connections never complete (a peer with no WireGuard session).
#[derive(Clone)]
struct Blackhole;

impl Connect for Blackhole {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self, _addr: SocketAddr) -> io::Result<Self::Stream> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn sdk_connect_timeout_bounds_the_wait() {
    within(async {
        let opts = AgentOptions {
            connect_timeout: Duration::from_millis(300),
            ..AgentOptions::default()
        };
        let addr: SocketAddr = "127.0.0.1:4".parse().unwrap();
        let conn = AgentConn::new(Blackhole, addr, opts);
        let t = Instant::now();
        let err = conn.list().await.unwrap_err();
        let took = t.elapsed();
        let msg = err.to_string();
        match err {
            ClientError::Unreachable { waited, source, .. } => {
                assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(2));
                assert_eq!(source.kind(), io::ErrorKind::TimedOut);
                assert!(msg.contains("unreachable after"), "{msg}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(took < Duration::from_secs(2), "{took:?}");
    })
    .await
}

#[tokio::test]
async fn sdk_request_timeout_when_the_agent_never_answers() {
    within(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s); // accept, read nothing, answer nothing
            }
        });
        let opts = AgentOptions {
            request_timeout: Duration::from_millis(300),
            ..AgentOptions::default()
        };
        let conn = AgentConn::new(TcpConnector, addr, opts);
        let t = Instant::now();
        match conn.health().await {
            Err(ClientError::Timeout { after }) => assert_eq!(after, Duration::from_millis(300)),
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(2));
        // A server-side wait extends the request timeout by the wait.
        let t = Instant::now();
        match conn.output("x", Some(Duration::from_millis(400))).await {
            Err(ClientError::Timeout { after }) => assert_eq!(after, Duration::from_millis(700)),
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(t.elapsed() >= Duration::from_millis(650));
        hold.abort();
    })
    .await
}

// -------------------------------------------------------------------------------------- tools

async fn call<C: Connect>(tools: &Tools<C>, name: &str, args: Value) -> Value {
    let reply = tools.call(name, &args).await;
    assert!(!reply.is_error, "{name} {args}: {}", reply.text());
    reply.value
}

#[tokio::test]
async fn execute_true_returns_in_about_one_round_trip() {
    within(async {
        let agent = Agent::spawn().await;
        let tools = agent.tools();
        let r = call(&tools, "execute", json!({"command": "true"})).await;
        assert_eq!(r["success"], true, "{r}");
        assert_eq!(r["exit_code"], 0);
        assert_eq!(r["output"], "");
        let ms = r["wall_duration_ms"].as_u64().unwrap();
        // No polling interval: the reference needed >= 200 ms for this.
        assert!(ms < 1000, "{ms} ms");
        for absent in ["error", "note", "truncated", "background_process_id"] {
            assert!(r.get(absent).is_none(), "{absent} in {r}");
        }
    })
    .await
}

#[tokio::test]
async fn execute_reports_failures_and_output() {
    within(async {
        let agent = Agent::spawn().await;
        let tools = agent.tools();
        let r = call(
            &tools,
            "execute",
            json!({"command": "echo out; echo err >&2; exit 3"}),
        )
        .await;
        assert_eq!(r["success"], false);
        assert_eq!(r["exit_code"], 3);
        assert_eq!(r["output"], "out\nerr\n");
        assert!(
            r.get("error").is_none(),
            "a non-zero exit is not a tool error"
        );

        let dir = tempfile::tempdir().unwrap();
        let r = call(
            &tools,
            "execute",
            json!({"command": "pwd", "workdir": dir.path().to_str().unwrap()}),
        )
        .await;
        assert_eq!(
            r["output"].as_str().unwrap().trim_end(),
            dir.path().canonicalize().unwrap().to_str().unwrap()
        );

        let r = call(
            &tools,
            "execute",
            json!({"command": "true", "workdir": "/no/such/dir"}),
        )
        .await;
        assert_eq!(r["success"], false);
        assert!(
            r["error"].as_str().unwrap().starts_with("start process: "),
            "{r}"
        );
    })
    .await
}

#[tokio::test]
async fn execute_sets_the_non_interactive_environment() {
    within(async {
        let agent = Agent::spawn().await;
        let r = call(
            &agent.tools(),
            "execute",
            json!({"command": "echo $GIT_EDITOR $GIT_SEQUENCE_EDITOR $EDITOR $VISUAL \
                $GIT_TERMINAL_PROMPT $NO_COLOR $TERM $PAGER $GIT_PAGER $MANPAGER $DEBIAN_FRONTEND"}),
        )
        .await;
        assert_eq!(r["output"], "true true true true 0 1 dumb cat cat cat noninteractive\n");
    })
    .await
}

#[tokio::test]
async fn execute_timeout_hands_over_the_running_process() {
    within(async {
        let agent = Agent::spawn().await;
        let tools = agent.tools();
        let t = Instant::now();
        let r = call(
            &tools,
            "execute",
            json!({"command": "echo started; sleep 2; echo finished", "timeout": "500ms"}),
        )
        .await;
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        assert_eq!(r["success"], false);
        assert_eq!(r["exit_code"], -1);
        assert_eq!(r["output"], "started\n");
        assert!(
            r["error"].as_str().unwrap().contains("500ms timeout"),
            "{r}"
        );
        assert!(
            r["note"].as_str().unwrap().contains("process_output"),
            "{r}"
        );
        let id = r["background_process_id"].as_str().unwrap().to_owned();

        // Still running on the agent, not killed.
        let rec = agent.manager.get(&id.as_str().into()).unwrap();
        assert!(rec.exit().is_none());

        // Snapshot: running.
        let r = call(
            &tools,
            "process_output",
            json!({"process_id": id, "wait": 0}),
        )
        .await;
        assert_eq!(r["success"], true);
        assert!(
            r["note"]
                .as_str()
                .unwrap()
                .starts_with("process is still running")
        );

        // Server-side wait until it ends.
        let r = call(
            &tools,
            "process_output",
            json!({"process_id": id, "wait": "20s"}),
        )
        .await;
        assert_eq!(r["success"], true, "{r}");
        assert_eq!(r["exit_code"], 0);
        assert_eq!(r["output"], "started\nfinished\n");
        assert!(r.get("note").is_none());
        assert!(t.elapsed() < Duration::from_secs(5));

        let r = call(&tools, "process_output", json!({"process_id": "nope"})).await;
        assert_eq!(r["success"], false);
        assert!(r["error"].as_str().unwrap().contains("not found"), "{r}");
    })
    .await
}

#[tokio::test]
async fn trailing_ampersand_starts_a_background_process() {
    within(async {
        let agent = Agent::spawn().await;
        let tools = agent.tools();
        let t = Instant::now();
        let r = call(&tools, "execute", json!({"command": "sleep 30 &"})).await;
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(r["success"], true, "{r}");
        let id = r["background_process_id"].as_str().unwrap().to_owned();
        assert!(r["note"].as_str().unwrap().contains("lone `&`"));

        let list = call(&tools, "process_list", json!({})).await;
        let p = &list["processes"][0];
        assert_eq!(p["id"], id.as_str());
        assert_eq!(p["command"], "sleep 30", "the & was removed");
        assert_eq!(p["background"], true);
        assert_eq!(p["running"], true);

        let r = call(
            &tools,
            "process_signal",
            json!({"process_id": id, "signal": "kill"}),
        )
        .await;
        assert_eq!(r["success"], true, "{r}");
        assert_eq!(r["exit_code"], -1);
        assert!(r["note"].as_str().unwrap().contains("has exited"), "{r}");
        let list = call(&tools, "process_list", json!({})).await;
        assert_eq!(list["processes"][0]["running"], false);
        assert_eq!(list["processes"][0]["exit_signal"], "SIGKILL");

        // `&&` is not a background request.
        let r = call(&tools, "execute", json!({"command": "true && echo ok"})).await;
        assert_eq!(r["output"], "ok\n");
        assert!(r.get("background_process_id").is_none());

        // Explicit background.
        let r = call(
            &tools,
            "execute",
            json!({"command": "echo bg", "run_in_background": true}),
        )
        .await;
        let id = r["background_process_id"].as_str().unwrap().to_owned();
        let r = call(
            &tools,
            "process_output",
            json!({"process_id": id, "wait": "10s"}),
        )
        .await;
        assert_eq!(r["output"], "bg\n");
    })
    .await
}

#[tokio::test]
async fn process_signal_interrupt_and_validation() {
    within(async {
        let agent = Agent::spawn().await;
        let tools = agent.tools();
        let r = call(
            &tools,
            "execute",
            json!({"command": "trap 'echo caught; exit 7' INT; echo ready; while :; do sleep 0.05; done",
                   "run_in_background": true}),
        )
        .await;
        let id = r["background_process_id"].as_str().unwrap().to_owned();
        let r = call(&tools, "process_output", json!({"process_id": id, "wait": "300ms"})).await;
        assert_eq!(r["output"], "ready\n");
        let r = call(&tools, "process_signal", json!({"process_id": id, "signal": "SIGINT"})).await;
        assert_eq!(r["exit_code"], 7, "{r}");
        assert_eq!(r["output"], "ready\ncaught\n");

        let bad = tools.call("process_signal", &json!({"process_id": id, "signal": "stop"})).await;
        assert!(bad.is_error);
        assert!(bad.value["error"].as_str().unwrap().contains("signal must be one of"));
        let r = call(&tools, "process_signal", json!({"process_id": id, "signal": "kill"})).await;
        assert_eq!(r["success"], false);
        assert!(r["error"].as_str().unwrap().contains("is not running"), "{r}");
    })
    .await
}

#[tokio::test]
async fn big_output_is_capped_and_keeps_its_last_line() {
    within(async {
        let agent = Agent::spawn().await;
        let r = call(
            &agent.tools(),
            "execute",
            json!({"command": "seq 1 20000; echo LAST LINE"}),
        )
        .await;
        let out = r["output"].as_str().unwrap();
        assert!(out.len() <= 32768, "{}", out.len());
        assert!(out.starts_with("1\n2\n3\n"));
        assert!(
            out.ends_with("19999\n20000\nLAST LINE\n"),
            "{:?}",
            &out[out.len() - 40..]
        );
        assert!(out.contains("[omitted "));
        assert!(
            r["truncated"]["omitted_bytes"].as_u64().unwrap() > 60_000,
            "{}",
            r["truncated"]
        );
        assert_eq!(r["success"], true);
    })
    .await
}

#[tokio::test]
async fn file_dumps_get_an_advisory_note() {
    within(async {
        let agent = Agent::spawn().await;
        let tools = agent.tools();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "alpha\nbeta\n").unwrap();
        let w = dir.path().to_str().unwrap();
        for cmd in [
            "cat notes.txt",
            "head -n 1 notes.txt",
            &format!("cd {w} && tail -1 notes.txt"),
        ] {
            let r = call(&tools, "execute", json!({"command": cmd, "workdir": w})).await;
            assert_eq!(r["success"], true, "{r}");
            assert!(
                r["note"].as_str().unwrap().contains("read_file"),
                "{cmd}: {r}"
            );
        }
        for cmd in [
            "echo hi | cat",
            "grep -r alpha .",
            "cat notes.txt | grep beta",
        ] {
            let r = call(&tools, "execute", json!({"command": cmd, "workdir": w})).await;
            assert!(r.get("note").is_none(), "{cmd}: {r}");
        }
    })
    .await
}

#[tokio::test]
async fn invalid_calls_are_tool_errors() {
    within(async {
        let agent = Agent::spawn().await;
        let tools = agent.tools();
        for (name, args, want) in [
            ("execute", json!({}), "command is required"),
            (
                "execute",
                json!({"command": "ls", "timeout": "soon"}),
                "invalid timeout \"soon\"",
            ),
            (
                "execute",
                json!({"command": "ls", "timeout": 0}),
                "greater than zero",
            ),
            ("process_output", json!({}), "process_id is required"),
            (
                "process_signal",
                json!({"process_id": "x"}),
                "signal is required",
            ),
            ("nope", json!({}), "unknown tool"),
            ("execute", json!("ls"), "must be a JSON object"),
        ] {
            let r = tools.call(name, &args).await;
            assert!(r.is_error, "{name} {args}");
            assert_eq!(r.value["success"], false);
            let e = r.value["error"].as_str().unwrap();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
        assert_eq!(agent.manager.list().len(), 0, "nothing was started");
    })
    .await
}

#[tokio::test]
async fn several_agents_take_an_agent_argument() {
    within(async {
        let (a, b) = (Agent::spawn().await, Agent::spawn().await);
        let tools = Tools::new([
            ("alpha".to_owned(), a.conn()),
            ("beta".to_owned(), b.conn()),
        ])
        .unwrap();
        assert_eq!(
            tools.agent_names(),
            Some(vec!["alpha".to_owned(), "beta".to_owned()])
        );
        let defs = tools.definitions();
        assert_eq!(
            defs[0].input_schema["properties"]["agent"]["enum"],
            json!(["alpha", "beta"])
        );

        let r = call(
            &tools,
            "execute",
            json!({"agent": "beta", "command": "echo on-b"}),
        )
        .await;
        assert_eq!(r["output"], "on-b\n");
        assert_eq!(a.manager.list().len(), 0);
        assert_eq!(b.manager.list().len(), 1);

        let missing = tools.call("process_list", &json!({})).await;
        assert!(missing.is_error);
        assert!(
            missing.value["error"]
                .as_str()
                .unwrap()
                .contains("\"alpha\", \"beta\"")
        );
        let unknown = tools.call("process_list", &json!({"agent": "gamma"})).await;
        assert!(
            unknown.value["error"]
                .as_str()
                .unwrap()
                .starts_with("unknown agent \"gamma\"")
        );

        assert!(Tools::<TcpConnector>::new([]).is_err());
        assert!(Tools::new([("x".to_owned(), a.conn()), ("x".to_owned(), b.conn())]).is_err());
    })
    .await
}

#[tokio::test]
async fn typed_execute_api() {
    within(async {
        let agent = Agent::spawn().await;
        let tools = agent.tools();
        let conn = agent.conn();
        let r = tools
            .execute(&conn, ExecuteArgs::new("printf 'a\\nb'"))
            .await;
        assert!(r.success);
        assert_eq!(r.output.as_deref(), Some("a\nb"));
    })
    .await
}

#[tokio::test]
async fn unreachable_agent_gives_a_clear_error() {
    within(async {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let tools = Tools::single(AgentConn::new(
            TcpConnector,
            closed,
            AgentOptions::default(),
        ));
        let r = call(&tools, "execute", json!({"command": "true"})).await;
        assert_eq!(r["success"], false);
        let e = r["error"].as_str().unwrap();
        assert!(e.starts_with("start process: agent 127.0.0.1:"), "{e}");
        assert!(e.contains("unreachable after"), "{e}");
    })
    .await
}

/// An agent in the style of Coder's: no server-side wait (answers `wait=true` at once) and no
/// head-tail rendering (sends everything). The tool must pace its polls and cap the output.
#[tokio::test]
async fn agent_without_server_wait_or_output_cap() {
    use axum::routing::{get, post};
    within(async {
        let polls = Arc::new(AtomicUsize::new(0));
        let counter = polls.clone();
        let big: String = (1..=20000).map(|i| format!("{i}\n")).collect::<String>() + "LAST LINE\n";
        let app = axum::Router::new()
            .route(
                "/api/v0/processes/start",
                post(|| async { axum::Json(json!({"id": "c1", "started": true})) }),
            )
            .route(
                "/api/v0/processes/{id}/output",
                get(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let big = big.clone();
                    async move {
                        axum::Json(if n < 3 {
                            json!({"output": "", "running": true})
                        } else {
                            json!({"output": big, "running": false, "exit_code": 0})
                        })
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let tools = Tools::single(AgentConn::new(TcpConnector, addr, AgentOptions::default()));
        let t = Instant::now();
        let r = call(
            &tools,
            "execute",
            json!({"command": "seq 1 20000", "timeout": "30s"}),
        )
        .await;
        let took = t.elapsed();
        assert_eq!(polls.load(Ordering::SeqCst), 4);
        assert!(
            took >= Duration::from_millis(550),
            "polls are paced: {took:?}"
        );
        assert_eq!(r["success"], true);
        let out = r["output"].as_str().unwrap();
        assert!(out.len() <= 32768, "{}", out.len());
        assert!(out.starts_with("1\n2\n"));
        assert!(out.ends_with("19999\n20000\nLAST LINE\n"));
        assert_eq!(r["truncated"]["original_bytes"], 108_904);
        server.abort();
    })
    .await
}

// ---------------------------------------------------------------------------------------- MCP

/// A line-oriented JSON-RPC client over an in-memory pipe to `tool::mcp::serve`.
struct McpClient {
    tx: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    rx: tokio::io::Lines<BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
    next_id: u64,
}

impl McpClient {
    fn start(tools: Tools<TcpConnector>) -> (Self, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (server_r, server_w) = tokio::io::split(server);
        let task = tokio::spawn(wgagent::tool::mcp::serve(tools, server_r, server_w));
        let (r, w) = tokio::io::split(client);
        let c = Self {
            tx: w,
            rx: BufReader::new(r).lines(),
            next_id: 1,
        };
        (c, task)
    }

    async fn send(&mut self, msg: Value) {
        let mut line = msg.to_string();
        line.push('\n');
        self.tx.write_all(line.as_bytes()).await.unwrap();
    }

    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        loop {
            let line = self.rx.next_line().await.unwrap().expect("server closed");
            let msg: Value = serde_json::from_str(&line).unwrap();
            if msg["id"] == id {
                return msg;
            }
        }
    }

    /// `tools/call`; returns (parsed JSON of the text content, isError).
    async fn call(&mut self, name: &str, args: Value) -> (Value, bool) {
        let resp = self
            .request("tools/call", json!({"name": name, "arguments": args}))
            .await;
        let result = &resp["result"];
        assert_eq!(result["content"][0]["type"], "text", "{resp}");
        let text = result["content"][0]["text"].as_str().unwrap();
        (
            serde_json::from_str(text).unwrap(),
            result["isError"] == true,
        )
    }
}

#[tokio::test]
async fn mcp_server_end_to_end() {
    within(async {
        let agent = Agent::spawn().await;
        let (mut mcp, task) = McpClient::start(agent.tools());

        let init = mcp
            .request(
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "test", "version": "0"}}),
            )
            .await;
        let result = &init["result"];
        assert_eq!(result["serverInfo"]["name"], "wgagent", "{init}");
        assert_eq!(result["protocolVersion"], "2025-06-18");
        assert!(result["capabilities"]["tools"].is_object());
        mcp.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;

        let list = mcp.request("tools/list", json!({})).await;
        let tools = list["result"]["tools"].as_array().unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "execute",
                "process_output",
                "process_list",
                "process_signal",
                "read_file",
                "write_file",
                "edit_files",
                "list_directory"
            ]
        );
        let exec = &tools[0];
        assert!(exec["description"].as_str().unwrap().contains("sh -c"));
        assert_eq!(exec["inputSchema"]["required"], json!(["command"]));
        assert!(exec["inputSchema"]["properties"]["timeout"]["description"].is_string());

        let (r, is_error) = mcp.call("execute", json!({"command": "echo hi"})).await;
        assert!(!is_error);
        assert_eq!(r["success"], true);
        assert_eq!(r["output"], "hi\n");

        let (r, _) = mcp
            .call(
                "execute",
                json!({"command": "echo bg; sleep 30", "run_in_background": true}),
            )
            .await;
        let id = r["background_process_id"].as_str().unwrap().to_owned();
        let (r, _) = mcp
            .call("process_output", json!({"process_id": id, "wait": "200ms"}))
            .await;
        assert_eq!(r["output"], "bg\n");
        assert!(
            r["note"]
                .as_str()
                .unwrap()
                .starts_with("process is still running")
        );
        let (r, _) = mcp.call("process_list", json!({})).await;
        assert_eq!(r["processes"][0]["id"], id.as_str());
        let (r, _) = mcp
            .call(
                "process_signal",
                json!({"process_id": id, "signal": "terminate"}),
            )
            .await;
        assert_eq!(r["success"], true, "{r}");
        assert!(r["note"].as_str().unwrap().contains("has exited"), "{r}");

        let (r, is_error) = mcp.call("execute", json!({"timeout": "1s"})).await;
        assert!(is_error);
        assert_eq!(r["error"], "command is required");
        let unknown = mcp
            .request("tools/call", json!({"name": "rm_rf", "arguments": {}}))
            .await;
        assert!(
            unknown["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unknown tool"),
            "{unknown}"
        );

        // Closing the client's side ends the server cleanly.
        drop(mcp);
        task.await.unwrap().unwrap();
    })
    .await
}

// ------------------------------------------------------------------------------------ overlay

/// `Connect` over a real userspace WireGuard `Node` (what a control replica uses).
#[derive(Clone)]
struct NodeConnector(Arc<wgagent::node::Node>);

impl Connect for NodeConnector {
    type Stream = wgagent::netstack::TcpStream;

    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        let node = self.0.clone();
        async move { node.connect(addr).await }
    }
}

#[tokio::test]
async fn tools_through_the_wireguard_overlay() {
    within(async {
        let pair = common::pair().await;
        let conn = AgentConn::new(
            NodeConnector(Arc::new(pair.control)),
            common::api_addr(),
            AgentOptions::default(),
        );
        let tools = Tools::single(conn.clone());
        let r = call(
            &tools,
            "execute",
            json!({"command": "echo through the tunnel"}),
        )
        .await;
        assert_eq!(r["output"], "through the tunnel\n", "{r}");
        for _ in 0..5 {
            assert!(tools.execute(&conn, ExecuteArgs::new("true")).await.success);
        }
        assert_eq!(pair.manager.list().len(), 6);
    })
    .await
}

// -------------------------------------------------------------------------------- measurement

/// Latency of `execute true` through the tools and loopback TCP vs spawning `sh -c true`
/// locally. Prints, asserts nothing. Run:
/// `cargo test --release --test client_tools -- --ignored --nocapture execute_latency`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn execute_latency() {
    const N: usize = 200;
    fn stats(mut v: Vec<Duration>) -> String {
        v.sort();
        let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        format!(
            "median {:?}  p99 {:?}  min {:?}  max {:?}",
            p(0.5),
            p(0.99),
            v[0],
            v[v.len() - 1]
        )
    }
    let agent = Agent::spawn().await;
    let tools = agent.tools();
    let conn = agent.conn();
    let mut remote = Vec::with_capacity(N);
    for _ in 0..N + 10 {
        let t = Instant::now();
        let r = tools.execute(&conn, ExecuteArgs::new("true")).await;
        remote.push(t.elapsed());
        assert!(r.success);
    }
    remote.drain(..10); // warm-up
    let mut local = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        let s = tokio::process::Command::new("sh")
            .args(["-c", "true"])
            .status()
            .await
            .unwrap();
        local.push(t.elapsed());
        assert!(s.success());
    }
    println!(
        "execute true via tools + TcpConnector ({N} runs): {}",
        stats(remote)
    );
    println!(
        "sh -c true spawned locally ({N} runs):          {}",
        stats(local)
    );
    println!(
        "TCP connections accepted: {}",
        agent.accepts.load(Ordering::SeqCst)
    );

    let pair = common::pair().await;
    let conn = AgentConn::new(
        NodeConnector(Arc::new(pair.control)),
        common::api_addr(),
        AgentOptions::default(),
    );
    let tools = Tools::single(conn.clone());
    let mut overlay = Vec::with_capacity(N);
    for _ in 0..N + 10 {
        let t = Instant::now();
        let r = tools.execute(&conn, ExecuteArgs::new("true")).await;
        overlay.push(t.elapsed());
        assert!(r.success);
    }
    overlay.drain(..10);
    println!(
        "execute true via tools + WireGuard Node ({N} runs): {}",
        stats(overlay)
    );
}

/// Idle pooled connections are closed after `idle_timeout` even if the `AgentConn` is never
/// used again: the agent sees EOF (each idle connection holds a socket on the agent).
#[tokio::test]
async fn idle_connections_are_closed_without_further_calls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    within(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /api/v0/health"));
            let body = r#"{"status":"ok","version":"t","uptime_seconds":1,"processes_running":0}"#;
            let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            s.write_all(resp.as_bytes()).await.unwrap();
            let answered = std::time::Instant::now();
            // The client keeps the connection idle; wait for it to close it.
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            assert!(matches!(n, Ok(Ok(0))), "pool never closed the idle connection: {n:?}");
            answered.elapsed()
        });
        let conn = AgentConn::new(
            TcpConnector,
            addr,
            AgentOptions { idle_timeout: Duration::from_millis(200), ..AgentOptions::default() },
        );
        conn.health().await.unwrap();
        let closed_after = server.await.unwrap();
        assert!(closed_after < Duration::from_secs(2), "{closed_after:?}");
        drop(conn);
    })
    .await
}
