//! Trust boundaries through real WireGuard peers (in-process nodes over loopback UDP, the agent
//! assembled by `Agent::start` from a configuration): the permission matrix (every route ×
//! every permission, 403 bodies), isolation (404 for another peer's ids, filtered lists,
//! `started_by`), the audit log read back field by field (start, signal, file write, denied,
//! a failing log: 503 and nothing started), and run-as users end to end (root only).

mod common;
#[path = "common/users.rs"]
mod users;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use wgagent::agent::Agent;
use wgagent::config::Config;
use wgagent::keys;
use wgagent::node::Node;
use wgagent::trust::{Access, AuditConfig, Isolation, Permission, Permissions};
use wgagent::wg::PeerConfig;

/// An agent and one control node per named peer (peer i at 100.64.0.(i+1)).
struct Net {
    agent: Agent,
    cfg: Config,
    peers: BTreeMap<String, (Node, String)>,
    _state: tempfile::TempDir,
}

fn allow(perms: &[Permission]) -> Access {
    Access {
        allow: Some(perms.iter().copied().collect::<Permissions>()),
        ..Access::default()
    }
}

async fn net(specs: &[(&str, Access)], tweak: impl FnOnce(&mut Config)) -> Net {
    let ak = keypair();
    let keys: Vec<Keypair> = specs.iter().map(|_| keypair()).collect();
    let configs: Vec<PeerConfig> = specs
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(i, ((name, _), k))| PeerConfig {
            name: Some((*name).to_owned()),
            ..peer(k.public, &format!("100.64.0.{}/32", i + 1), None, None)
        })
        .collect();
    let (mut cfg, state) = agent_config(ak.secret.clone(), AGENT_IP, &configs);
    for (p, (_, access)) in cfg.peers.iter_mut().zip(specs) {
        p.access = access.clone();
    }
    tweak(&mut cfg);
    let agent = Agent::start(&cfg).await.unwrap();
    let ep = Some(loopback(agent.node()));
    let mut peers = BTreeMap::new();
    for (i, ((name, _), k)) in specs.iter().zip(&keys).enumerate() {
        let n = node(
            k.secret.clone(),
            &format!("100.64.0.{}", i + 1),
            0,
            vec![peer(ak.public, "100.64.0.10/32", ep, None)],
        )
        .await;
        peers.insert((*name).to_owned(), (n, keys::encode_public(&k.public)));
    }
    Net {
        agent,
        cfg,
        peers,
        _state: state,
    }
}

impl Net {
    async fn http(&self, who: &str) -> Http {
        Http::connect(&self.peers[who].0, api_addr()).await.unwrap()
    }

    fn key(&self, who: &str) -> &str {
        &self.peers[who].1
    }

    async fn stop(self) {
        self.agent.shutdown(Duration::from_secs(10)).await;
    }
}

async fn start(h: &mut Http, body: Value) -> (u16, Value) {
    h.call("POST", "/api/v0/processes/start", Some(body)).await
}

async fn wait(h: &mut Http, id: &str) -> Value {
    let (s, v) = h
        .call(
            "GET",
            &format!("/api/v0/processes/{id}/output?wait=true&timeout_ms=20000"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["running"], false, "{v}");
    v
}

#[tokio::test]
async fn permission_matrix_every_route_every_permission() {
    use Permission::*;
    let singles = [
        ("p-run", Run),
        ("p-read", Read),
        ("p-signal", Signal),
        ("p-files", Files),
        ("p-metrics", Metrics),
    ];
    let mut specs: Vec<(&str, Access)> = singles.iter().map(|(n, p)| (*n, allow(&[*p]))).collect();
    specs.push(("p-none", allow(&[])));
    specs.push(("full", Access::default()));
    let n = net(&specs, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.txt");
    std::fs::write(&file, "one\n").unwrap();
    let f = file.display().to_string();

    let mut full = n.http("full").await;
    let (s, v) = start(
        &mut full,
        json!({"command": "sleep 30", "background": true, "stdin": "pipe"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();

    // (method, path, body, permission). Requests that pass the check may still fail for
    // other reasons (e.g. 409): only 403 matters here, and its body.
    let routes: Vec<(&str, String, Option<Value>, Permission, &str)> = vec![
        (
            "POST",
            "/api/v0/processes/start".into(),
            Some(json!({"command": "true"})),
            Run,
            "run processes",
        ),
        (
            "GET",
            "/api/v0/processes/list".into(),
            None,
            Read,
            "read processes",
        ),
        (
            "GET",
            format!("/api/v0/processes/{id}/output"),
            None,
            Read,
            "read processes",
        ),
        (
            "GET",
            format!("/api/v0/processes/{id}/log"),
            None,
            Read,
            "read processes",
        ),
        ("GET", "/api/v0/health".into(), None, Read, "read processes"),
        (
            "POST",
            format!("/api/v0/processes/{id}/stdin"),
            Some(json!("x")),
            Run,
            "run processes",
        ),
        (
            "POST",
            format!("/api/v0/processes/{id}/resize"),
            Some(json!({"rows": 5, "cols": 5})),
            Run,
            "run processes",
        ),
        (
            "POST",
            format!("/api/v0/processes/{id}/signal"),
            Some(json!({"signal": "hangup"})),
            Signal,
            "signal processes",
        ),
        (
            "DELETE",
            "/api/v0/processes/no-such-id".into(),
            None,
            Run,
            "run processes",
        ),
        (
            "POST",
            "/api/v0/list-directory".into(),
            Some(json!({"path": [], "relativity": "root"})),
            Read,
            "read files",
        ),
        (
            "GET",
            format!("/api/v0/resolve-path?path={f}"),
            None,
            Read,
            "read files",
        ),
        (
            "GET",
            format!("/api/v0/read-file?path={f}"),
            None,
            Read,
            "read files",
        ),
        (
            "GET",
            format!("/api/v0/read-file-lines?path={f}"),
            None,
            Read,
            "read files",
        ),
        (
            "POST",
            format!("/api/v0/write-file?path={f}"),
            Some(json!("two")),
            Files,
            "write files",
        ),
        (
            "POST",
            "/api/v0/edit-files".into(),
            Some(
                json!({"files": [{"path": f, "edits": [{"search": "nothing-matches", "replace": "x"}]}]}),
            ),
            Files,
            "write files",
        ),
    ];
    let mut checked = 0;
    for (name, access) in &specs {
        let mut h = n.http(name).await;
        for (method, path, body, needs, what) in &routes {
            let (s, v) = h.call(method, path, body.clone()).await;
            if access.allows(*needs) {
                assert_ne!(s, 403, "{name} {method} {path}: {v}");
            } else {
                assert_eq!(s, 403, "{name} {method} {path}: {v}");
                assert_eq!(
                    v["message"],
                    format!("Peer \"{name}\" may not {what}."),
                    "{v}"
                );
                assert_eq!(
                    v["detail"],
                    format!("permission \"{needs}\" is not in this peer's allow list")
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, specs.len() * routes.len());
    // Nothing the refused peers sent reached the file or the process.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "\"two\"");
    n.stop().await;
}

#[tokio::test]
async fn isolation_hides_other_peers_processes() {
    let n = net(
        &[("alice", Access::default()), ("bob", Access::default())],
        |c| c.api.isolation = Isolation::Peer,
    )
    .await;
    let (mut a, mut b) = (n.http("alice").await, n.http("bob").await);
    let (s, v) = start(
        &mut a,
        json!({"command": "sleep 30", "background": true, "idempotency_key": "k1"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();

    // Bob: every route on Alice's id answers exactly as for an unknown id.
    let (_, unknown) = b
        .call("GET", "/api/v0/processes/not-an-id/output", None)
        .await;
    for (method, path, body) in [
        ("GET", format!("/api/v0/processes/{id}/output"), None),
        ("GET", format!("/api/v0/processes/{id}/log"), None),
        (
            "POST",
            format!("/api/v0/processes/{id}/signal"),
            Some(json!({"signal": "kill"})),
        ),
        ("DELETE", format!("/api/v0/processes/{id}"), None),
    ] {
        let (s, v) = b.call(method, &path, body).await;
        assert_eq!(s, 404, "{method} {path}: {v}");
        assert_eq!(
            v["message"],
            unknown["message"]
                .as_str()
                .unwrap()
                .replace("not-an-id", &id)
        );
    }
    let (_, list) = b.call("GET", "/api/v0/processes/list", None).await;
    assert_eq!(list["processes"], json!([]), "{list}");
    // Bob's use of the same idempotency key starts Bob's own process.
    let (s, v) = start(
        &mut b,
        json!({"command": "sleep 30", "background": true, "idempotency_key": "k1"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let bobs = v["id"].as_str().unwrap().to_owned();
    assert_ne!(bobs, id);

    // Alice still controls hers and sees only hers, with started_by.
    let (_, list) = a.call("GET", "/api/v0/processes/list", None).await;
    let procs = list["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 1, "{list}");
    assert_eq!(procs[0]["id"], id.as_str());
    assert_eq!(
        procs[0]["started_by"],
        json!({"peer": "alice", "public_key": n.key("alice")})
    );
    for (h, id) in [(&mut a, &id), (&mut b, &bobs)] {
        let (s, v) = h
            .call(
                "POST",
                &format!("/api/v0/processes/{id}/signal"),
                Some(json!({"signal": "kill"})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        wait(h, id).await;
    }
    n.stop().await;
}

#[tokio::test]
async fn started_by_is_reported_without_isolation() {
    let n = net(
        &[("alice", Access::default()), ("bob", Access::default())],
        |_| {},
    )
    .await;
    let (mut a, mut b) = (n.http("alice").await, n.http("bob").await);
    let (_, v) = start(&mut a, json!({"command": "true"})).await;
    let id = v["id"].as_str().unwrap().to_owned();
    wait(&mut b, &id).await;
    let (_, list) = b.call("GET", "/api/v0/processes/list", None).await;
    let p = &list["processes"][0];
    assert_eq!(p["id"], id.as_str());
    assert_eq!(p["started_by"]["peer"], "alice");
    assert_eq!(p["started_by"]["public_key"], n.key("alice"));
    n.stop().await;
}

fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn audit_log_records_who_did_what() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let n = net(
        &[
            ("ops", Access::default()),
            ("viewer", allow(&[Permission::Read])),
        ],
        |c| c.audit = Some(AuditConfig::new(log.clone())),
    )
    .await;
    let (mut ops, mut viewer) = (n.http("ops").await, n.http("viewer").await);
    let work = dir.path().display().to_string();
    let (s, v) = start(
        &mut ops,
        json!({"command": "sleep 30", "workdir": work, "background": true, "stdin": "pipe",
               "env": {"API_TOKEN": "very-secret-value"},
               "limits": {"open_files": 64}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    // Written before the response: already there.
    let lines = audit_lines(&log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert!(chrono_like(l["time"].as_str().unwrap()), "{l}");
    assert_eq!(l["peer"], "ops");
    assert_eq!(l["public_key"], n.key("ops"));
    assert!(
        l["source"].as_str().unwrap().starts_with("100.64.0.1:"),
        "{l}"
    );
    assert_eq!(l["method"], "POST");
    assert_eq!(l["route"], "/api/v0/processes/start");
    assert_eq!(l["process_id"], id.as_str());
    assert_eq!(l["command"], "sleep 30");
    assert_eq!(l["workdir"], work.as_str());
    assert_eq!(l["env_keys"], json!(["API_TOKEN"]));
    assert_eq!(l["user"], n.agent.manager().agent_user().name.as_str());
    assert_eq!(l["limits"]["open_files"], 64);
    assert_eq!(l["status"], 200);
    assert!(l.get("denied").is_none());

    // Reads are not audited; stdin (its byte count, never the bytes) and a signal are.
    ops.call("GET", "/api/v0/processes/list", None).await;
    let (s, _) = ops
        .call(
            "POST",
            &format!("/api/v0/processes/{id}/stdin"),
            Some(json!("abc")),
        )
        .await;
    assert_eq!(s, 200);
    let l = audit_lines(&log).pop().unwrap();
    assert_eq!(l["route"], format!("/api/v0/processes/{id}/stdin"));
    assert_eq!(
        (l["process_id"].as_str(), l["bytes"].as_u64()),
        (Some(id.as_str()), Some(5))
    );
    let (s, _) = ops
        .call(
            "POST",
            &format!("/api/v0/processes/{id}/signal"),
            Some(json!({"signal": "kill"})),
        )
        .await;
    assert_eq!(s, 200);
    wait(&mut ops, &id).await;
    let l = audit_lines(&log).pop().unwrap();
    assert_eq!(l["route"], format!("/api/v0/processes/{id}/signal"));
    assert_eq!(l["process_id"], id.as_str());
    assert_eq!(l["signal"], "kill");
    assert_eq!(l["status"], 200);

    // A file write: path, bytes and hashes, never the content.
    let target = dir.path().join("notes.txt");
    let (s, w) = ops
        .call(
            "POST",
            &format!("/api/v0/write-file?path={}", target.display()),
            Some(json!("confidential-content")),
        )
        .await;
    assert_eq!(s, 200, "{w}");
    let l = audit_lines(&log).pop().unwrap();
    assert_eq!(l["route"], "/api/v0/write-file");
    assert_eq!(l["paths"], json!([target.display().to_string()]));
    assert_eq!(l["bytes"], 22);
    assert_eq!(l["hash_after"], json!([w["hash"]]));

    // A denied request: who, what it needed, 403.
    let (s, _) = start(&mut viewer, json!({"command": "touch /tmp/never"})).await;
    assert_eq!(s, 403);
    let l = audit_lines(&log).pop().unwrap();
    assert_eq!(l["peer"], "viewer");
    assert_eq!(l["public_key"], n.key("viewer"));
    assert_eq!(l["status"], 403);
    assert_eq!(l["denied"], "run");
    assert!(l.get("command").is_none());

    // A start refused by validation is recorded with its status too.
    let (s, _) = start(&mut ops, json!({"command": ""})).await;
    assert_eq!(s, 400);
    let l = audit_lines(&log).pop().unwrap();
    assert_eq!(
        (l["status"].as_u64(), l["peer"].as_str()),
        (Some(400), Some("ops"))
    );

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("very-secret-value") && !text.contains("confidential-content"));
    assert_eq!(audit_lines(&log).len(), 6, "{text}");

    // logrotate moves the file; the reload (SIGHUP) reopens it at the configured path.
    let rotated = dir.path().join("audit.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    n.agent.reload(&n.cfg.clone()).await.unwrap();
    let (s, _) = start(&mut viewer, json!({"command": "true"})).await;
    assert_eq!(s, 403);
    assert_eq!(audit_lines(&log).len(), 1);
    assert_eq!(audit_lines(&rotated).len(), 6);
    n.stop().await;
}

#[tokio::test]
async fn allowed_sources_refusals_are_audited_too() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let n = net(
        &[("ops", Access::default()), ("outside", Access::default())],
        |c| {
            c.api.allowed_sources = Some(vec!["100.64.0.1/32".parse().unwrap()]);
            c.audit = Some(AuditConfig::new(log.clone()));
        },
    )
    .await;
    let mut outside = n.http("outside").await;
    let (s, _) = outside.call("GET", "/api/v0/processes/list", None).await;
    assert_eq!(s, 403);
    let l = audit_lines(&log).pop().unwrap();
    assert_eq!(l["peer"], "outside");
    assert_eq!(l["public_key"], n.key("outside"));
    assert_eq!(l["denied"], "allowed_sources");
    assert_eq!(l["status"], 403);
    assert_eq!(l["route"], "/api/v0/processes/list");
    n.stop().await;
}

/// RFC 3339 UTC with milliseconds, e.g. 2026-11-29T23:59:01.123Z.
fn chrono_like(t: &str) -> bool {
    let b = t.as_bytes();
    t.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && t.ends_with('Z')
}

#[tokio::test]
async fn a_failing_audit_log_refuses_the_start_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let n = net(&[("ops", Access::default())], |c| {
        // Opens fine; every write fails with ENOSPC.
        c.audit = Some(AuditConfig::new("/dev/full".into()));
    })
    .await;
    let mut ops = n.http("ops").await;
    let (s, v) = start(
        &mut ops,
        json!({"command": format!("touch {}", marker.display())}),
    )
    .await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(
        v["message"],
        "The request could not be recorded in the audit log; nothing was done."
    );
    assert!(v["detail"].as_str().unwrap().contains("/dev/full"), "{v}");
    let (_, list) = ops.call("GET", "/api/v0/processes/list", None).await;
    assert_eq!(list["processes"], json!([]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!marker.exists());
    // Other state-changing routes fail closed too (here: a file write).
    let f = dir.path().join("w.txt");
    let (s, _) = ops
        .call(
            "POST",
            &format!("/api/v0/write-file?path={}", f.display()),
            Some(json!("x")),
        )
        .await;
    assert_eq!(s, 503);
    n.stop().await;

    // fail_closed = false: logged, the request proceeds.
    let n = net(&[("ops", Access::default())], |c| {
        c.audit = Some(AuditConfig {
            fail_closed: false,
            ..AuditConfig::new("/dev/full".into())
        });
    })
    .await;
    let mut ops = n.http("ops").await;
    let (s, v) = start(&mut ops, json!({"command": "true"})).await;
    assert_eq!(s, 200, "{v}");
    n.stop().await;
}

#[tokio::test]
async fn run_as_users_end_to_end() {
    let Some(u) = users::TestUser::create("t") else {
        return;
    };
    let Some(other) = users::TestUser::create("o") else {
        return;
    };
    let n = net(
        &[
            (
                "ci",
                Access {
                    run_as: Some(u.name.clone()),
                    users: vec![other.name.clone()],
                    ..Access::default()
                },
            ),
            ("ops", Access::default()),
        ],
        |_| {},
    )
    .await;
    let mut ci = n.http("ci").await;
    // Default: the peer's run_as, with its identity and home.
    let (s, v) = start(
        &mut ci,
        json!({"command": "id -u; echo $HOME; pwd; touch mine"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let out = wait(&mut ci, v["id"].as_str().unwrap()).await;
    let home = u.home.display().to_string();
    assert_eq!(
        out["output"].as_str().unwrap(),
        format!("{}\n{home}\n{home}\n", u.uid)
    );
    let m = std::fs::metadata(u.home.join("mine")).unwrap();
    assert_eq!((m.uid(), m.gid()), (u.uid, u.gid));
    let (_, list) = ci.call("GET", "/api/v0/processes/list", None).await;
    assert_eq!(list["processes"][0]["user"], u.name.as_str());

    // A listed user may be asked for; others (root included) are refused with 403.
    let (s, v) = start(&mut ci, json!({"command": "id -un", "user": other.name})).await;
    assert_eq!(s, 200, "{v}");
    let out = wait(&mut ci, v["id"].as_str().unwrap()).await;
    assert_eq!(out["output"].as_str().unwrap().trim(), other.name);
    let (s, v) = start(&mut ci, json!({"command": "id -u", "user": "root"})).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        v["message"],
        "Peer \"ci\" may not run commands as user \"root\"."
    );
    // A peer without users may not pick one either.
    let mut ops = n.http("ops").await;
    let (s, _) = start(&mut ops, json!({"command": "id -u", "user": u.name})).await;
    assert_eq!(s, 403);

    // Files as the peer's user: new files are the user's; root's directories are closed.
    let f = u.home.join("written.txt");
    let (s, v) = ci
        .call(
            "POST",
            &format!("/api/v0/write-file?path={}", f.display()),
            Some(json!("hello")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!((m.uid(), m.gid()), (u.uid, u.gid));
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::fs::write(private.path().join("secret"), "s").unwrap();
    for (method, path) in [
        (
            "GET",
            format!("/api/v0/read-file?path={}/secret", private.path().display()),
        ),
        (
            "POST",
            format!("/api/v0/write-file?path={}/new", private.path().display()),
        ),
    ] {
        let (s, v) = ci.call(method, &path, Some(json!("x"))).await;
        assert_eq!(s, 403, "{method} {path}: {v}");
    }
    assert!(!private.path().join("new").exists());
    // The agent's own peer (no run_as) still reads it, and the pool thread that served the
    // user is the agent again.
    let (s, _) = ops
        .call(
            "GET",
            &format!("/api/v0/read-file?path={}/secret", private.path().display()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    // No thread of the agent kept the user's file identity.
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for key in ["Uid:", "Gid:"] {
            if let Some(line) = status.lines().find(|l| l.starts_with(key)) {
                assert!(line[4..].split_whitespace().all(|v| v == "0"), "{line}");
            }
        }
    }
    n.stop().await;
}

/// The control daemon is one peer: requests forwarded through its socket carry its peer's
/// rights (here read-only) and name it in refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_daemon_acts_with_its_peers_rights() {
    use wgagent::client::{ClientError, DaemonConnector};
    let ak = keypair();
    let dk = keypair();
    let (mut cfg, _state) = agent_config(
        ak.secret.clone(),
        AGENT_IP,
        &[PeerConfig {
            name: Some("daemon".into()),
            ..peer(dk.public, "100.64.0.1/32", None, None)
        }],
    );
    cfg.peers[0].access = allow(&[Permission::Read]);
    let agent = Agent::start(&cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[interface]\nprivate_key = \"{}\"\naddress = [\"100.64.0.1\"]\nuapi = false\n\n\
         [[peer]]\nname = \"dev\"\npublic_key = \"{}\"\nallowed_ips = [\"{AGENT_IP}/32\"]\nendpoint = \"{}\"\n",
        keys::encode_private(&dk.secret),
        keys::encode_public(&ak.public),
        loopback(agent.node()),
    );
    let path = dir.path().join("control.toml");
    std::fs::write(&path, text).unwrap();
    let dcfg = Config::load(&path).unwrap();
    let socket = dir.path().join("control.sock");
    let daemon = start_daemon(&dcfg, &socket).await;
    let opts = wgagent::client::AgentOptions {
        request_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let conn = DaemonConnector::new(&socket)
        .agent("dev", opts)
        .await
        .unwrap();
    assert_eq!(conn.list().await.unwrap().processes.len(), 0);
    let req = wgagent::api::types::StartProcessRequest {
        command: "true".into(),
        ..Default::default()
    };
    match conn.start(&req).await {
        Err(ClientError::Status {
            status: 403,
            message,
            ..
        }) => assert_eq!(message, "Peer \"daemon\" may not run processes."),
        other => panic!("{other:?}"),
    }
    daemon.shutdown(Duration::from_secs(5)).await;
    agent.shutdown(Duration::from_secs(5)).await;
}
