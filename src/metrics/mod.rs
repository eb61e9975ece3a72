//! Prometheus metrics (`prometheus-client`): one [`Metrics`] per node role, rendered as the
//! Prometheus text format 0.0.4 or OpenMetrics 1.0 (by the scraper's `Accept`).
//!
//! Owns: the metric names and help texts, reading the node's, the process manager's and the
//! API's counters at scrape time, the API's request counters and latency histograms, and the
//! opt-in host listener ([`listen`]) that serves only `/metrics`.
//! Leaves to the API: the tunnel route `GET /metrics` (`api::metrics`), and who may read it.
//!
//! Nothing is copied on the data path for metrics: node and manager counters are the relaxed
//! atomics they already keep, read by a [`Collector`] when Prometheus scrapes. Only the API
//! layer adds work per request (one counter and one histogram observation). Label values are
//! bounded: peers (a configured set), routes (the router's patterns, `unmatched` for the
//! rest), methods (`other` beyond the standard ones), statuses, and fixed reason names.
//!
//! Names follow the Prometheus conventions: `wgagent_` prefix, the unit in the name (`_bytes`,
//! `_seconds`), counters end in `_total` (added by the encoder), per-peer families carry a
//! `peer` label (the peer's name, else its base64 public key).

pub mod api;
pub mod listen;
mod node;
mod proc;
mod serve;

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::EncodeMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use api::ApiMetrics;

/// `Content-Type` of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything one node exports.
pub struct Metrics {
    registry: Registry,
    /// Recorded by the API's middleware (a cheap handle; clones share the families).
    pub api: ApiMetrics,
    /// The counters of the host listener ([`listen`]), once it serves: its families are
    /// exported only then (a node without `[metrics] listen` has no such listener).
    host_listener: Arc<OnceLock<Arc<crate::api::serve::ServeCounters>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Build information only; add the node, the processes and the API with
    /// [`Metrics::with_node`], [`Metrics::with_processes`] and [`Metrics::with_api`].
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register(
            "wgagent_build",
            "wgagent version of this node",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let host_listener = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(listen::ListenerCollector::new(
            host_listener.clone(),
        )));
        Metrics {
            registry,
            api: ApiMetrics::default(),
            host_listener,
        }
    }

    /// The API's request counters and latency histograms ([`Metrics::api`]).
    pub fn with_api(mut self) -> Self {
        self.api.register(&mut self.registry);
        self
    }

    /// WireGuard per peer and for the device, the UDP socket and the netstack of `node`.
    pub fn with_node(mut self, node: &crate::node::Node) -> Self {
        self.registry
            .register_collector(Box::new(node::NodeCollector::new(node.clone())));
        self
    }

    /// The API server's connection counters (`api::serve`): connections, timeouts, malformed
    /// requests.
    pub fn with_server(
        mut self,
        counters: std::sync::Arc<crate::api::serve::ServeCounters>,
    ) -> Self {
        self.registry
            .register_collector(Box::new(serve::ServeCollector::new(counters)));
        self
    }

    /// Processes running, started, exited by reason, spawn failures of `manager`.
    pub fn with_processes(mut self, manager: &crate::proc::Manager) -> Self {
        self.registry
            .register_collector(Box::new(proc::ProcCollector::new(manager.clone())));
        self
    }

    /// The exposition, in OpenMetrics text (`openmetrics`) or the Prometheus text format.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let done = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        // Writing into a String cannot fail; an encoder error would be a bug in a collector.
        if let Err(e) = done {
            tracing::error!("encoding metrics: {e}");
        }
        out
    }

    /// True if an `Accept` header prefers OpenMetrics (as Prometheus sends it).
    pub fn wants_openmetrics(accept: Option<&str>) -> bool {
        accept.is_some_and(|a| a.contains("application/openmetrics-text"))
    }
}

/// Labels of one sample: (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

/// One counter family with its samples.
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    let counter = ConstCounter::new(0u64);
    let mut family = enc.encode_descriptor(name, help, None, counter.metric_type())?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One counter without labels.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let counter = ConstCounter::new(value);
    counter.encode(enc.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// One gauge family with its samples.
fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, f64)>,
) -> std::fmt::Result {
    let gauge = ConstGauge::new(0.0f64);
    let mut family = enc.encode_descriptor(name, help, None, gauge.metric_type())?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One gauge without labels.
fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> std::fmt::Result {
    let gauge = ConstGauge::new(value);
    gauge.encode(enc.encode_descriptor(name, help, None, gauge.metric_type())?)
}
