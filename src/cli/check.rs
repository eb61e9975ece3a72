//! `wgagent check --config F`: loads a configuration exactly as `agent` and `control` do and
//! says what the node would be (key, addresses, peers, warnings) and what it would listen on,
//! without starting anything. Exit 1 (with the same precise error as at start) when it is
//! invalid, so it can guard a deploy or `ExecStartPre=`.

use std::path::Path;

use serde_json::json;

use crate::config::{Config, Interface};
use crate::keys;

/// Loads `path` and prints the summary (text or JSON); an invalid file is an error.
pub fn run(path: &Path, json_out: bool) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    let summary = summary(&cfg);
    if json_out {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", text(&summary));
    }
    Ok(())
}

/// The facts an operator checks before starting the node, as one JSON value (the text form is
/// printed from it, so both always agree).
fn summary(cfg: &Config) -> serde_json::Value {
    let i = &cfg.interface;
    let uapi = |default: &str| crate::node::uapi_path(i, default).map(|p| p.display().to_string());
    let peers: Vec<_> = cfg
        .peers
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "public_key": keys::encode_public(&p.public_key),
                "allowed_ips": p.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "endpoint": p.endpoint.map(|e| e.to_string()),
                "persistent_keepalive": p.persistent_keepalive,
                "preshared_key": p.preshared_key.is_some(),
            })
        })
        .collect();
    let pending: Vec<_> = cfg
        .pending_endpoints
        .iter()
        .map(|p| format!("{} ({}:{})", p.label, p.host, p.port))
        .collect();
    json!({
        "valid": true,
        "public_key": keys::encode_public(&i.public_key),
        "addresses": i.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "listen": {
            "wireguard_udp_port": i.listen_port,
            "api_on_tunnel": i.addresses.iter().map(|a| std::net::SocketAddr::new(*a, cfg.api.port).to_string()).collect::<Vec<_>>(),
            "uapi_socket_agent": uapi(Interface::DEFAULT_NAME),
            "uapi_socket_control_daemon": uapi(Interface::DEFAULT_CONTROL_NAME),
            "metrics_host": cfg.metrics.listen.map(|a| a.to_string()),
            "host_tcp_api": false,
        },
        "peers": peers,
        "endpoints_resolved_later": pending,
        "warnings": cfg.warnings,
    })
}

fn text(s: &serde_json::Value) -> String {
    let mut out = String::new();
    let str_of = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let list = |v: &serde_json::Value| {
        v.as_array()
            .map(|a| a.iter().map(str_of).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    out.push_str("configuration is valid\n");
    out.push_str(&format!("public key:    {}\n", str_of(&s["public_key"])));
    out.push_str(&format!("addresses:     {}\n", list(&s["addresses"])));
    let l = &s["listen"];
    out.push_str(&format!(
        "listens on:    WireGuard UDP port {} (0 = any free port)\n",
        l["wireguard_udp_port"]
    ));
    out.push_str(&format!(
        "               process API (agent) on the tunnel only: {}\n",
        list(&l["api_on_tunnel"])
    ));
    out.push_str(&format!(
        "               UAPI socket: {} (agent), {} (control daemon)\n",
        str_of(&l["uapi_socket_agent"]),
        str_of(&l["uapi_socket_control_daemon"])
    ));
    out.push_str(&format!(
        "               metrics on the host: {}\n",
        str_of(&l["metrics_host"])
    ));
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("peers:         {}\n", peers.len()));
    for p in &peers {
        out.push_str(&format!(
            "  {} {}  allowed_ips {}  endpoint {}\n",
            str_of(&p["name"]),
            str_of(&p["public_key"]),
            list(&p["allowed_ips"]),
            str_of(&p["endpoint"]),
        ));
    }
    for e in s["endpoints_resolved_later"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "note: endpoint {} does not resolve now; it is retried in the background\n",
            str_of(e)
        ));
    }
    for w in s["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("warning: {}\n", str_of(w)));
    }
    out
}
