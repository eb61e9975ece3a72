//! The `wireguard-go` lab that the root-only interop tests share, built on [`super::netns`]:
//! the skip decision (prerequisites, then the first namespace), keys made by `wgagent` or `wg`,
//! a `wireguard-go` peer of the agent configured with `wg set`, and API calls with `curl`
//! through its TUN interface.
//!
//! Include it next to `netns.rs`:
//! `#[path = "common/netns.rs"] mod netns; #[path = "common/lab.rs"] mod lab;`.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::netns::{self, Lab, Out, STEP};

/// The agent's API as its `wireguard-go` peers reach it through the tunnel.
pub const API: &str = "http://100.64.0.10:4";

/// Why a test that runs `wireguard-go` cannot run here: [`netns::missing_prerequisites`] of
/// `tools`, or no `/dev/net/tun`.
pub fn tunnel_prerequisites(tools: &[&str]) -> Option<String> {
    netns::missing_prerequisites(tools)
        .or_else(|| (!Path::new("/dev/net/tun").exists()).then(|| "no /dev/net/tun".into()))
}

/// A new lab (`Lab::new(prefix)`) with its first namespace `<tag><first>`, or `None` after
/// printing `SKIP <test>: <why>`: where `why_not` says the test cannot run, or where the machine
/// refuses namespaces even to root (an unprivileged container). Any other failure to create the
/// namespace (say, a stale one of the same name) panics.
pub fn open(
    test: &str,
    why_not: Option<String>,
    prefix: &str,
    first: &str,
) -> Option<(Lab, String)> {
    if let Some(why) = why_not {
        println!("SKIP {test}: {why}");
        return None;
    }
    let mut lab = Lab::new(prefix);
    match lab.namespace(first) {
        Ok(ns) => Some((lab, ns)),
        Err(e) if e.contains("not permitted") || e.contains("Permission denied") => {
            println!("SKIP {test}: cannot create a network namespace: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// `<program> genkey` (`wgagent` or `wg`): a fresh private key, stored in `path` (a new file,
/// mode 0600) followed by a newline.
pub fn genkey(program: impl AsRef<OsStr>, path: &Path) -> String {
    let program = program.as_ref();
    let out = netns::run(
        Command::new(program).arg("genkey").stdin(Stdio::null()),
        STEP,
    );
    assert!(out.ok(), "{program:?} genkey: {out:?}");
    let key = out.stdout.trim().to_owned();
    write_new(path, &format!("{key}\n"));
    key
}

/// Writes `text` to `path`, a new file with mode 0600 (a key, or a config that holds one).
pub fn write_new(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// `<program> pubkey` (`wgagent` or `wg`) of the private key stored in `path`.
pub fn pubkey(program: impl AsRef<OsStr>, path: &Path) -> String {
    let program = program.as_ref();
    let key = std::fs::File::open(path).unwrap();
    let out = netns::run(Command::new(program).arg("pubkey").stdin(key), STEP);
    assert!(out.ok(), "{program:?} pubkey: {out:?}");
    out.stdout.trim().to_owned()
}

/// A `wireguard-go` peer of the agent (whose tunnel address is 100.64.0.10) in namespace `ns`.
pub struct Peer<'a> {
    pub ns: &'a str,
    pub ifname: &'a str,
    /// The peer's private key file.
    pub key_file: &'a str,
    /// `wg set ... listen-port`, or wireguard-go's random port.
    pub listen_port: Option<&'a str>,
    pub agent_pub: &'a str,
    /// Where it sends to the agent, or `None` to wait for the agent's handshake.
    pub endpoint: Option<&'a str>,
    /// Its tunnel address with prefix, e.g. `100.64.0.1/24`.
    pub address: &'a str,
}

/// Starts `wireguard-go` for `peer`, configures it with `wg set` (the agent as its only peer,
/// allowed 100.64.0.10/32), gives the interface its address and brings it up with MTU 1280.
pub fn wireguard_go_peer(lab: &mut Lab, peer: &Peer) {
    let Peer {
        ns,
        ifname,
        key_file,
        listen_port,
        agent_pub,
        endpoint,
        address,
    } = *peer;
    lab.wireguard_go(ns, ifname);
    let mut set = vec!["wg", "set", ifname, "private-key", key_file];
    if let Some(port) = listen_port {
        set.extend(["listen-port", port]);
    }
    set.extend(["peer", agent_pub, "allowed-ips", "100.64.0.10/32"]);
    if let Some(ep) = endpoint {
        set.extend(["endpoint", ep]);
    }
    lab.must(ns, &set);
    lab.must(ns, &["ip", "addr", "add", address, "dev", ifname]);
    lab.must(ns, &["ip", "link", "set", ifname, "up", "mtu", "1280"]);
}

/// `curl -sS <args>` inside `ns`, bounded by `limit`.
pub fn curl_within(lab: &Lab, ns: &str, args: &[&str], limit: Duration) -> Out {
    let mut argv = vec!["curl", "-sS"];
    argv.extend(args);
    lab.exec(ns, &argv, limit)
}

/// `curl -sS <args>` inside `ns`, bounded a little beyond a `--max-time` of up to 15 s.
pub fn curl(lab: &Lab, ns: &str, args: &[&str]) -> Out {
    curl_within(lab, ns, args, Duration::from_secs(20))
}

/// One call of the agent's API from `ns` with curl: `max_time` is curl's `--max-time`, `limit`
/// bounds the whole run; POST of JSON when `body` is given. The body is followed by a line with
/// the status code; see [`status_and_json`].
pub fn curl_api(
    lab: &Lab,
    ns: &str,
    path: &str,
    body: Option<&str>,
    max_time: &str,
    limit: Duration,
) -> Out {
    let url = format!("{API}{path}");
    let mut args = vec!["--max-time", max_time, "-w", "\n%{http_code}", &url];
    if let Some(body) = body {
        args.extend([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ]);
    }
    curl_within(lab, ns, &args, limit)
}

/// The status and JSON body (`Null` when it is not JSON) of a [`curl_api`] output.
pub fn status_and_json(out: &Out) -> Result<(u16, Value), &'static str> {
    let (body, code) = out.stdout.rsplit_once('\n').ok_or("no status line")?;
    let status = code.trim().parse().map_err(|_| "bad status")?;
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// One API call through the tunnel from `ns` (curl `--max-time 15`), which must get an answer;
/// POST when `body` is given. Status and JSON.
pub fn http(lab: &Lab, ns: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let out = curl_api(lab, ns, path, body, "15", Duration::from_secs(20));
    assert!(out.ok(), "curl {path} from {ns}: {out:?}");
    status_and_json(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// `GET /api/v0/health` from `ns` (curl `--max-time 5`), up to `tries` times until one is
/// answered (the first may wait out wireguard-go's handshake retry); `missed` sees each failed
/// try. The answered output, or `None`.
pub fn health(lab: &Lab, ns: &str, tries: usize, mut missed: impl FnMut(&Out)) -> Option<Out> {
    let url = format!("{API}/api/v0/health");
    for _ in 0..tries {
        let out = curl(lab, ns, &["--max-time", "5", &url]);
        if out.ok() {
            return Some(out);
        }
        missed(&out);
    }
    None
}

/// The agent's WireGuard UDP port in the one-control-peer labs ([`agent_config`]).
pub const AGENT_PORT: u16 = 51820;

/// The key of a `wireguard-go` control peer: made by `wg genkey` into `<dir>/control.key`.
pub struct ControlKey {
    pub file: std::path::PathBuf,
    pub public: String,
}

impl ControlKey {
    pub fn new(dir: &Path) -> ControlKey {
        let file = dir.join("control.key");
        genkey("wg", &file);
        let public = pubkey("wg", &file);
        ControlKey { file, public }
    }
}

/// An agent config with one peer, the control peer `peer_name` (tunnel address 100.64.0.1):
/// the agent's key in `agent.key` next to the config, address 100.64.0.10, [`AGENT_PORT`],
/// and `api` as the body of its `[api]` section.
pub fn agent_config(api: &str, peer_name: &str, control: &ControlKey) -> String {
    format!(
        "[interface]\nprivate_key_file = \"agent.key\"\naddress = [\"100.64.0.10\"]\n\
         listen_port = {AGENT_PORT}\n\n[api]\n{api}\n[[peer]]\nname = \"{peer_name}\"\n\
         public_key = \"{}\"\nallowed_ips = [\"100.64.0.1/32\"]\n",
        control.public
    )
}

/// The control peer of an [`agent_config`] agent: `wireguard-go` in `ns` (interface named like
/// the namespace, address 100.64.0.1/24) dialling the agent at `agent_ip`:[`AGENT_PORT`], then
/// [`health`] through the tunnel (6 tries). The answered health output, or `None`.
pub fn control_peer(
    lab: &mut Lab,
    ns: &str,
    control: &ControlKey,
    agent_pub: &str,
    agent_ip: &str,
) -> Option<Out> {
    let endpoint = format!("{agent_ip}:{AGENT_PORT}");
    let peer = Peer {
        ns,
        ifname: ns,
        key_file: control.file.to_str().unwrap(),
        listen_port: None,
        agent_pub,
        endpoint: Some(&endpoint),
        address: "100.64.0.1/24",
    };
    wireguard_go_peer(lab, &peer);
    health(lab, ns, 6, |_| {})
}
