//! The API server's connection counters (`api::serve::ServeCounters`) at scrape time.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::{counter, counters};
use crate::api::serve::ServeCounters;

pub(super) struct ServeCollector {
    counters: Arc<ServeCounters>,
}

impl ServeCollector {
    pub(super) fn new(counters: Arc<ServeCounters>) -> Self {
        ServeCollector { counters }
    }
}

impl std::fmt::Debug for ServeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeCollector").finish_non_exhaustive()
    }
}

impl Collector for ServeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = self.counters.snapshot();
        let e = &mut enc;
        counter(
            e,
            "wgagent_api_connections",
            "Tunnel TCP connections the API server accepted",
            s.connections,
        )?;
        counters(
            e,
            "wgagent_api_closed_connections",
            "API connections the server ended itself, by reason: header_timeout (no complete \
             request head in time), send_timeout (the client did not read), idle (keep-alive \
             idle_timeout)",
            [
                ("header_timeout", s.header_timeouts),
                ("send_timeout", s.send_timeouts),
                ("idle", s.idle_closes),
            ]
            .map(|(r, v)| (vec![("reason", r.to_owned())], v)),
        )?;
        counter(
            e,
            "wgagent_api_body_timeouts",
            "Requests whose body paused too long or arrived too slowly (answered 408)",
            s.body_timeouts,
        )?;
        counter(
            e,
            "wgagent_api_malformed_requests",
            "Request heads that could not be parsed (answered 400, 414 or 431)",
            s.malformed_requests,
        )?;
        Ok(())
    }
}
