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
    dir: tempfile::TempDir,
    config: PathBuf,
    /// The same peers with a connect timeout of `SHORT_CONNECT`, for runs that wait for it to
    /// run out (`ghost`).
    short_config: PathBuf,
}

/// The connect timeout of runs that must wait for it to run out. Runs that reach the live agent
/// keep the shipped default (10 s, see `AgentOptions`): a shorter test-only budget (2 s) made
/// `control_verbs_speak_json` fail on a loaded machine, where starting the CLI's node, the
/// handshake and the TCP connect can take that long.
const SHORT_CONNECT: &str = "2s";

/// An in-process agent serving the API, and a control config file naming it `dev` (plus a
/// `ghost` peer whose endpoint answers nothing and a `natted` one without an endpoint).
async fn setup() -> Env {
    setup_with(|_| {}).await
}

/// Like `setup`, with the agent's config changed by `change` first.
async fn setup_with(change: impl FnOnce(&mut wgagent::config::Config)) -> Env {
    let p = pair_with(change).await;
    let dir = tempfile::tempdir().unwrap();
    let ghost = keypair();
    let dead_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let peers = format!(
        "[[peer]]\nname = \"dev\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.10/32\"]\nendpoint = \"{}\"\n\n\
         [[peer]]\nname = \"ghost\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.20/32\"]\nendpoint = \"127.0.0.1:{dead_port}\"\n\n\
         [[peer]]\nname = \"natted\"\npublic_key = \"{}\"\nallowed_ips = [\"100.64.0.30/32\"]\n",
        keys::encode_public(&p.agent_keys.public),
        loopback(&p.agent),
        keys::encode_public(&ghost.public),
        keys::encode_public(&keypair().public),
    );
    let interface = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"100.64.0.1\"]\nuapi = false\n\n",
        keys::encode_private(&p.control_keys.secret)
    );
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        path
    };
    // `[control]` with the default connect timeout (`control_api_port_is_used_for_names` edits it).
    let config = write("control.toml", format!("{interface}[control]\n\n{peers}"));
    let short_config = write(
        "control-short.toml",
        format!("{interface}[control]\nconnect_timeout = \"{SHORT_CONNECT}\"\n\n{peers}"),
    );
    Env {
        _pair: p,
        dir,
        config,
        short_config,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Env {
    /// Runs the binary with this config and, unless `envs` says otherwise, a daemon socket
    /// path nobody serves (so a daemon running on this machine is never used by accident).
    async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, &[]).await
    }

    /// Like `run`, printing the output's size instead of the output (for large outputs).
    async fn run_quiet(&self, args: &[&str]) -> Out {
        self.run_inner(args, &[], false).await
    }

    async fn run_with(&self, args: &[&str], envs: &[(&str, &std::ffi::OsStr)]) -> Out {
        self.run_inner(args, envs, true).await
    }

    async fn run_inner(&self, args: &[&str], envs: &[(&str, &std::ffi::OsStr)], echo: bool) -> Out {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wgagent"));
        cmd.args(args)
            .env("WGAGENT_CONFIG", &self.config)
            .env("WGAGENT_SOCKET", self.dir.path().join("nobody.sock"))
            .env_remove("RUST_LOG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let started = std::time::Instant::now();
        let out = tokio::time::timeout(T, cmd.output())
            .await
            .expect("wgagent hung")
            .unwrap();
        let o = Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if echo {
            eprintln!(
                "$ wgagent {}\n-> {} after {:.1?}\n{}{}",
                args.join(" "),
                o.code,
                started.elapsed(),
                o.stdout,
                o.stderr
            );
        } else {
            eprintln!(
                "$ wgagent {}\n-> {} after {:.1?}\n({} bytes on stdout)\n{}",
                args.join(" "),
                o.code,
                started.elapsed(),
                o.stdout.len(),
                o.stderr
            );
        }
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

    let short = e.short_config.to_str().unwrap();
    let o = e
        .run(&["exec", "ghost", "--config", short, "--", "true"])
        .await;
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

/// Every control verb's `--json`: one object on stdout, parsed here; the exit code stays the
/// verb's (exec: the command's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_verbs_speak_json() {
    let e = setup().await;
    let o = e
        .run(&["exec", "dev", "--json", "--", "echo out; exit 3"])
        .await;
    assert_eq!(o.code, 3, "the command's code, as without --json");
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["finished"], true);
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["exit_reason"], "exited");
    assert_eq!(v["output"], "out\n");
    assert_eq!(v["id"].as_str().unwrap().len(), 36);

    let o = e.run(&["exec", "dev", "--json", "--", "kill -9 $$"]).await;
    assert_eq!(o.code, 128 + 9);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        (v["exit_code"].as_i64(), v["exit_signal"].as_str()),
        (Some(-1), Some("SIGKILL"))
    );

    let o = e
        .run(&["exec", "dev", "--json", "--background", "--", "sleep 300"])
        .await;
    assert_eq!(o.code, 0);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["finished"], false);
    let id = v["id"].as_str().unwrap().to_owned();

    // kill(1)'s spelling on the command line; the API name in the answer.
    let o = e.run(&["signal", "dev", &id, "SIGTERM", "--json"]).await;
    assert_eq!(o.code, 0);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["signal"], "terminate");
    assert_eq!(
        v["message"],
        format!("Signal \"terminate\" sent to process \"{id}\".")
    );
    e.run(&["output", "dev", &id, "--wait"]).await;
    let o = e.run(&["rm", "dev", &id, "--json"]).await;
    assert_eq!(o.code, 0);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert!(v.get("signal").is_none() && v["message"].is_string(), "{v}");

    // Streams are NDJSON: text pieces at their offsets, then the end.
    let o = e
        .run(&[
            "exec",
            "dev",
            "--json",
            "--",
            "printf 'h\\303\\251llo\\n'; printf '\\377'",
        ])
        .await;
    let id = serde_json::from_str::<Value>(&o.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for args in [
        &["logs", "dev", &id, "--json"][..],
        &["logs", "dev", &id, "--json", "--follow"],
        &["output", "dev", &id, "--json", "--follow"],
        &["logs", "dev", &id, "--json", "--from", "1"],
    ] {
        let o = e.run(args).await;
        assert_eq!(o.code, 0, "{args:?}");
        let lines: Vec<Value> = o
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let first = if args.contains(&"--from") { 1 } else { 0 };
        assert_eq!(lines[0]["offset"], first, "{args:?}");
        assert_eq!(lines.last().unwrap(), &serde_json::json!({"end": 8}));
        let text: String = lines.iter().filter_map(|l| l["text"].as_str()).collect();
        assert_eq!(text, &"héllo\n"[first..], "{args:?}");
        let bytes: Vec<&str> = lines.iter().filter_map(|l| l["base64"].as_str()).collect();
        assert_eq!(bytes, ["/w=="], "{args:?}");
    }

    // Files: text, bytes that are not UTF-8, and an error (stdout stays empty).
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("a.txt");
    std::fs::write(&text, "héllo\n").unwrap();
    let o = e
        .run(&["cat", "dev", text.to_str().unwrap(), "--json"])
        .await;
    assert_eq!(o.code, 0);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["content"], "héllo\n");
    assert_eq!(v["size"], 7);
    assert_eq!(v["file_size"], 7);
    // The hash is the one `put --if-match` takes (stdin is empty here: the file is emptied).
    let hash = v["hash"].as_str().unwrap().to_owned();
    let path = text.to_str().unwrap();
    let o = e
        .run(&["put", "dev", path, "--if-match", &hash, "--json"])
        .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let put: Value = serde_json::from_str(&o.stdout).unwrap();
    assert!(put.is_object());
    assert_eq!(std::fs::read(&text).unwrap(), b"");
    let bin = dir.path().join("b.bin");
    std::fs::write(&bin, [0x41, 0xff, 0x00]).unwrap();
    let o = e
        .run(&[
            "cat",
            "dev",
            bin.to_str().unwrap(),
            "--json",
            "--offset",
            "1",
        ])
        .await;
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        (v["offset"].as_u64(), v["size"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(v.get("content").is_none());
    assert_eq!(v["content_base64"], "/wA=");
    let o = e
        .run(&["cat", "dev", bin.to_str().unwrap(), "--json"])
        .await;
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["content_base64"], "Qf8A");
    let o = e.run(&["cat", "dev", "/does/not/exist", "--json"]).await;
    assert_eq!(o.code, 1);
    assert!(
        o.stdout.is_empty() && o.stderr.starts_with("wgagent: "),
        "{}",
        o.stderr
    );
}

/// The NDJSON streams name the bytes an agent no longer retains (`{"skipped": {"from", "to"}}`)
/// and go on with the rest; without `--json` a note on stderr says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_skip_what_the_agent_no_longer_retains() {
    // The agent keeps the newest 4096 bytes of each log (the smallest it allows).
    let e = setup_with(|cfg| cfg.api.log_max_bytes = 4096).await;
    let o = e.run(&["exec", "dev", "--json", "--", "seq 1 5000"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let id = serde_json::from_str::<Value>(&o.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let all: String = (1..=5000).map(|i| format!("{i}\n")).collect();
    let (total, start) = (all.len() as u64, all.len() as u64 - 4096);
    for args in [
        &["output", "dev", &id, "--json", "--follow"][..],
        &["logs", "dev", &id, "--json", "--follow"],
        &["logs", "dev", &id, "--json"],
        &["logs", "dev", &id, "--json", "--from", "100"],
    ] {
        let o = e.run(args).await;
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
        let lines: Vec<Value> = o
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let from = if args.contains(&"--from") { 100 } else { 0 };
        assert_eq!(
            lines[0],
            serde_json::json!({"skipped": {"from": from, "to": start}}),
            "{args:?}"
        );
        assert_eq!(lines[1]["offset"], start, "{args:?}");
        let text: String = lines.iter().filter_map(|l| l["text"].as_str()).collect();
        assert_eq!(text, all[start as usize..], "{args:?}");
        assert_eq!(
            lines.last().unwrap(),
            &serde_json::json!({"end": total}),
            "{args:?}"
        );
    }
    // Within the window: no skipped line.
    let at = (start + 10).to_string();
    let o = e.run(&["logs", "dev", &id, "--json", "--from", &at]).await;
    assert!(!o.stdout.contains("skipped"), "{}", o.stdout);
    // Raw: the retained bytes on stdout, the gap on stderr.
    for follow in [false, true] {
        let mut args = vec!["logs", "dev", id.as_str()];
        args.extend(follow.then_some("--follow"));
        let o = e.run(&args).await;
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert_eq!(o.stdout, all[start as usize..]);
        assert!(
            o.stderr.contains(&format!(
                "{start} bytes of output are no longer retained; continuing at byte {start}"
            )),
            "{}",
            o.stderr
        );
    }
}

/// `cat --json` holds at most 16 MiB: exactly that is printed, one byte more is refused before
/// the body is read (exit 1, nothing on stdout), and `--offset`/`--limit` reach any part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_json_holds_at_most_16_mib() {
    const MAX: u64 = 16 << 20;
    let e = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.txt");
    let mut content = vec![b'a'; MAX as usize];
    content.extend_from_slice(b"Z");
    std::fs::write(&big, &content).unwrap();
    let path = big.to_str().unwrap();
    let o = e.run(&["cat", "dev", path, "--json"]).await;
    assert_eq!(o.code, 1);
    assert!(o.stdout.is_empty(), "{} bytes on stdout", o.stdout.len());
    assert_eq!(
        o.stderr.trim_end(),
        format!(
            "wgagent: {path}: {} bytes are more than --json holds ({MAX}); use --limit, or cat \
             without --json",
            MAX + 1
        )
    );
    // Exactly the maximum.
    let limit = MAX.to_string();
    let o = e
        .run_quiet(&["cat", "dev", path, "--json", "--limit", &limit])
        .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        (v["size"].as_u64(), v["file_size"].as_u64()),
        (Some(MAX), Some(MAX + 1))
    );
    let text = v["content"].as_str().unwrap();
    assert!(text.len() as u64 == MAX && text.bytes().all(|b| b == b'a'));
    // The end of the file.
    let at = (MAX - 1).to_string();
    let o = e
        .run(&["cat", "dev", path, "--json", "--offset", &at])
        .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        (v["offset"].as_u64(), v["content"].as_str()),
        (Some(MAX - 1), Some("aZ"))
    );
}

/// `demo --json`: one JSON object with what the walk-through shows (the binary's own agent and
/// control node over loopback WireGuard); without `--json`, the walk-through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_json_is_one_object_with_the_run() {
    let demo = |json: bool| async move {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wgagent"));
        cmd.arg("demo").args(json.then_some("--json"));
        let out = tokio::time::timeout(T, cmd.env_remove("RUST_LOG").output())
            .await
            .expect("demo hung")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        String::from_utf8(out.stdout).unwrap()
    };
    let stdout = demo(true).await;
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["process"]["exit_code"], 0, "{v}");
    let output = v["process"]["output"].as_str().unwrap();
    assert!(output.contains(" through WireGuard\n"), "{output}");
    assert_eq!(v["process"]["id"].as_str().unwrap().len(), 36);
    assert_eq!(v["api_on_host"], false);
    assert_eq!(v["api_port"], 4);
    assert_eq!(v["health"]["status"], "ok");
    assert_eq!(v["listed_over_ipv6"], 1);
    assert!(v["handshakes"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["stopped"], true);
    for node in ["agent", "control"] {
        let key = v[node]["public_key"].as_str().unwrap();
        assert_eq!(key.len(), 44, "{node}: {key}");
        assert_eq!(v[node]["addresses"].as_array().unwrap().len(), 2);
    }
    // The agent learnt the control node's endpoint from its handshake.
    assert_eq!(v["agent_counters"]["control_endpoint"], v["control"]["udp"]);
    assert!(v["agent_counters"]["rx_bytes"].as_u64().unwrap() > 0);
    let rt = &v["round_trips"];
    assert_eq!(rt["count"], 200);
    let ms = |k: &str| rt[k].as_f64().unwrap();
    assert!(0.0 < ms("min_ms") && ms("min_ms") <= ms("p50_ms") && ms("p50_ms") <= ms("p99_ms"));

    let text = demo(false).await;
    assert!(text.starts_with("wgagent demo: "), "{text}");
    assert!(
        text.contains(" through WireGuard\n") && text.contains("\ndone in "),
        "{text}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbs_go_through_a_running_daemon() {
    let e = setup().await;
    let cfg = wgagent::config::Config::load(&e.config).unwrap();
    let socket = e.dir.path().join("control.sock");
    let daemon = start_daemon(&cfg, &socket).await;
    // No config at all: the daemon is enough (`--socket`, then `$WGAGENT_SOCKET`).
    let none = e.dir.path().join("absent.toml");
    let no_config = [("WGAGENT_CONFIG", none.as_os_str())];
    let o = e
        .run_with(
            &[
                "exec",
                "--socket",
                socket.to_str().unwrap(),
                "dev",
                "--",
                "echo via-daemon; exit 4",
            ],
            &no_config,
        )
        .await;
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (4, "via-daemon\n"),
        "{}",
        o.stderr
    );
    let env = [
        ("WGAGENT_CONFIG", none.as_os_str()),
        ("WGAGENT_SOCKET", socket.as_os_str()),
    ];
    let o = e
        .run_with(&["exec", "dev", "--background", "--", "sleep 300"], &env)
        .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let id = o.stdout.trim().to_owned();
    let o = e.run_with(&["ps", "dev", "--json"], &env).await;
    assert!(o.stdout.contains(&id), "{}", o.stdout);
    let o = e.run_with(&["signal", "dev", &id, "kill"], &env).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = e
        .run_with(&["output", "dev", &id, "--wait", "--json"], &env)
        .await;
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["running"], false);
    let o = e.run_with(&["rm", "dev", &id], &env).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    // The daemon's own errors, one line each.
    let o = e.run_with(&["exec", "natted", "--", "true"], &env).await;
    assert_eq!(o.code, 255);
    assert!(
        o.stderr
            .contains("agent natted: it has not reached this control daemon yet"),
        "{}",
        o.stderr
    );
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    let o = e.run_with(&["ps", "nosuch"], &env).await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("Unknown agent \"nosuch\""),
        "{}",
        o.stderr
    );
    assert!(daemon.shutdown(Duration::from_secs(5)).await);
    // An explicit socket must answer.
    let o = e
        .run(&["ps", "dev", "--socket", socket.to_str().unwrap()])
        .await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("no control daemon answers on"),
        "{}",
        o.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_daemon_an_agent_without_endpoint_is_a_clear_error() {
    let e = setup().await;
    let t0 = std::time::Instant::now();
    let o = e.run(&["exec", "natted", "--", "true"]).await;
    assert_eq!(o.code, 255);
    assert!(
        o.stderr.contains("agent natted: no endpoint in"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("wgagent control --config"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("does it know this key"), "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // `--direct` says the same even where a daemon would answer.
    let o = e.run(&["exec", "--direct", "natted", "--", "true"]).await;
    assert_eq!(o.code, 255);
    assert!(o.stderr.contains("no endpoint in"), "{}", o.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_udp_port_points_to_the_daemon() {
    let e = setup().await;
    let text = std::fs::read_to_string(&e.config).unwrap();
    let port = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let fixed = port.local_addr().unwrap().port();
    let text = text.replace(
        "address = [\"100.64.0.1\"]\n",
        &format!("address = [\"100.64.0.1\"]\nlisten_port = {fixed}\n"),
    );
    std::fs::write(&e.config, text).unwrap();
    let o = e.run(&["exec", "dev", "--", "true"]).await;
    assert_eq!(o.code, 255);
    assert!(
        o.stderr.contains(&format!(
            "cannot bind the WireGuard UDP port {fixed}: another node with this key"
        )),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("wgagent control"), "{}", o.stderr);
    drop(port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_binary_reloads_names_on_sighup_and_stops_on_sigterm() {
    let e = setup().await;
    let socket = e.dir.path().join("bin.sock");
    let log = e.dir.path().join("daemon.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wgagent"))
        .args(["control", "--config"])
        .arg(&e.config)
        .arg("--socket")
        .arg(&socket)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let daemon = wgagent::client::DaemonConnector::new(&socket);
    let mut up = false;
    for _ in 0..100 {
        if daemon.status().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let hup = |pid| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    let pid = child.id().unwrap();
    // A renamed agent is found by its new name after SIGHUP.
    let text = std::fs::read_to_string(&e.config).unwrap();
    std::fs::write(
        &e.config,
        text.replace("name = \"dev\"", "name = \"renamed\""),
    )
    .unwrap();
    hup(pid);
    let mut renamed = false;
    for _ in 0..100 {
        if daemon.resolve("renamed").await.is_ok() {
            renamed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        renamed,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let o = e
        .run_with(
            &["exec", "renamed", "--", "echo reloaded"],
            &[("WGAGENT_SOCKET", socket.as_os_str())],
        )
        .await;
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "reloaded\n"),
        "{}",
        o.stderr
    );
    // A broken file is logged and changes nothing.
    std::fs::write(&e.config, "[interface\n").unwrap();
    hup(pid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(daemon.resolve("renamed").await.is_ok());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("SIGHUP:") && text.contains("invalid TOML"),
        "{text}"
    );
    // SIGTERM: exit 0, socket removed.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(T, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists());
}
