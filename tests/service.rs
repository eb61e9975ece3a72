//! The real `wgagent agent` binary as a service: systemd's notification protocol (READY,
//! RELOADING, STOPPING, WATCHDOG fed by the data path) on a datagram socket of our own, JSON
//! log lines parsed one by one, the key from `--private-key-file`, `--watch-config` reloading
//! a changed file, `wgagent health --local` through the UAPI socket, and commands that do not
//! inherit the agent's line to systemd. No root needed.

#[path = "common/agent_proc.rs"]
mod agent_proc;
mod common;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agent_proc::{AgentProc, free_udp_port};
use common::*;
use serde_json::{Value, json};
use wgagent::keys;

const WAIT: Duration = Duration::from_secs(15);

fn write_key(path: &Path, key: &Keypair) {
    std::fs::write(path, keys::encode_private(&key.secret)).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

fn config(port: u16, key_file: &str, level: &str, control: &Keypair) -> String {
    format!(
        "[interface]\nprivate_key_file = \"{key_file}\"\naddress = [\"{AGENT_IP}\"]\n\
         listen_port = {port}\nuapi_socket = \"@DIR@/wg.sock\"\n\n\
         [api]\nshutdown_grace = \"1s\"\nstate_dir = \"@DIR@/state\"\n\n[log]\nlevel = \"{level}\"\n\n\
         [[peer]]\nname = \"control\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.1/32\"]\n",
        keys::encode_public(&control.public)
    )
}

/// The systemd side: datagrams the agent sends to `$NOTIFY_SOCKET`.
struct Notify {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notify {
    fn bind(path: &Path) -> Notify {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notify {
            socket,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a message holding the line `line`; returns the message.
    fn wait(&mut self, line: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if msg.lines().any(|l| l == line) {
                    return msg;
                }
            }
        }
        panic!("no {line:?} from the agent; got {:?}", self.seen);
    }
}

fn health(config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgagent"))
        .args(["health", "--local", "--json", "--config"])
        .arg(config)
        .env_remove("WGAGENT_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_under_systemd_with_json_logs_and_a_watched_config() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let (ak, other, ck) = (keypair(), keypair(), keypair());
        // The file names one key; the flag gives the one the agent must use.
        write_key(&dir.path().join("file.key"), &other);
        write_key(&dir.path().join("credential.key"), &ak);
        let port = free_udp_port();
        let mut notify = Notify::bind(&dir.path().join("notify.sock"));
        let notify_path = dir.path().join("notify.sock");
        let credential = dir.path().join("credential.key");
        let agent = AgentProc::start_args(
            dir.path(),
            &config(port, "file.key", "info", &ck),
            &[
                "--log-format",
                "json",
                "--watch-config",
                "--private-key-file",
                credential.to_str().unwrap(),
            ],
            &[
                ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
                ("WATCHDOG_USEC", "1000000"),
            ],
        );
        let ready = notify.wait("READY=1");
        assert!(ready.contains("STATUS=serving the API"), "{ready}");
        // Fed while the data path ticks (every 500 ms for a 1 s watchdog).
        notify.wait("WATCHDOG=1");
        notify.wait("WATCHDOG=1");

        // The flag's key is the node's: a control peer that knows only that key gets through.
        let ep = SocketAddr::new(ip("127.0.0.1"), port);
        let control = node(
            ck.secret.clone(),
            "100.64.0.1",
            0,
            vec![peer(ak.public, "100.64.0.10/32", Some(ep), None)],
        )
        .await;
        let mut http = Http::connect(&control, api_addr()).await.unwrap();
        // A command sees none of the agent's systemd variables.
        let (status, v) = http
            .call(
                "POST",
                "/api/v0/processes/start",
                Some(json!({"command": "env; echo done", "timeout_ms": 10000})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let (status, out) = http
            .call(
                "GET",
                &format!("/api/v0/processes/{id}/output?wait=true&timeout_ms=20000"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{out}");
        let text = out["output"].as_str().unwrap_or_default().to_owned();
        assert!(text.contains("done"), "{out}");
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            assert!(!text.contains(var), "the command saw {var}: {text}");
        }

        // health --local: the running node, asked through its UAPI socket. The agent's file
        // names another key, so it is refused with that file and accepted with the right one.
        let agent_file = dir.path().join("agent.toml");
        let (ok, said) = health(&agent_file);
        assert!(!ok && said.contains("another key"), "{said}");
        let probe = dir.path().join("probe.toml");
        std::fs::write(
            &probe,
            config(port, "credential.key", "info", &ck)
                .replace("@DIR@", dir.path().to_str().unwrap()),
        )
        .unwrap();
        let (ok, said) = health(&probe);
        assert!(ok, "{said}");
        let answer: Value = serde_json::from_str(said.trim()).expect(&said);
        assert_eq!(answer["status"], "ok");
        assert_eq!(answer["listen_port"], port);
        assert_eq!(answer["peers"], 1);
        assert_eq!(answer["public_key"], keys::encode_public(&ak.public));

        // --watch-config: a new file (as kubelet writes it: a new inode) is applied like SIGHUP.
        let mark = agent.mark();
        let next = dir.path().join("agent.toml.new");
        std::fs::write(
            &next,
            config(port, "file.key", "debug", &ck).replace("@DIR@", dir.path().to_str().unwrap()),
        )
        .unwrap();
        std::fs::rename(&next, &agent_file).unwrap();
        notify.wait("RELOADING=1");
        notify.wait("READY=1");
        agent.wait_log(mark, "the configuration file changed: reloading", WAIT);
        agent.wait_log(mark, "log level changed", WAIT);

        // SIGTERM: STOPPING=1, then a clean exit.
        control.shutdown(Duration::from_secs(2)).await;
        agent.signal(libc::SIGTERM);
        notify.wait("STOPPING=1");
        let mut agent = agent;
        assert!(agent.wait_exit(WAIT).success());
        let (ok, said) = health(&probe);
        assert!(!ok && said.contains("wgagent: "), "{said}");

        // Every line is one JSON object with the fields a log pipeline needs; the process
        // start line carries the process id.
        let log = agent.log();
        let (mut started, mut exited) = (false, false);
        for line in log.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(v.get(key).is_some(), "no {key}: {line}");
            }
            assert!(v["fields"]["message"].is_string(), "{line}");
            if v["fields"]["message"] == "process started" {
                assert_eq!(v["fields"]["id"], id.as_str(), "{line}");
                assert_eq!(v["fields"]["peer"], "control", "{line}");
                started = true;
            }
            if v["fields"]["message"] == "process exited" {
                assert_eq!(v["fields"]["id"], id.as_str(), "{line}");
                assert_eq!(v["fields"]["peer"], "control", "{line}");
                assert_eq!(v["fields"]["reason"], "exited", "{line}");
                exited = true;
            }
        }
        assert!(started && exited, "no process start or exit line:\n{log}");
        assert!(
            log.contains("\"level\":\"WARN\"") && log.contains("is ignored"),
            "the overridden key is not reported:\n{log}"
        );
    })
    .await
    .expect("bounded");
}

/// An endpoint whose name does not resolve at start: the agent runs (a warning, no exit),
/// retries in the background, and once the name resolves it dials the peer. The name is made
/// to resolve by an `/etc/hosts` of our own, bind-mounted in a private mount namespace around
/// the agent (root only; skipped elsewhere with the reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_endpoint_is_retried_until_it_resolves() {
    let unshare = Command::new("unshare").arg("--version").output();
    if unsafe { libc::geteuid() } != 0 || !unshare.is_ok_and(|o| o.status.success()) {
        println!("SKIP dns retry: needs root and unshare (a private /etc/hosts)");
        return;
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let (ak, ck) = (keypair(), keypair());
        write_key(&dir.path().join("agent.key"), &ak);
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
        // The control node listens; the agent knows it only by a name nothing resolves yet.
        let control = node(
            ck.secret.clone(),
            "100.64.0.1",
            0,
            vec![peer(ak.public, "100.64.0.10/32", None, None)],
        )
        .await;
        let cport = control.udp_addr().port();
        let name = format!("control-{}.wgagent-test.invalid", std::process::id());
        let text = format!(
            "[interface]\nprivate_key_file = \"agent.key\"\naddress = [\"{AGENT_IP}\"]\n\
             listen_port = 0\nuapi = false\n\n[api]\nstate_dir = \"{}/state\"\n\n\
             [[peer]]\nname = \"control\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.1/32\"]\n\
             endpoint = \"{name}:{cport}\"\npersistent_keepalive = 1\n",
            dir.path().display(),
            keys::encode_public(&ck.public)
        );
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, text).unwrap();
        let log_path = dir.path().join("agent.log");
        let script = "set -e; mount --bind \"$1\" /etc/hosts; shift; exec \"$@\"";
        let mut child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&hosts)
            .arg(env!("CARGO_BIN_EXE_wgagent"))
            .args(["agent", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,wgagent::node=debug")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let wait_log = |needle: &str| {
            let deadline = Instant::now() + WAIT;
            while !log().contains(needle) {
                assert!(Instant::now() < deadline, "no {needle:?} in:\n{}", log());
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        wait_log("agent up");
        assert!(log().contains("retrying in the background"), "{}", log());
        // Still unresolved a few retries later: the agent keeps running, nobody dialled.
        std::thread::sleep(Duration::from_secs(2));
        assert!(child.try_wait().unwrap().is_none(), "{}", log());
        assert!(control.peers()[0].last_handshake.is_none());
        // The name appears: the next retry (at most 4 s later here) sets the endpoint and the
        // keepalive makes the agent dial the control node.
        std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {name}\n")).unwrap();
        wait_log("endpoint resolved");
        let deadline = Instant::now() + WAIT;
        while control.peers()[0].last_handshake.is_none() {
            assert!(Instant::now() < deadline, "no handshake: {}", log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut http = Http::connect(&control, api_addr()).await.unwrap();
        let (status, _) = http.call("GET", "/api/v0/health", None).await;
        assert_eq!(status, 200);
        // SAFETY: kill(2) of our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "agent did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .expect("bounded");
}
