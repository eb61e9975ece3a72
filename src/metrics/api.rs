//! The API's request counters and latency histograms, recorded by the API's middleware
//! (`api::metrics::track`) for every request, including refused and unknown ones.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

type Histograms = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Request counts and latencies by route; clones share the families.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Histograms,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

/// 0.25 ms to ~8 s, doubling: a health check through the tunnel is well under a millisecond,
/// a waiting `output` call up to the wait's limit (longer ones land in +Inf).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The method's name if it is a standard one, else `other` (label values stay bounded).
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl ApiMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "wgagent_api_requests",
            "API requests by route (the router's pattern, `unmatched` for unknown paths), \
             method and status",
            self.requests.clone(),
        );
        registry.register(
            "wgagent_api_request_duration_seconds",
            "Time from a request's arrival to its response head, by route and method (a \
             streamed body may flow longer)",
            self.latency.clone(),
        );
    }

    /// Counts one request. `route`: the matched route pattern, `None` for no route.
    pub fn record(
        &self,
        route: Option<&str>,
        method: &http::Method,
        status: u16,
        elapsed: Duration,
    ) {
        let route = route.unwrap_or("unmatched").to_owned();
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route, method })
            .observe(elapsed.as_secs_f64());
    }
}
