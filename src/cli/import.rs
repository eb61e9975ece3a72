//! `wgagent import wg0.conf`: a wg-quick configuration converted to our TOML.
//!
//! Owns the conversion ([`convert`], pure: text in, TOML and findings out) and the verb
//! ([`run`]: read the file, write the TOML to stdout or a new file with mode 0600, since it
//! holds the private key, print the findings on stderr).
//!
//! What maps: `[Interface]` `PrivateKey`, `Address` (the addresses; their prefix length is
//! wg-quick's route, which our allowed IPs already give), `ListenPort`, `MTU`; each `[Peer]`'s
//! `PublicKey`, `PresharedKey`, `AllowedIPs`, `Endpoint`, `PersistentKeepalive`. What does not
//! (`DNS`, `Table`, `FwMark`, `SaveConfig`, the `PreUp`/`PostUp`/`PreDown`/`PostDown` hooks:
//! there is no interface to configure in userspace) is named in the findings and in a comment
//! of the output, never silently dropped. Keys match case-insensitively, as wg-quick's do; an
//! unknown key or section is an error naming its line.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

/// The result of [`convert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The configuration, ready for `wgagent agent --config` or `wgagent control --config`.
    pub toml: String,
    /// Things the user should know: keys that have no equivalent, addresses that were dropped.
    pub findings: Vec<String>,
}

/// A wg-quick file we cannot convert: what is wrong, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ImportError {
    pub line: usize,
    pub problem: String,
}

/// wg-quick keys of `[Interface]` that configure the host's interface, routes or hooks.
const UNSUPPORTED: [&str; 8] = [
    "DNS",
    "Table",
    "FwMark",
    "SaveConfig",
    "PreUp",
    "PostUp",
    "PreDown",
    "PostDown",
];

#[derive(Default)]
struct Section {
    /// The line of the `[Interface]` or `[Peer]` header.
    line: usize,
    entries: Vec<(String, String, usize)>,
}

/// Converts the text of a wg-quick file.
pub fn convert(text: &str) -> Result<Imported, ImportError> {
    let mut interface: Option<Section> = None;
    let mut peers: Vec<Section> = Vec::new();
    // Where the next key goes: `None` before the first section, `Some(None)` in [Interface],
    // `Some(Some(i))` in the i-th [Peer].
    let mut current: Option<Option<usize>> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if content.starts_with('[') {
            let name = content.trim_start_matches('[').trim_end_matches(']').trim();
            if name.eq_ignore_ascii_case("Interface") {
                if interface.is_some() {
                    return Err(err(line, "a second [Interface] section"));
                }
                interface = Some(Section {
                    line,
                    ..Section::default()
                });
                current = Some(None);
            } else if name.eq_ignore_ascii_case("Peer") {
                peers.push(Section {
                    line,
                    ..Section::default()
                });
                current = Some(Some(peers.len() - 1));
            } else {
                return Err(err(
                    line,
                    format!("unknown section [{name}] (expected [Interface] or [Peer])"),
                ));
            }
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(err(
                line,
                format!("expected `Key = Value`, found {content:?}"),
            ));
        };
        let section = match current {
            None => {
                return Err(err(
                    line,
                    "a key before the first [Interface] or [Peer] section",
                ));
            }
            Some(None) => interface.as_mut(),
            Some(Some(i)) => peers.get_mut(i),
        };
        if let Some(section) = section {
            section
                .entries
                .push((key.trim().to_owned(), value.trim().to_owned(), line));
        }
    }
    let interface = interface.ok_or_else(|| err(1, "no [Interface] section"))?;

    let mut out = String::new();
    let mut findings = Vec::new();
    let mut body = String::from("[interface]\n");
    let mut have_key = false;
    let mut addresses = Vec::new();
    for (key, value, line) in &interface.entries {
        match canonical(key, &["PrivateKey", "Address", "ListenPort", "MTU"]) {
            Some("PrivateKey") => {
                kv(&mut body, "private_key", &quote(value));
                have_key = true;
            }
            Some("Address") => {
                for a in list(value) {
                    let (ip, _prefix) = a.split_once('/').unwrap_or((a, ""));
                    let ip = ip.parse::<std::net::IpAddr>().map_err(|e| {
                        err(*line, format!("Address {a:?} is not an IP address: {e}"))
                    })?;
                    if addresses
                        .iter()
                        .any(|x: &std::net::IpAddr| x.is_ipv4() == ip.is_ipv4())
                    {
                        findings.push(format!(
                            "line {line}: Address {a} dropped: wgagent takes one address per \
                             family"
                        ));
                        continue;
                    }
                    addresses.push(ip);
                }
            }
            Some("ListenPort") => {
                let port: u16 = value
                    .parse()
                    .map_err(|_| err(*line, format!("ListenPort {value:?} is not a port")))?;
                kv(&mut body, "listen_port", &port.to_string());
            }
            Some("MTU") => {
                let mtu: u16 = value
                    .parse()
                    .map_err(|_| err(*line, format!("MTU {value:?} is not a number")))?;
                kv(&mut body, "mtu", &mtu.to_string());
            }
            _ => match canonical(key, &UNSUPPORTED) {
                Some(name) => findings.push(format!(
                    "line {line}: {name} has no equivalent in wgagent (no kernel interface, \
                     routes or hooks in userspace); not imported"
                )),
                None => {
                    return Err(err(*line, format!("unknown [Interface] key {key:?}")));
                }
            },
        }
    }
    if !have_key {
        return Err(err(interface.line, "[Interface] has no PrivateKey"));
    }
    if addresses.is_empty() {
        return Err(err(
            interface.line,
            "[Interface] has no Address: wgagent needs the node's tunnel address",
        ));
    }
    let addresses: Vec<String> = addresses.iter().map(|a| quote(&a.to_string())).collect();
    kv(&mut body, "address", &format!("[{}]", addresses.join(", ")));

    for peer in &peers {
        body.push_str("\n[[peer]]\n");
        let mut have_key = false;
        let mut have_ips = false;
        for (key, value, line) in &peer.entries {
            let known = [
                "PublicKey",
                "PresharedKey",
                "AllowedIPs",
                "Endpoint",
                "PersistentKeepalive",
            ];
            match canonical(key, &known) {
                Some("PublicKey") => {
                    kv(&mut body, "public_key", &quote(value));
                    have_key = true;
                }
                Some("PresharedKey") => kv(&mut body, "preshared_key", &quote(value)),
                Some("AllowedIPs") => {
                    let ips: Vec<String> = list(value).map(quote).collect();
                    kv(&mut body, "allowed_ips", &format!("[{}]", ips.join(", ")));
                    have_ips = true;
                }
                Some("Endpoint") => kv(&mut body, "endpoint", &quote(value)),
                Some("PersistentKeepalive") => {
                    if value.eq_ignore_ascii_case("off") {
                        continue;
                    }
                    let secs: u16 = value.parse().map_err(|_| {
                        err(
                            *line,
                            format!("PersistentKeepalive {value:?} is not a number"),
                        )
                    })?;
                    if secs > 0 {
                        kv(&mut body, "persistent_keepalive", &secs.to_string());
                    }
                }
                _ => return Err(err(*line, format!("unknown [Peer] key {key:?}"))),
            }
        }
        if !have_key {
            return Err(err(peer.line, "[Peer] has no PublicKey"));
        }
        if !have_ips {
            return Err(err(peer.line, "[Peer] has no AllowedIPs"));
        }
    }

    out.push_str("# Imported from a wg-quick configuration by `wgagent import`.\n");
    out.push_str("# Every key: config/agent.example.toml and config/control.example.toml.\n");
    for f in &findings {
        let _ = writeln!(out, "# {f}");
    }
    out.push_str(&body);
    Ok(Imported {
        toml: out,
        findings,
    })
}

/// `wgagent import FILE [--output OUT]`.
pub fn run(file: &Path, output: Option<&Path>, as_json: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let imported = convert(&text).with_context(|| file.display().to_string())?;
    if !as_json {
        for f in &imported.findings {
            eprintln!("wgagent: {}: {f}", file.display());
        }
    }
    match output {
        None if as_json => {
            return super::json::print(&super::json::Import {
                toml: Some(imported.toml),
                output: None,
                findings: imported.findings,
            });
        }
        None => print!("{}", imported.toml),
        Some(out) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // The file holds the private key: owner-only from the first byte, never replaced.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(out)
                .with_context(|| format!("{} (it must not exist yet)", out.display()))?;
            f.write_all(imported.toml.as_bytes())
                .with_context(|| out.display().to_string())?;
            if as_json {
                return super::json::print(&super::json::Import {
                    toml: None,
                    output: Some(out.display().to_string()),
                    findings: imported.findings,
                });
            }
        }
    }
    Ok(())
}

fn err(line: usize, problem: impl Into<String>) -> ImportError {
    ImportError {
        line,
        problem: problem.into(),
    }
}

/// The spelling of `key` in `known` (wg-quick compares keys case-insensitively).
fn canonical<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known.iter().copied().find(|k| k.eq_ignore_ascii_case(key))
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn kv(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key} = {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    const WG0: &str = "\
# a typical wg-quick file
[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
Address = 10.200.0.2/24, fd00:200::2/64
ListenPort = 51820
MTU = 1420
DNS = 10.200.0.1
PostUp = iptables -A FORWARD -i %i -j ACCEPT

[Peer]
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
PresharedKey = 2Vn7+oBIt8fYgCqBjXqVMHQEvA4Ru3jd9Nun4jmjkoE=
AllowedIPs = 10.200.0.1/32, fd00:200::1/128
Endpoint = vpn.example.net:51820
PersistentKeepalive = 25

[peer]
publickey = TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=
allowedips = 10.200.0.3/32
persistentkeepalive = off
";

    #[test]
    fn converts_every_supported_key_and_names_the_rest() {
        let out = convert(WG0).unwrap();
        assert!(
            out.toml.contains(
                "[interface]\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\n\
                 listen_port = 51820\nmtu = 1420\naddress = [\"10.200.0.2\", \"fd00:200::2\"]\n"
            ),
            "{}",
            out.toml
        );
        assert!(out.toml.contains(
            "[[peer]]\npublic_key = \"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\"\n\
             preshared_key = \"2Vn7+oBIt8fYgCqBjXqVMHQEvA4Ru3jd9Nun4jmjkoE=\"\n\
             allowed_ips = [\"10.200.0.1/32\", \"fd00:200::1/128\"]\n\
             endpoint = \"vpn.example.net:51820\"\npersistent_keepalive = 25\n"
        ));
        assert!(out.toml.contains(
            "[[peer]]\npublic_key = \"TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=\"\n\
             allowed_ips = [\"10.200.0.3/32\"]\n"
        ));
        assert_eq!(out.findings.len(), 2, "{:?}", out.findings);
        assert!(out.findings[0].starts_with("line 7: DNS has no equivalent"));
        assert!(out.findings[1].starts_with("line 8: PostUp has no equivalent"));
        // The findings are in the file too.
        assert!(out.toml.contains("# line 7: DNS has no equivalent"));
        let parsed: toml::Table = out.toml.parse().expect("valid TOML");
        assert_eq!(parsed["peer"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn refuses_what_it_cannot_convert_naming_the_line() {
        let cases = [
            (
                "[Interface]\nPrivateKey = k\nAddres = 10.0.0.1\n",
                "line 3: unknown [Interface] key \"Addres\"",
            ),
            (
                "PrivateKey = k\n",
                "line 1: a key before the first [Interface] or [Peer] section",
            ),
            (
                "[Interface]\nAddress = 10.0.0.1\n",
                "line 1: [Interface] has no PrivateKey",
            ),
            (
                "[Interface]\nPrivateKey = k\n",
                "line 1: [Interface] has no Address",
            ),
            (
                "[Interface]\nPrivateKey = k\nAddress = ten\n",
                "line 3: Address \"ten\" is not an IP address",
            ),
            (
                "[Interface]\nPrivateKey = k\nAddress = 10.0.0.1\n[Peer]\nAllowedIPs = 10.0.0.2/32\n",
                "line 4: [Peer] has no PublicKey",
            ),
            (
                "[Interface]\nPrivateKey = k\nAddress = 10.0.0.1\n[Peer]\nPublicKey = p\nEndpointt = x:1\n",
                "line 6: unknown [Peer] key \"Endpointt\"",
            ),
            (
                "[Interface]\nPrivateKey = k\nAddress = 10.0.0.1\n[Wat]\n",
                "line 4: unknown section [Wat]",
            ),
            (
                "[Interface]\nPrivateKey = k\nAddress = 10.0.0.1\nListenPort = 70000\n",
                "line 4: ListenPort \"70000\" is not a port",
            ),
            (
                "[Interface]\n[Interface]\n",
                "line 2: a second [Interface] section",
            ),
            ("", "line 1: no [Interface] section"),
        ];
        for (text, want) in cases {
            let e = convert(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_second_address_of_a_family_is_dropped_with_a_finding() {
        let out =
            convert("[Interface]\nPrivateKey = k\nAddress = 10.0.0.1/24\nAddress = 10.0.0.9/24\n")
                .unwrap();
        assert!(out.toml.contains("address = [\"10.0.0.1\"]"));
        assert_eq!(out.findings.len(), 1);
        assert!(out.findings[0].contains("10.0.0.9/24 dropped"));
    }
}
