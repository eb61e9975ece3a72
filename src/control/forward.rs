//! The daemon's HTTP service: `/agents/{agent}/...` forwarded to that agent through the tunnel,
//! `GET /v0/agents/{agent}`, `GET /v0/status`, JSON errors for everything else.
//!
//! Owns: parsing the agent out of the path, one bounded pool of keep-alive tunnel connections
//! per agent (the SDK's, at most [`MAX_POOLED_AGENTS`] agents' pools at once, least recently
//! used dropped first), streaming request and response bodies both ways without buffering them,
//! copying every end-to-end header (hop-by-hop ones are the connection's own), and turning
//! failures to reach an agent into 502/504 JSON marked with [`DAEMON_ERROR_HEADER`].
//! Leaves to the agent: every status and error of the API itself, which pass through unchanged.
//! Leaves to the caller: bounding the whole exchange (a follow-mode log read lasts as long as the
//! process); a dead agent is detected by the tunnel TCP keep-alive and idle timeout.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use super::socket::ResBody;
use super::target::{Agents, ResolveError, Target};
use super::types::{AgentInfo, NodeCounters, PeerStatus, RequestCounters, Status};
use crate::client::{AgentConn, AgentOptions, BoxError, ClientError, DAEMON_ERROR_HEADER};
use crate::keys;
use crate::node::{Node, NodeConnector};
use crate::wg::PeerStats;

/// Agents whose connection pools are kept at once. With `MAX_IDLE_PER_AGENT` this bounds the
/// idle tunnel connections (and their netstack sockets) to 512, leaving room below the
/// netstack's 1024 sockets for the connections in use.
pub const MAX_POOLED_AGENTS: usize = 128;
/// Idle keep-alive connections kept per agent.
pub const MAX_IDLE_PER_AGENT: usize = 4;

/// Everything a request handler needs; shared by all connections.
pub(crate) struct Shared {
    pub(crate) node: Arc<Node>,
    pub(crate) agents: RwLock<Agents>,
    pub(crate) opts: AgentOptions,
    pub(crate) socket: String,
    pub(crate) started: Instant,
    pub(crate) counters: Arc<Counters>,
    pools: Mutex<Pools>,
    /// Public keys of peers with an endpoint (configured or learned) at the last snapshot:
    /// requests to them skip the O(peers) stats snapshot. Bounded by the number of peers.
    reached: Mutex<HashSet<[u8; 32]>>,
}

impl Shared {
    pub(crate) fn new(
        node: Arc<Node>,
        agents: Agents,
        opts: AgentOptions,
        socket: String,
        max_connections: usize,
    ) -> Self {
        let counters = Arc::new(Counters {
            max: max_connections as u64,
            ..Counters::default()
        });
        Self {
            node,
            agents: RwLock::new(agents),
            opts,
            socket,
            started: Instant::now(),
            counters,
            pools: Mutex::new(Pools::default()),
            reached: Mutex::new(HashSet::new()),
        }
    }

    /// Replaces the agents (after a reload); pools of agents that remain are kept.
    pub(crate) fn set_agents(&self, agents: Agents) {
        *self.agents.write() = agents;
        self.reached.lock().clear();
    }
}

/// Counters of the socket side, read by `/v0/status`.
#[derive(Default)]
pub(crate) struct Counters {
    open: AtomicU64,
    max: u64,
    total: AtomicU64,
    requests: AtomicU64,
    forwarded: AtomicU64,
    unknown_agent: AtomicU64,
    unreachable: AtomicU64,
    broken: AtomicU64,
}

impl Counters {
    pub(crate) fn connection_opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One pool per agent API address, least recently used dropped beyond the cap (dropping an
/// `AgentConn` closes its idle connections; requests in flight keep theirs until they end).
#[derive(Default)]
struct Pools {
    map: HashMap<SocketAddr, (AgentConn<NodeConnector>, u64)>,
    tick: u64,
}

impl Pools {
    fn get(
        &mut self,
        api: SocketAddr,
        make: impl FnOnce() -> AgentConn<NodeConnector>,
    ) -> AgentConn<NodeConnector> {
        self.tick += 1;
        let tick = self.tick;
        if let Some((conn, used)) = self.map.get_mut(&api) {
            *used = tick;
            return conn.clone();
        }
        if self.map.len() >= MAX_POOLED_AGENTS
            && let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
        {
            self.map.remove(&oldest);
        }
        let conn = make();
        self.map.insert(api, (conn.clone(), tick));
        conn
    }
}

/// Answers one request on the socket. `uid` is the local caller (from the socket's peer
/// credentials), for the log.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    uid: Option<u32>,
) -> Response<ResBody> {
    bump(&shared.counters.requests);
    let path = req.uri().path().to_owned();
    tracing::debug!(?uid, method = %req.method(), %path, "control request");
    if let Some(rest) = path.strip_prefix("/agents/") {
        let (agent, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let agent = percent_decode(agent);
        return forward(&shared, &agent, tail.to_owned(), req).await;
    }
    if let Some(agent) = path.strip_prefix("/v0/agents/") {
        if req.method() != Method::GET {
            return method_not_allowed("GET");
        }
        return match resolve(&shared, &percent_decode(agent)) {
            Ok(t) => json(StatusCode::OK, &agent_info(&shared, &t)),
            Err(resp) => *resp,
        };
    }
    if path == "/v0/status" {
        if req.method() != Method::GET {
            return method_not_allowed("GET");
        }
        return json(StatusCode::OK, &status(&shared));
    }
    error(
        StatusCode::NOT_FOUND,
        format!(
            "No route {path}: the control daemon serves /agents/{{agent}}/..., /v0/agents/{{agent}} and /v0/status."
        ),
        None,
    )
}

/// The agent, or the 404 answer naming it.
fn resolve(shared: &Shared, agent: &str) -> Result<Target, Box<Response<ResBody>>> {
    shared.agents.read().resolve(agent).map_err(|e| {
        bump(&shared.counters.unknown_agent);
        let message = match &e {
            ResolveError::Unknown { agent, .. } => format!("Unknown agent {agent:?}."),
            other => sentence(&other.to_string()),
        };
        Box::new(error(StatusCode::NOT_FOUND, message, Some(e.to_string())))
    })
}

async fn forward(
    shared: &Arc<Shared>,
    agent: &str,
    tail: String,
    req: Request<Incoming>,
) -> Response<ResBody> {
    let mut target = match resolve(shared, agent) {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    // Messages name the agent by its peer name when it has one (the SDK sends addresses).
    if let Some(name) = &target.name {
        target.label = name.clone();
    }
    // A stats snapshot costs O(peers): one refreshes the set of reached peers for all, and is
    // taken only when this peer is not in it yet.
    let key = *target.public_key.as_bytes();
    let never_reached = !shared.reached.lock().contains(&key) && {
        let stats = shared.node.stats().wg;
        let mut reached = shared.reached.lock();
        // Rebuilt, not extended: peers removed since are forgotten (bounded by the peers).
        *reached = stats
            .peers
            .iter()
            .filter(|p| p.endpoint.is_some())
            .map(|p| p.public_key.to_bytes())
            .collect();
        !reached.contains(&key)
    };
    if never_reached {
        bump(&shared.counters.unreachable);
        let port = shared.node.udp_addr().port();
        return unreachable(
            StatusCode::BAD_GATEWAY,
            format!(
                "agent {}: it has not reached this control daemon yet (no endpoint configured, no handshake). \
                 An agent behind NAT dials its control replicas: check that its config lists this replica \
                 (public key {}) with endpoint <this host>:{port} and persistent_keepalive, and that UDP port {port} is reachable.",
                target.label,
                keys::encode_public(&shared.node.public_key()),
            ),
        );
    }
    let conn = shared.pools.lock().get(target.api, || {
        AgentConn::new(shared.node.connector(), target.api, shared.opts)
    });

    let (parts, body) = req.into_parts();
    let pq = match parts.uri.query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail,
    };
    let mut out = Request::new(body.map_err(BoxError::from).boxed_unsync());
    *out.method_mut() = parts.method;
    *out.uri_mut() = match pq.parse() {
        Ok(u) => u,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid request path.".into(),
                Some(format!("{e}")),
            );
        }
    };
    *out.headers_mut() = end_to_end(parts.headers);
    out.headers_mut()
        .insert(header::VIA, HeaderValue::from_static("1.1 wgagent-control"));

    match conn.send(out).await {
        Ok(resp) => {
            bump(&shared.counters.forwarded);
            let (mut parts, body) = resp.into_parts();
            parts.headers = end_to_end(parts.headers);
            parts
                .headers
                .append(header::VIA, HeaderValue::from_static("1.1 wgagent-control"));
            Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
        }
        Err(ClientError::Unreachable { waited, source, .. }) => {
            bump(&shared.counters.unreachable);
            let timed_out = source.kind() == std::io::ErrorKind::TimedOut;
            let endpoint = peer_stats(shared, &target)
                .and_then(|p| p.endpoint)
                .map_or("no endpoint".to_owned(), |e| format!("endpoint {e}"));
            unreachable(
                if timed_out {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::BAD_GATEWAY
                },
                format!(
                    "agent {}: cannot connect to its API at {} within {waited:.0?} ({endpoint}): {source}",
                    target.label, target.api
                ),
            )
        }
        Err(e) => {
            bump(&shared.counters.broken);
            let mut resp = error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "agent {}: the tunnel connection failed during the request: {e}",
                    target.label
                ),
                None,
            );
            resp.headers_mut()
                .insert(DAEMON_ERROR_HEADER, HeaderValue::from_static("broken"));
            resp
        }
    }
}

/// Headers minus the hop-by-hop ones (RFC 9110 §7.6.1), including those `Connection` names.
fn end_to_end(mut headers: HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HOST,
    ] {
        headers.remove(name);
    }
    headers
}

fn agent_info(shared: &Shared, t: &Target) -> AgentInfo {
    let peer = peer_stats(shared, t);
    AgentInfo {
        name: t.name.clone(),
        public_key: t.key_text(),
        api: t.api,
        endpoint: peer.as_ref().and_then(|p| p.endpoint),
        latest_handshake_unix: peer.and_then(|p| p.last_handshake).map(unix),
    }
}

/// The counters of `t`'s peer, found by public key (full snapshot: O(peers)).
fn peer_stats(shared: &Shared, t: &Target) -> Option<PeerStats> {
    shared
        .node
        .stats()
        .wg
        .peers
        .into_iter()
        .find(|p| p.public_key == t.public_key)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn status(shared: &Shared) -> Status {
    let stats = shared.node.stats();
    let now = SystemTime::now();
    let agents = shared.agents.read();
    let peers = stats
        .wg
        .peers
        .iter()
        .map(|p| (p, agents.index_of(&p.public_key)))
        .map(|(p, i)| PeerStatus {
            name: p.name.clone(),
            public_key: keys::encode_public(&p.public_key),
            allowed_ips: i.map(|i| agents.allowed_ips(i)).unwrap_or_default(),
            api: i.and_then(|i| agents.api_of(i)),
            endpoint: p.endpoint,
            latest_handshake_unix: p.last_handshake.map(unix),
            handshake_age_seconds: p
                .last_handshake
                .and_then(|t| now.duration_since(t).ok())
                .map(|d| d.as_secs()),
            handshakes: p.handshakes,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            rx_packets: p.rx_packets,
            tx_packets: p.tx_packets,
            dropped: p.drop_no_endpoint
                + p.drop_allowed_ips
                + p.drop_decrypt
                + p.drop_replay
                + p.drop_malformed
                + p.drop_rate_limited
                + p.drop_no_session,
        })
        .collect();
    let c = &shared.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        public_key: keys::encode_public(&shared.node.public_key()),
        addresses: shared.node.addresses().to_vec(),
        listen_port: shared.node.udp_addr().port(),
        uptime_seconds: shared.started.elapsed().as_secs(),
        socket: shared.socket.clone(),
        peers,
        requests: RequestCounters {
            connections_open: get(&c.open),
            connections_max: c.max,
            connections_total: get(&c.total),
            requests: get(&c.requests),
            forwarded: get(&c.forwarded),
            unknown_agent: get(&c.unknown_agent),
            unreachable: get(&c.unreachable),
            broken: get(&c.broken),
            pooled_agents: shared.pools.lock().map.len() as u64,
        },
        node: NodeCounters {
            datagrams_in: stats.datagrams_in,
            datagrams_out: stats.datagrams_out,
            send_errors: stats.send_errors,
            unknown_peer: stats.wg.device.unknown_peer,
            rate_limited: stats.wg.device.rate_limited,
            sockets_refused: stats.netstack.sockets_refused,
        },
    }
}

/// Decodes `%XX` escapes (invalid ones are kept as written).
fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first letter in upper case (API messages are sentences).
fn sentence(text: &str) -> String {
    let mut c = text.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

#[derive(Serialize)]
struct ErrorBody {
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<ResBody> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: String, detail: Option<String>) -> Response<ResBody> {
    json(status, &ErrorBody { message, detail })
}

fn unreachable(status: StatusCode, message: String) -> Response<ResBody> {
    let mut resp = error(status, message, None);
    resp.headers_mut()
        .insert(DAEMON_ERROR_HEADER, HeaderValue::from_static("unreachable"));
    resp
}

fn method_not_allowed(allow: &'static str) -> Response<ResBody> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed.".into(),
        None,
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("dev"), "dev");
        assert_eq!(percent_decode("%5Bfd00%3A%3Aa%5D%3A4"), "[fd00::a]:4");
        assert_eq!(percent_decode("100.64.0.10%3A4"), "100.64.0.10:4");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(percent_decode("%é%C3%A9"), "%éé");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::HOST, HeaderValue::from_static("x"));
        h.insert(header::RANGE, HeaderValue::from_static("bytes=5-"));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"abc\""));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let out = end_to_end(h);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        for kept in ["range", "if-match", "content-type"] {
            assert!(out.contains_key(kept), "{kept}");
        }
    }
}
