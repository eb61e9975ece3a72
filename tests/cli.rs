//! The real `wgagent` binary's control verbs against a real agent over loopback WireGuard:
//! exit codes, `--json`, one-line errors.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;
use wgagent::keys;

struct Env {
    _pair: Pair,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

/// An in-process agent serving the API, and a control config file naming it `dev` (plus a
/// `ghost` peer whose endpoint answers nothing).
async fn setup() -> Env {
    let p = pair().await;
    let dir = tempfile::tempdir().unwrap();
    let ghost = keypair();
    let dead_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"100.64.0.1\"]\n\n[control]\nconnect_timeout = \"2s\"\n\n\
         [[peer]]\nname = \"dev\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.10/32\"]\nendpoint = \"{}\"\n\n\
         [[peer]]\nname = \"ghost\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.20/32\"]\nendpoint = \"127.0.0.1:{dead_port}\"\n",
        keys::encode_private(&p.control_keys.secret),
        keys::encode_public(&p.agent_keys.public),
        loopback(&p.agent),
        keys::encode_public(&ghost.public),
    );
    let config = dir.path().join("control.toml");
    std::fs::write(&config, cfg).unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    Env {
        _pair: p,
        _dir: dir,
        config,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    async fn run(&self, args: &[&str]) -> Out {
        let out = tokio::time::timeout(
            T,
            tokio::process::Command::new(env!("CARGO_BIN_EXE_wgagent"))
                .args(args)
                .env("WGAGENT_CONFIG", &self.config)
                .env_remove("RUST_LOG")
                .output(),
        )
        .await
        .expect("wgagent hung")
        .unwrap();
        let o = Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "$ wgagent {}\n-> {}\n{}{}",
            args.join(" "),
            o.code,
            o.stdout,
            o.stderr
        );
        o
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_exit_codes_env_and_workdir() {
    let e = setup().await;
    let o = e
        .run(&["exec", "dev", "--", "echo", "hello", "world"])
        .await;
    assert_eq!((o.code, o.stdout.as_str()), (0, "hello world\n"));
    assert!(o.stderr.is_empty(), "{}", o.stderr);

    let o = e.run(&["exec", "dev", "--", "exit 3"]).await;
    assert_eq!(o.code, 3);
    let o = e.run(&["exec", "dev", "--", "kill -9 $$"]).await;
    assert_eq!(o.code, 128 + 9);

    let dir = tempfile::tempdir().unwrap();
    let wd = dir.path().to_str().unwrap();
    let o = e
        .run(&[
            "exec",
            "dev",
            "--workdir",
            wd,
            "--env",
            "GREETING=hi there",
            "--",
            "echo \"$GREETING\"; pwd",
        ])
        .await;
    assert_eq!(o.code, 0);
    assert_eq!(o.stdout, format!("hi there\n{wd}\n"));

    let o = e
        .run(&["exec", "dev", "--timeout", "1s", "--", "sleep 30"])
        .await;
    assert_eq!(o.code, 128 + 15, "terminated by SIGTERM at the deadline");
    assert!(o.stderr.contains("timed out"), "{}", o.stderr);

    let o = e
        .run(&["exec", "dev", "--workdir", "/does/not/exist", "--", "true"])
        .await;
    assert_eq!(o.code, 255);
    assert!(
        o.stderr.starts_with("wgagent: agent dev refused:") && o.stderr.contains("HTTP 400"),
        "{}",
        o.stderr
    );
    assert_eq!(o.stderr.lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_ps_output_signal_rm() {
    let e = setup().await;
    let o = e
        .run(&[
            "exec",
            "dev",
            "--background",
            "--",
            "echo started; sleep 300",
        ])
        .await;
    assert_eq!(o.code, 0);
    let id = o.stdout.trim().to_owned();
    assert_eq!(id.len(), 36, "a uuid: {id:?}");

    let o = e.run(&["ps", "dev", "--json"]).await;
    assert_eq!(o.code, 0);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["processes"][0]["id"], id.as_str());
    assert_eq!(v["processes"][0]["running"], true);

    let o = e.run(&["ps", "dev"]).await;
    assert!(o.stdout.starts_with("ID"), "{}", o.stdout);
    assert!(o.stdout.contains(&id) && o.stdout.contains("running"));

    let o = e.run(&["signal", "dev", &id, "kill"]).await;
    assert_eq!(o.code, 0);
    assert_eq!(
        o.stdout.trim(),
        format!("Signal \"kill\" sent to process \"{id}\".")
    );
    let o = e.run(&["output", "dev", &id, "--wait", "--json"]).await;
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["running"], false);
    assert_eq!(v["output"], "started\n");
    let o = e.run(&["output", "dev", &id]).await;
    assert_eq!(o.stdout, "started\n");

    let o = e.run(&["signal", "dev", &id, "kill"]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("is not running") && o.stderr.contains("HTTP 409"),
        "{}",
        o.stderr
    );
    let o = e.run(&["rm", "dev", &id]).await;
    assert_eq!(o.code, 0);
    let o = e.run(&["output", "dev", &id]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("not found") && o.stderr.contains("HTTP 404"),
        "{}",
        o.stderr
    );
    // A tunnel address works as well as a name.
    let o = e.run(&["ps", AGENT_IP, "--json"]).await;
    assert_eq!(o.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_lines() {
    let e = setup().await;
    let o = e.run(&["ps", "nosuch"]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("unknown agent \"nosuch\"") && o.stderr.contains("dev"),
        "{}",
        o.stderr
    );
    assert_eq!(o.stderr.lines().count(), 1);

    let o = e.run(&["exec", "ghost", "--", "true"]).await;
    assert_eq!(o.code, 255);
    assert!(o.stderr.contains("handshake not completed"), "{}", o.stderr);
    assert!(
        o.stderr.contains("endpoint 127.0.0.1:"),
        "names the endpoint tried: {}",
        o.stderr
    );
    assert_eq!(o.stderr.lines().count(), 1);

    let o = e
        .run(&["ps", "dev", "--config", "/nonexistent/control.toml"])
        .await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("/nonexistent/control.toml"),
        "{}",
        o.stderr
    );

    let o = e.run(&["signal", "dev", "some-id", "SIGFOO"]).await;
    assert_ne!(o.code, 0, "clap rejects unknown signals");
}

#[test]
fn help_lists_every_verb() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgagent"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for verb in [
        "agent", "demo", "exec", "ps", "output", "logs", "signal", "rm", "genkey", "pubkey",
    ] {
        assert!(text.contains(verb), "--help lacks {verb}: {text}");
    }
    let _ = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_port_is_used_for_names() {
    let e = setup().await;
    let text = std::fs::read_to_string(&e.config).unwrap();
    let moved = text.replace("[control]\n", "[control]\napi_port = 4444\n");
    std::fs::write(&e.config, moved).unwrap();
    let o = e.run(&["ps", "dev"]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("100.64.0.10:4444"), "{}", o.stderr);
    // An explicit ADDR:PORT still reaches the agent's real port.
    let o = e
        .run(&["ps", &format!("{AGENT_IP}:{API_PORT}"), "--json"])
        .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_quotes_arguments_and_logs_read_ranges() {
    let e = setup().await;
    let o = e
        .run(&["exec", "dev", "--", "printf", "%s\\n", "a  b", "it's"])
        .await;
    assert_eq!((o.code, o.stdout.as_str()), (0, "a  b\nit's\n"));
    // A single argument is a command line, passed unchanged.
    let o = e.run(&["exec", "dev", "--", "echo one | tr a-z A-Z"]).await;
    assert_eq!(o.stdout, "ONE\n");

    let o = e
        .run(&[
            "exec",
            "dev",
            "--background",
            "--",
            "seq 1 5; sleep 0.3; seq 6 8",
        ])
        .await;
    let id = o.stdout.trim().to_owned();
    // Follow from the start: everything, live, until the exit.
    let o = e.run(&["output", "dev", &id, "--follow"]).await;
    assert_eq!(o.stdout, "1\n2\n3\n4\n5\n6\n7\n8\n");
    let o = e.run(&["logs", "dev", &id, "--from", "10"]).await;
    assert_eq!((o.code, o.stdout.as_str()), (0, "6\n7\n8\n"));
}

/// `exec -t` through a real pseudo-terminal (Python's `pty`): runs bash, types a command,
/// reads its output, exits with bash's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_t_is_an_interactive_terminal() {
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipped: python3 not found");
        return;
    }
    let e = setup().await;
    let script = r#"
import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "exec", "-t", "dev", "--", "bash --norc --noprofile"])
out = b""
def read_until(token, limit=20):
    global out
    end = time.time() + limit
    while token not in out and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    return token in out
time.sleep(0.5)
os.write(fd, b"echo hi-$((6*7)); tty\r")
ok = read_until(b"hi-42")
os.write(fd, b"exit 7\r")
read_until(b"never", 5)
_, status = os.waitpid(pid, 0)
print("OK" if ok else "MISSING", os.waitstatus_to_exitcode(status))
print(out.decode(errors="replace"), file=sys.stderr)
"#;
    let out = tokio::time::timeout(
        T,
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_wgagent"))
            .env("WGAGENT_CONFIG", &e.config)
            .env("TERM", "xterm")
            .output(),
    )
    .await
    .expect("exec -t hung")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.trim(), "OK 7", "{stderr}");
    assert!(
        stderr.contains("/dev/pts/"),
        "the command ran on a terminal: {stderr}"
    );
}
