//! The real `wgagent agent` binary: serves only on the tunnel (no host TCP listener), and
//! SIGTERM/SIGINT shut it down gracefully with no child process left behind.

mod common;
#[path = "common/tree.rs"]
mod tree_helpers;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use wgagent::keys;

struct Agent {
    child: Child,
    udp_port: u16,
    _dir: tempfile::TempDir,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_agent(agent: &Keypair, control: &Keypair) -> Agent {
    start_agent_with(agent, control, "info")
}

/// [`start_agent`] with this log filter (`RUST_LOG`).
fn start_agent_with(agent: &Keypair, control: &Keypair, log: &str) -> Agent {
    start_agent_from(
        std::path::Path::new(env!("CARGO_BIN_EXE_wgagent")),
        agent,
        control,
        log,
    )
}

/// [`start_agent_with`] from this executable.
fn start_agent_from(
    binary: &std::path::Path,
    agent: &Keypair,
    control: &Keypair,
    log: &str,
) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("agent.key");
    std::fs::write(&key_file, keys::encode_private(&agent.secret)).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&key_file).unwrap().permissions(),
        0o600,
    );
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let udp_port = free_udp_port();
    let cfg = format!(
        "[interface]\nprivate_key_file = \"agent.key\"\naddress = [\"{AGENT_IP}\"]\nlisten_port = {udp_port}\nuapi = false\n\n\
         [api]\nshutdown_grace = \"1s\"\nstate_dir = \"{}\"\n\n[[peer]]\nname = \"control\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.1/32\"]\n",
        dir.path().join("state").display(),
        keys::encode_public(&control.public)
    );
    let cfg_path = dir.path().join("agent.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut child = Command::new(binary)
        .args(["agent", "--config"])
        .arg(&cfg_path)
        .env("RUST_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("agent: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let agent = Agent {
        child,
        udp_port,
        _dir: dir,
        stderr: rx,
    };
    agent.wait_log("agent up", Duration::from_secs(20));
    agent
}

impl Agent {
    fn wait_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("agent never logged {needle:?}");
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Socket inodes the process holds, from `/proc/<pid>/fd`.
fn socket_inodes(pid: i32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// (local address, state) of TCP sockets in `/proc/<pid>/net/tcp{,6}` owned by the process.
fn tcp_sockets(pid: i32) -> Vec<(String, String)> {
    let mine = socket_inodes(pid);
    let mut out = Vec::new();
    for f in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && mine.contains(&cols[9].parse().unwrap_or(0)) {
                out.push((cols[1].to_owned(), cols[3].to_owned()));
            }
        }
    }
    out
}

/// A control node (100.64.0.1, key `ck`) that dials the agent binary's UDP port.
async fn control_of(agent: &Agent, ak: &Keypair, ck: &Keypair) -> wgagent::node::Node {
    let endpoint = SocketAddr::new(ip("127.0.0.1"), agent.udp_port);
    node(
        ck.secret.clone(),
        "100.64.0.1",
        0,
        vec![peer(ak.public, "100.64.0.10/32", Some(endpoint), None)],
    )
    .await
}

#[tokio::test]
async fn no_host_tcp_listener_and_sigterm_leaves_no_child() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (ak, ck) = (keypair(), keypair());
        let mut agent = start_agent(&ak, &ck);
        let control = control_of(&agent, &ak, &ck).await;
        let mut h = Http::connect(&control, api_addr()).await.unwrap();
        let (s, v) = h
            .call(
                "POST",
                "/api/v0/processes/start",
                Some(json!({"command": "sleep 300 | cat"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let (_, v) = h.call("GET", "/api/v0/processes/list", None).await;
        let pgid = v["processes"][0]["pid"].as_u64().unwrap() as i32;

        // The API works over the tunnel, yet the agent holds no TCP socket at all on the host.
        let tcp = tcp_sockets(agent.pid());
        assert!(tcp.is_empty(), "agent holds host TCP sockets: {tcp:?}");
        assert!(
            !socket_inodes(agent.pid()).is_empty(),
            "the UDP socket should be visible"
        );
        // And nothing answers on the API port on loopback.
        assert!(std::net::TcpStream::connect(("127.0.0.1", API_PORT)).is_err());

        // SIGTERM: graceful shutdown, process groups ended, exit 0.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let st = agent.wait_exit(Duration::from_secs(20));
        assert_eq!(st.code(), Some(0), "{st:?}");
        let gone = (0..250).any(|_| {
            let alive = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok();
            if alive {
                std::thread::sleep(Duration::from_millis(20));
            }
            !alive
        });
        assert!(gone, "process group {pgid} outlived the agent");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sigint_exits_zero() {
    let (ak, ck) = (keypair(), keypair());
    let mut agent = start_agent(&ak, &ck);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(agent.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn bad_config_is_one_clear_line_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[interface]\naddress = [\"100.64.0.10\"]\nlisen_port = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wgagent"))
        .args(["agent", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("lisen_port"),
        "{err}"
    );
}

#[test]
fn genkey_pubkey_roundtrip() {
    let out = Command::new(env!("CARGO_BIN_EXE_wgagent"))
        .arg("genkey")
        .output()
        .unwrap();
    assert!(out.status.success());
    let private = String::from_utf8(out.stdout).unwrap();
    assert_eq!(private.trim().len(), 44);
    let public = pipe_ok(env!("CARGO_BIN_EXE_wgagent"), &["pubkey"], &private);
    let expected = keys::encode_public(&keys::public_key(
        &keys::decode_private(private.trim()).unwrap(),
    ));
    assert_eq!(public.trim(), expected);
    let out = Command::new(env!("CARGO_BIN_EXE_wgagent"))
        .arg("pubkey")
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success(), "empty stdin must fail");
}

/// Starts the five classic escapes through the real agent, then ends the agent with `sig`:
/// every escapee must be gone soon after (SIGKILL: the supervisors see their death pipe close).
async fn escapes_die_with_agent(sig: nix::sys::signal::Signal, tag: usize) {
    let (ak, ck) = (keypair(), keypair());
    let mut agent = start_agent(&ak, &ck);
    let control = control_of(&agent, &ak, &ck).await;
    let mut h = Http::connect(&control, api_addr()).await.unwrap();
    let esc = tree_helpers::Escapes::new(tag);
    let (s, v) = h
        .call(
            "POST",
            "/api/v0/processes/start",
            Some(json!({"command": esc.command()})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    esc.wait_started().await;
    // The agent exec'd the command's supervisor from its own binary (not a fork of itself).
    let sups = exec_supervisors_of(agent.pid());
    assert_eq!(sups.len(), 1, "supervisors of the agent: {sups:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.pid()), sig).unwrap();
    agent.wait_exit(Duration::from_secs(20));
    esc.wait_gone(Duration::from_secs(5)).await;
}

/// An upgrade replaces the binary on disk while the agent runs: supervisors are still exec'd
/// from the running executable (`/proc/self/exe`), not from what the path names now.
#[tokio::test]
async fn supervisors_start_after_the_binary_was_replaced_on_disk() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_wgagent"));
    // A second name for the built binary (a hard link: no copy), then replaced by a script.
    let path = bin.with_file_name(format!("wgagent-replaced-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::fs::hard_link(bin, &path).unwrap();
    let (ak, ck) = (keypair(), keypair());
    let agent = start_agent_from(&path, &ak, &ck, "info");
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "#!/bin/sh\nexit 99\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let control = control_of(&agent, &ak, &ck).await;
    let mut h = Http::connect(&control, api_addr()).await.unwrap();
    let (s, v) = h
        .call(
            "POST",
            "/api/v0/processes/start",
            Some(json!({"command": "tr '\\0' ' ' </proc/$PPID/cmdline"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let (s, out) = h
        .call(
            "GET",
            &format!("/api/v0/processes/{id}/output?wait=true&timeout_ms=10000"),
            None,
        )
        .await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["exit_code"], 0, "{out}");
    let text = out["output"].as_str().unwrap_or_default();
    let mode = format!("wgagent-sup {} ", wgagent::proc::SUPERVISOR_MODE_ARG);
    assert!(text.starts_with(&mode), "{out}");
}

/// Children of `agent` that are supervisors forked by its helper from the wgagent binary (the
/// helper itself, also a child, is named `wgagent-zygote`).
fn exec_supervisors_of(agent: i32) -> Vec<u32> {
    let mode = format!("wgagent-sup\0{}\0", wgagent::proc::SUPERVISOR_MODE_ARG);
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| tree_helpers::proc_ppid(pid) == Some(agent as u32))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(mode.as_bytes()))
        })
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "wgagent-sup")
        })
        .collect()
}

#[tokio::test]
async fn escapes_die_with_the_agent_on_sigterm() {
    tokio::time::timeout(
        Duration::from_secs(60),
        escapes_die_with_agent(nix::sys::signal::Signal::SIGTERM, 60),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn escapes_die_with_the_agent_on_sigkill() {
    tokio::time::timeout(
        Duration::from_secs(60),
        escapes_die_with_agent(nix::sys::signal::Signal::SIGKILL, 61),
    )
    .await
    .unwrap();
}

/// After a short CLI run the agent's peer (the CLI's one-shot node) is gone. boringtun then
/// logs `HANDSHAKE(REKEY_TIMEOUT)` at warn every 5 s while it retries; at the default filter
/// the agent's log has none of those lines. The same run with a filter naming boringtun shows
/// them, so the scenario does produce them (the check can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rekey_timeout_warnings_after_a_cli_run() {
    let (ck, quiet_keys, loud_keys) = (keypair(), keypair(), keypair());
    let quiet = start_agent_with(&quiet_keys, &ck, "info");
    let loud = start_agent_with(&loud_keys, &ck, "info,boringtun=warn");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"100.64.0.1\"]\nuapi = false\n\n[control]\nconnect_timeout = \"5s\"\n",
        keys::encode_private(&ck.secret)
    );
    for (name, k, a) in [("quiet", &quiet_keys, &quiet), ("loud", &loud_keys, &loud)] {
        cfg += &format!(
            "\n[[peer]]\nname = \"{name}\"\npublic_key = \"{}\"\nallowed_ips = [\"{AGENT_IP}/32\"]\nendpoint = \"127.0.0.1:{}\"\n",
            keys::encode_public(&k.public),
            a.udp_port
        );
    }
    // Both agents share the tunnel address: one config per agent keeps the routing unambiguous.
    let run = |name: &str| {
        let lines: Vec<&str> = cfg.split("\n[[peer]]").collect();
        let own = lines[1..]
            .iter()
            .find(|p| p.contains(&format!("name = \"{name}\"")))
            .unwrap();
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("{}\n[[peer]]{own}", lines[0])).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wgagent"))
            .args(["exec", name, "--", "echo", "hi"])
            .env("WGAGENT_CONFIG", &path)
            .env("WGAGENT_SOCKET", dir.path().join("nobody.sock"))
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).as_ref()
            ),
            (Some(0), "hi\n"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("quiet");
    run("loud");
    // boringtun retries a handshake 15 s after the last packet it received while it still has
    // something to send (seen here: the first warn line 15 s after the run, then every 5 s):
    // collect both logs for 22 s.
    // Each agent's reader thread buffers its lines, so one window covers both.
    let deadline = Instant::now() + Duration::from_secs(22);
    let collect = |a: &Agent| -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match a.stderr.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(e) => panic!("agent log ended: {e}"),
            }
        }
        lines.extend(a.stderr.try_iter());
        lines
    };
    let (quiet_log, loud_log) = (collect(&quiet), collect(&loud));
    let rekey = |log: &[String]| -> Vec<String> {
        log.iter()
            .filter(|l| l.contains("REKEY_TIMEOUT") || l.contains("CONNECTION_EXPIRED"))
            .cloned()
            .collect()
    };
    assert!(
        !rekey(&loud_log).is_empty(),
        "the scenario produced no REKEY_TIMEOUT line even with boringtun=warn: {loud_log:#?}"
    );
    assert_eq!(
        rekey(&quiet_log),
        Vec::<String>::new(),
        "at the default filter"
    );
    assert!(
        !quiet_log
            .iter()
            .any(|l| l.contains(" WARN ") && l.contains("boringtun")),
        "{quiet_log:#?}"
    );
}
