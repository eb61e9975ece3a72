//! Endpoint host names that did not resolve when the configuration was read
//! ([`Config::pending_endpoints`]) are retried in the background, as `wg` does, so a node that
//! starts before its peers' DNS names exist (a Kubernetes Service created after the pod, a VPN
//! that comes up later) runs instead of exiting.
//!
//! One task per pending name, with capped exponential backoff ([`FIRST_RETRY`] doubling up to
//! [`MAX_RETRY`]). A task ends when the name resolves (the peer's endpoint is then set, unless it
//! has meanwhile got one, by dialling in or through the UAPI), when the peer is gone, or when
//! its token is cancelled (shutdown, or a reload that brings its own list).
//!
//! [`Config::pending_endpoints`]: crate::config::Config::pending_endpoints

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Node;
use crate::config::PendingEndpoint;
use crate::wg::{DeviceUpdate, PeerUpdate};

/// First retry after a failed lookup.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between lookups.
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// Bound of one lookup (the system resolver can hang for its own timeouts and retries).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Retries every name in `pending` until it resolves, its peer is gone or `cancel` fires.
pub fn resolve_later(
    node: &Node,
    pending: &[PendingEndpoint],
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) {
    for p in pending {
        let (node, p, cancel) = (node.clone(), p.clone(), cancel.clone());
        tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = retry(&node, &p) => {}
            }
        });
    }
}

async fn retry(node: &Node, p: &PendingEndpoint) {
    let mut wait = FIRST_RETRY;
    loop {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RETRY);
        match node.peers().iter().find(|s| s.public_key == p.public_key) {
            None => return,
            Some(peer) if peer.endpoint.is_some() => {
                tracing::debug!(peer = %p.label, "peer has an endpoint now; no longer resolving {}", p.host);
                return;
            }
            Some(_) => {}
        }
        let lookup = tokio::net::lookup_host((p.host.as_str(), p.port));
        let addr = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(mut addrs)) => addrs.next(),
            Ok(Err(e)) => {
                tracing::debug!(peer = %p.label, host = %p.host, "still cannot resolve: {e}; next try in {wait:?}");
                continue;
            }
            Err(_) => {
                tracing::debug!(peer = %p.label, host = %p.host, "lookup timed out; next try in {wait:?}");
                continue;
            }
        };
        let Some(addr) = addr else { continue };
        let update = DeviceUpdate {
            peers: vec![PeerUpdate {
                public_key: p.public_key,
                remove: false,
                update_only: true,
                name: None,
                preshared_key: None,
                endpoint: Some(addr),
                persistent_keepalive: None,
                allowed_ips: Vec::new(),
            }],
            ..DeviceUpdate::default()
        };
        match node.update(update).await {
            Ok(_) => {
                tracing::info!(peer = %p.label, host = %p.host, endpoint = %addr, "endpoint resolved");
            }
            Err(e) => tracing::warn!(peer = %p.label, "setting the resolved endpoint {addr}: {e}"),
        }
        return;
    }
}
