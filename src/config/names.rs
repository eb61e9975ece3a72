//! Syntax of the names and addresses a config holds: networks, peer and interface names,
//! endpoint host names. Pure functions returning one sentence on error; the leaf types and
//! `validate` attach the key path.

use std::net::{IpAddr, Ipv6Addr};

use ip_network::{IpNetwork, IpNetworkError};

/// `"10.0.0.0/8"`, or a bare address meaning /32 or /128. Host bits set is an error (with the
/// network it probably meant), since a silently truncated entry routes more than intended.
pub(super) fn parse_cidr(text: &str) -> Result<IpNetwork, String> {
    let t = text.trim();
    let (addr, prefix) = match t.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (t, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("invalid CIDR {t:?}: {addr:?} is not an IP address"))?;
    let Some(prefix) = prefix else {
        return Ok(IpNetwork::from(ip));
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = prefix
        .parse()
        .ok()
        .filter(|len| *len <= max)
        .ok_or_else(|| {
            format!("invalid CIDR {t:?}: prefix length {prefix:?} is not in 0..={max}")
        })?;
    IpNetwork::new(ip, len).map_err(|e| match e {
        IpNetworkError::HostBitsSet => match IpNetwork::new_truncate(ip, len) {
            Ok(net) => format!("invalid CIDR {t:?}: host bits are set; did you mean \"{net}\"?"),
            Err(e) => format!("invalid CIDR {t:?}: {e}"),
        },
        IpNetworkError::NetmaskError(_) => format!("invalid CIDR {t:?}: {e}"),
    })
}

/// Peer names are used on the command line instead of addresses, so they must be simple and
/// must not look like an address.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name.len() > 64 || !ok_chars {
        return Err(format!(
            "{name:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.'"
        ));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!("{name:?} looks like an address; names must not"));
    }
    Ok(())
}

/// What wg-quick accepts as an interface name (`[a-zA-Z0-9_=+.-]{1,15}`): `wg` finds the node
/// by it, and the kernel's limit is 15 bytes.
pub(super) fn check_interface_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '=' | '+' | '.' | '-'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use 1 to 15 characters of A-Z, a-z, 0-9, '_', '=', '+', '.', '-'"
        ))
    }
}

/// An `endpoint` split into its parts (nothing resolved yet).
pub(super) enum EndpointSpec {
    /// An IP address: used as is.
    Address(IpAddr, u16),
    /// A syntactically valid host name, for the resolver.
    Host(String, u16),
}

/// `host:port` or `[v6]:port` → its parts; `who` names the peer in the sentence.
pub(super) fn split_endpoint(text: &str, who: &str) -> Result<EndpointSpec, String> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("{text:?} for {who}: expected \"[IPv6]:port\""))?;
        let ip: Ipv6Addr = host
            .parse()
            .map_err(|_| format!("{text:?} for {who}: {host:?} is not an IPv6 address"))?;
        (IpAddr::V6(ip).to_string(), port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} for {who}: expected \"host:port\""))?;
        if host.contains(':') {
            return Err(format!(
                "{text:?} for {who}: IPv6 endpoints need brackets, e.g. \"[fd00::1]:51820\""
            ));
        }
        (host.to_owned(), port)
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("{text:?} for {who}: port {port:?} is not in 1..=65535"))?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(EndpointSpec::Address(ip, port));
    }
    check_host_name(&host).map_err(|problem| format!("{text:?} for {who}: {problem}"))?;
    Ok(EndpointSpec::Host(host, port))
}

/// RFC 1123 host name syntax, checked before asking the resolver.
fn check_host_name(host: &str) -> Result<(), String> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!("{host:?} is not a valid host name"));
    }
    Ok(())
}
