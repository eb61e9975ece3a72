//! Prometheus metrics of a real agent after known traffic, scraped through the tunnel and from
//! the opt-in host listener, parsed by the official Prometheus Python parsers (text format
//! 0.0.4 and strict OpenMetrics 1.0): API requests by route and status and their latency
//! counts, processes started and exited by reason, WireGuard bytes per peer equal to what the
//! other end counted, handshakes; the host listener serves nothing but `/metrics`.
//!
//! Prints `SKIP metrics: <reason>` and passes where python3 cannot import `prometheus_client`
//! (CI installs it from `.ci/python-requirements.txt`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use wgagent::agent::Agent;

fn parser_missing() -> Option<String> {
    let ok = Command::new("python3")
        .args([
            "-c",
            "import prometheus_client.parser, prometheus_client.openmetrics.parser",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then(|| "python3 cannot import prometheus_client (pip install prometheus-client)".into())
}

/// The samples of `text` as the Python parser of `kind` (`text` or `openmetrics`) reads them.
fn parse(kind: &str, text: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("exposition");
    std::fs::write(&file, text).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/metrics/parse.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(kind)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the {kind} parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels`; panics if there is none.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels).unwrap_or_else(|| {
        let names: Vec<&str> = samples.iter().filter_map(|s| s["name"].as_str()).collect();
        panic!("no sample {name} {labels:?}; samples: {names:?}")
    })
}

fn find(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
}

/// A raw HTTP/1.0 request to the host listener: status line and body.
fn host_request(addr: SocketAddr, method: &str, path: &str, accept: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: x\r\nAccept: {accept}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_and_parse_with_prometheus_parsers() {
    if let Some(why) = parser_missing() {
        println!("SKIP metrics: {why}");
        return;
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        let (ak, ck) = (keypair(), keypair());
        let mut control_peer = peer(ck.public, "100.64.0.1/32", None, None);
        control_peer.name = Some("control".into());
        let (mut cfg, _state) = agent_config(ak.secret.clone(), AGENT_IP, &[control_peer]);
        cfg.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        let agent = Agent::start(&cfg).await.unwrap();
        let host = agent.metrics_addr().expect("the host listener is bound");
        assert!(host.ip().is_loopback());
        let ep = SocketAddr::new(ip("127.0.0.1"), agent.udp_addr().port());
        let control = node(
            ck.secret.clone(),
            "100.64.0.1",
            0,
            vec![peer(ak.public, "100.64.0.10/32", Some(ep), None)],
        )
        .await;

        // Known traffic: 5 health checks, 1 unknown route, 3 processes (exit 0, exit 3, one
        // killed by a signal).
        let mut http = Http::connect(&control, api_addr()).await.unwrap();
        for _ in 0..5 {
            assert_eq!(http.call("GET", "/api/v0/health", None).await.0, 200);
        }
        assert_eq!(http.call("GET", "/api/v0/nothing-here", None).await.0, 404);
        let mut ids = Vec::new();
        for command in ["exit 0", "exit 3", "sleep 30"] {
            let (status, v) = http
                .call(
                    "POST",
                    "/api/v0/processes/start",
                    Some(json!({"command": command, "background": true})),
                )
                .await;
            assert_eq!(status, 200, "{v}");
            ids.push(v["id"].as_str().unwrap().to_owned());
        }
        let (status, _) = http
            .call(
                "POST",
                &format!("/api/v0/processes/{}/signal", ids[2]),
                Some(json!({"signal": "kill"})),
            )
            .await;
        assert_eq!(status, 200);
        for id in &ids {
            let (status, v) = http
                .call(
                    "GET",
                    &format!("/api/v0/processes/{id}/output?wait=true&timeout_ms=20000"),
                    None,
                )
                .await;
            assert_eq!(status, 200);
            assert_eq!(v["running"], false, "{v}");
        }

        // Through the tunnel, in the Prometheus text format.
        let (status, content_type, text) = http.get_text("/metrics", &[]).await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let s = parse("text", &text);
        let health = [
            ("route", "/api/v0/health"),
            ("method", "GET"),
            ("status", "200"),
        ];
        assert_eq!(value(&s, "wgagent_api_requests_total", &health), 5.0);
        assert_eq!(
            value(
                &s,
                "wgagent_api_requests_total",
                &[("route", "unmatched"), ("status", "404")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "wgagent_api_request_duration_seconds_count",
                &[("route", "/api/v0/health"), ("method", "GET")]
            ),
            5.0
        );
        assert_eq!(
            value(
                &s,
                "wgagent_api_request_duration_seconds_bucket",
                &[("route", "/api/v0/health"), ("le", "+Inf")]
            ),
            5.0
        );
        assert_eq!(value(&s, "wgagent_processes_started_total", &[]), 3.0);
        assert_eq!(
            value(
                &s,
                "wgagent_processes_exited_total",
                &[("reason", "exited")]
            ),
            2.0
        );
        assert_eq!(
            value(
                &s,
                "wgagent_processes_exited_total",
                &[("reason", "signaled")]
            ),
            1.0
        );
        assert_eq!(value(&s, "wgagent_processes_running", &[]), 0.0);
        assert_eq!(value(&s, "wgagent_process_spawn_failures_total", &[]), 0.0);
        assert_eq!(value(&s, "wgagent_wireguard_peers", &[]), 1.0);
        assert!(value(&s, "wgagent_netstack_sockets", &[]) >= 1.0);
        assert!(find(&s, "wgagent_netstack_socket_memory_bytes", &[]).is_some());
        assert_eq!(
            value(
                &s,
                "wgagent_netstack_refused_connections_total",
                &[("reason", "peer_limit")]
            ),
            0.0
        );
        assert!(value(&s, "wgagent_api_connections_total", &[]) >= 1.0);
        let control_label = [("peer", "control")];
        assert!(
            value(
                &s,
                "wgagent_wireguard_peer_handshakes_total",
                &control_label
            ) >= 1.0
        );
        assert_eq!(
            value(
                &s,
                "wgagent_wireguard_peer_dropped_packets_total",
                &[("peer", "control"), ("reason", "decrypt")]
            ),
            0.0
        );
        assert!(
            find(
                &s,
                "wgagent_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            )
            .is_some()
        );

        // From the host listener, in OpenMetrics (strict parser), once the tunnel is quiet:
        // what the agent counts from and to the peer is what the peer counted to and from it.
        drop(http);
        let mut matched = false;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let c = &control.stats().wg.peers[0];
            let (head, text) = host_request(
                host,
                "GET",
                "/metrics",
                "application/openmetrics-text; version=1.0.0",
            );
            assert!(head.starts_with("HTTP/1.0 200"), "{head}");
            assert!(head.contains("application/openmetrics-text"), "{head}");
            assert!(text.ends_with("# EOF\n"));
            let s = parse("openmetrics", &text);
            let rx = value(
                &s,
                "wgagent_wireguard_peer_received_bytes_total",
                &control_label,
            );
            let tx = value(
                &s,
                "wgagent_wireguard_peer_sent_bytes_total",
                &control_label,
            );
            assert!(rx > 1000.0 && tx > 1000.0, "{rx} {tx}");
            // The session's time is published at the next timer tick (250 ms).
            let age = find(
                &s,
                "wgagent_wireguard_peer_last_handshake_age_seconds",
                &control_label,
            );
            if let Some(age) = age
                && rx == c.tx_bytes as f64
                && tx == c.rx_bytes as f64
            {
                assert!((0.0..60.0).contains(&age), "{age}");
                matched = true;
                break;
            }
        }
        assert!(
            matched,
            "the agent's per-peer bytes never matched the peer's own counts"
        );

        // The host listener serves nothing else, whatever the method.
        for (method, path) in [
            ("GET", "/api/v0/health"),
            ("POST", "/api/v0/processes/start"),
            ("GET", "/api/v0/processes/list"),
            ("GET", "/"),
        ] {
            let (head, body) = host_request(host, method, path, "*/*");
            assert!(head.starts_with("HTTP/1.0 404"), "{method} {path}: {head}");
            assert!(!body.contains("processes"), "{body}");
        }
        control.shutdown(Duration::from_secs(2)).await;
        assert!(agent.shutdown(Duration::from_secs(10)).await);
    })
    .await
    .expect("bounded");
}

/// The host listener serves at most `listen::MAX_CONNECTIONS` at once: connections beyond the
/// cap are closed unserved (and counted in
/// `wgagent_metrics_listener_refused_connections_total`, read by the Prometheus parser) while
/// the held ones keep scraping, and once those go, the next scrape is served (the listener is
/// not wedged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_listener_caps_its_connections() {
    use wgagent::metrics::{Metrics, listen};
    tokio::time::timeout(Duration::from_secs(60), async {
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = tokio_util::sync::CancellationToken::new();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let metrics = std::sync::Arc::new(Metrics::new());
        // The listener's family appears once it serves.
        assert!(!metrics.render(false).contains("listener_refused"));
        let host = listen::serve(any, metrics, &tracker, cancel.clone())
            .await
            .unwrap();
        let parser = parser_missing();
        tokio::task::spawn_blocking(move || {
            // `cap` keep-alive connections, each with a scrape answered (so each is counted).
            let mut held: Vec<_> = (0..listen::MAX_CONNECTIONS)
                .map(|_| {
                    let mut c = std::io::BufReader::new(TcpStream::connect(host).unwrap());
                    c.get_ref()
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    assert_eq!(keep_alive_scrape(&mut c).0, 200);
                    c
                })
                .collect();
            let refused = |c: &mut std::io::BufReader<TcpStream>| {
                let (status, text) = keep_alive_scrape(c);
                assert_eq!(status, 200);
                let name = "wgagent_metrics_listener_refused_connections_total";
                match &parser {
                    Some(why) => {
                        println!("SKIP parsing the exposition: {why}");
                        text.lines()
                            .find_map(|l| l.strip_prefix(&format!("{name} ")))
                            .unwrap_or_else(|| panic!("no {name}: {text}"))
                            .parse::<f64>()
                            .unwrap()
                    }
                    None => value(&parse("text", &text), name, &[]),
                }
            };
            assert_eq!(refused(&mut held[0]), 0.0);
            // Beyond the cap: closed without an answer (FIN or RST), not left hanging.
            for _ in 0..4 {
                let mut s = TcpStream::connect(host).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
                let mut answer = Vec::new();
                match s.read_to_end(&mut answer) {
                    Ok(_) => assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer)),
                    Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
                }
            }
            // The held connections are still served, and the refusals are exported.
            for c in &mut held {
                assert_eq!(keep_alive_scrape(c).0, 200);
            }
            assert_eq!(refused(&mut held[1]), 4.0);
            drop(held);
            // The next scrape is served once the server has seen the closes (bounded retry).
            let mut last = String::new();
            for _ in 0..100 {
                let mut s = TcpStream::connect(host).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.0 200") {
                    return;
                }
                last = answer;
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("no scrape served after the held connections closed: {last:?}");
        })
        .await
        .unwrap();
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    })
    .await
    .expect("bounded");
}

/// One `GET /metrics` on a keep-alive connection; its status and body.
fn keep_alive_scrape(c: &mut std::io::BufReader<TcpStream>) -> (u16, String) {
    use std::io::BufRead;
    c.get_mut()
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut status = String::new();
    c.read_line(&mut status).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        c.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    c.read_exact(&mut body).unwrap();
    (
        status.split(' ').nth(1).unwrap().parse().unwrap(),
        String::from_utf8(body).unwrap(),
    )
}
