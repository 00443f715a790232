//! What the agent owns and the HTTP endpoints read: the readiness latch, the metrics registry
//! (with every subsystem's metrics registered into it), the recent denied flows behind
//! `/hints`, and the flow counters a scrape refreshes.
//!
//! The agent changes it; everyone else gets read methods only ([`crate::http`] never writes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::registry::Registry;

use super::control::ControlMetrics;
use super::drop_log::DropLogMetrics;
use super::posture::PostureMetrics;
use super::recent_flows::{self, RecentFlows};
use crate::flowmetrics::{self, FlowCounters, SCRAPE_MIN_AGE};
use crate::{events, metrics, source};

/// The handles of every subsystem's metrics, registered in the agent's registry; the agent
/// hands each subsystem its own.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The source's.
    pub source: source::Metrics,
    /// The Event writer's.
    pub events: events::Metrics,
    /// The control loop's (applies, repairs, programming latency).
    pub control: ControlMetrics,
    /// The drop log's.
    pub drop_log: DropLogMetrics,
    /// The flow counters'.
    pub flows: flowmetrics::Metrics,
    /// The posture linter's.
    pub posture: PostureMetrics,
}

/// The agent's state shared with its endpoints.
#[derive(Debug)]
pub struct State {
    ready: AtomicBool,
    registry: Registry,
    metrics: Metrics,
    recent_flows: RecentFlows,
    flow_counters: OnceLock<Arc<FlowCounters>>,
}

impl State {
    /// Not ready; every metric registered at zero; no recent flows.
    pub fn new() -> Self {
        Self::with_recent_flows(recent_flows::MAX_FLOWS)
    }

    /// [`State::new`] keeping at most `capacity` recent denied flows.
    pub fn with_recent_flows(capacity: usize) -> Self {
        let mut registry = metrics::registry();
        let metrics = Metrics {
            control: ControlMetrics::register(&mut registry),
            source: source::Metrics::register(&mut registry),
            events: events::Metrics::register(&mut registry),
            drop_log: DropLogMetrics::register(&mut registry),
            flows: flowmetrics::Metrics::register(&mut registry),
            posture: PostureMetrics::register(&mut registry),
        };
        let recent_flows = RecentFlows::register(capacity, &mut registry);
        Self {
            ready: AtomicBool::new(false),
            registry,
            metrics,
            recent_flows,
            flow_counters: OnceLock::new(),
        }
    }

    /// Whether the first ruleset is verified in the kernel (the latch never goes back: a later
    /// failed apply leaves the previous ruleset enforcing).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Releases the readiness latch.
    pub(super) fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// The metrics handles, for the agent to hand out.
    pub(super) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The flow counters a scrape refreshes, once the agent has set them up.
    pub(super) fn set_flow_counters(&self, counters: Arc<FlowCounters>) {
        // Set once at startup; a second call would be a bug, and the first one stays.
        let _ = self.flow_counters.set(counters);
    }

    /// The recent denied flows (the drop log adds to them, `/hints` reads them).
    pub fn recent_flows(&self) -> &RecentFlows {
        &self.recent_flows
    }

    /// Every metric as OpenMetrics text, the flow counters read from the table first unless
    /// they are fresh; a read slower than `timeout` serves the last values.
    pub async fn encode_metrics(&self, timeout: Duration) -> String {
        if let Some(counters) = self.flow_counters.get() {
            let refresh = counters.refresh_if_older(SCRAPE_MIN_AGE);
            let _ = tokio::time::timeout(timeout, refresh).await;
        }
        metrics::encode(&self.registry)
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}
