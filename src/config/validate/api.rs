//! `[api]`: defaults, and the checks between keys (`max_tracked` against `max_running`,
//! `default_limits` against `max_limits`, no repeated `allowed_sources`).

use std::collections::HashMap;

use ip_network::IpNetwork;

use super::Cx;
use crate::config::raw::RawApi;
use crate::config::{Api, ConfigError};

impl Cx<'_> {
    pub(super) fn api(&mut self, raw: RawApi) -> Result<Api, ConfigError> {
        let d = Api::default();
        let allowed_sources = match raw.allowed_sources {
            None => None,
            Some(list) => {
                let key = "api.allowed_sources";
                let list = self.distinct(key, list.0.into_iter().map(|c| c.0).collect())?;
                if list.is_empty() {
                    return Err(self.invalid(
                        key,
                        "an empty list would refuse every caller; remove the key to allow all peers",
                    ));
                }
                Some(list)
            }
        };
        let default_workdir = raw.default_workdir.map(|p| p.0);
        if let Some(dir) = &default_workdir
            && !dir.is_dir()
        {
            self.warnings.push(format!(
                "{}: api.default_workdir {} is not a directory (yet); starts without a \
                 workdir will fail until it exists",
                self.file.display(),
                dir.display()
            ));
        }
        let default_limits = raw.default_limits.map(|l| l.0).unwrap_or_default();
        let max_limits = raw.max_limits.map(|l| l.0).unwrap_or_default();
        for (limit, value) in default_limits.iter() {
            if let Some(max) = max_limits.get(limit).filter(|max| value > *max) {
                return Err(self.invalid(
                    &format!("api.default_limits.{limit}"),
                    format!("{value} is above api.max_limits.{limit} ({max})"),
                ));
            }
        }
        let max_running = raw.max_running.map_or(d.max_running, |v| v.0);
        let max_tracked = raw.max_tracked.map_or(d.max_tracked, |v| v.0);
        if max_tracked < max_running {
            return Err(self.invalid(
                "api.max_tracked",
                format!("{max_tracked} is below api.max_running ({max_running}); running processes are tracked too"),
            ));
        }
        Ok(Api {
            port: raw.port.map_or(d.port, |v| v.0),
            allowed_sources,
            max_running,
            max_tracked,
            default_workdir,
            nice_increment: raw.nice_increment.map_or(d.nice_increment, |v| v.0),
            oom_score_adj: raw.oom_score_adj.map_or(d.oom_score_adj, |v| v.0),
            kill_grace: raw.kill_grace.map_or(d.kill_grace, |v| v.0),
            shutdown_grace: raw.shutdown_grace.map_or(d.shutdown_grace, |v| v.0),
            tree_tracking: raw.tree_tracking.map_or(d.tree_tracking, |v| v.0),
            state_dir: raw.state_dir.map(|p| p.0),
            log_max_bytes: raw.log_max_bytes.map_or(d.log_max_bytes, |v| v.0),
            state_max_bytes: raw.state_max_bytes.map_or(d.state_max_bytes, |v| v.0),
            header_timeout: raw.header_timeout.map_or(d.header_timeout, |v| v.0),
            body_timeout: raw.body_timeout.map_or(d.body_timeout, |v| v.0),
            body_min_rate: raw.body_min_rate.map_or(d.body_min_rate, |v| v.0),
            idle_timeout: raw.idle_timeout.map_or(d.idle_timeout, |v| v.0),
            send_timeout: raw.send_timeout.map_or(d.send_timeout, |v| v.0),
            default_limits,
            max_limits,
            cgroups: raw.cgroups.map_or(d.cgroups, |v| v.0),
            isolation: raw.isolation.map_or(d.isolation, |v| v.0),
        })
    }

    /// `nets` without repeats: a repeat is an error at its index naming the first one.
    pub(super) fn distinct(
        &self,
        key: &str,
        nets: Vec<IpNetwork>,
    ) -> Result<Vec<IpNetwork>, ConfigError> {
        let mut first: HashMap<IpNetwork, usize> = HashMap::with_capacity(nets.len());
        for (i, net) in nets.iter().enumerate() {
            if let Some(j) = first.insert(*net, i) {
                return Err(self.invalid(
                    &format!("{key}[{i}]"),
                    format!("{net} is already listed at {key}[{j}]"),
                ));
            }
        }
        Ok(nets)
    }
}
