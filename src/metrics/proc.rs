//! The process manager at scrape time: running now, and lifetime starts, exits by reason and
//! spawn failures ([`crate::proc::counters::ProcCounters`]).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::{counter, counters, gauge};
use crate::proc::Manager;

pub(super) struct ProcCollector {
    manager: Manager,
}

impl ProcCollector {
    pub(super) fn new(manager: Manager) -> Self {
        ProcCollector { manager }
    }
}

impl std::fmt::Debug for ProcCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcCollector").finish_non_exhaustive()
    }
}

impl Collector for ProcCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let stats = self.manager.counters().snapshot();
        let e = &mut enc;
        gauge(
            e,
            "wgagent_processes_running",
            "Processes started through the API that are still running",
            self.manager.running_count() as f64,
        )?;
        counter(
            e,
            "wgagent_processes_started",
            "Processes started through the API",
            stats.started,
        )?;
        counters(
            e,
            "wgagent_processes_exited",
            "Processes that ended, by reason: exited (on their own), signaled, timed_out, \
             agent_shutdown",
            stats
                .exited
                .iter()
                .map(|(reason, n)| (vec![("reason", (*reason).to_owned())], *n)),
        )?;
        counter(
            e,
            "wgagent_process_spawn_failures",
            "Starts that failed because the command could not be spawned",
            stats.spawn_failures,
        )?;
        Ok(())
    }
}
