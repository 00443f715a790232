//! What the agent owns and the HTTP endpoints read: the readiness latch, the metrics registry
//! (with every subsystem's metrics registered into it), the recent flows behind `/flows` and
//! `/hints`, who may read them, and the flow counters a scrape refreshes.
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
use super::revocation::RevocationMetrics;
use crate::access::{self, Access, Decision};
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
    /// The readers' (who may read flows).
    pub access: access::Metrics,
    /// The posture linter's.
    pub posture: PostureMetrics,
    /// The revocation pass's.
    pub revocation: RevocationMetrics,
}

/// The agent's state shared with its endpoints.
#[derive(Debug)]
pub struct State {
    ready: AtomicBool,
    registry: Registry,
    metrics: Metrics,
    recent_flows: RecentFlows,
    access: OnceLock<Access>,
    flow_counters: OnceLock<Arc<FlowCounters>>,
}

impl State {
    /// The state of the agent of `node`: not ready; every metric registered at zero; no recent
    /// flows (at most [`recent_flows::MAX_FLOWS`] kept); nobody may read them yet.
    pub fn new(node: &str) -> Self {
        Self::with_recent_flows(node, recent_flows::MAX_FLOWS)
    }

    /// [`State::new`] keeping at most `capacity` recent flows.
    pub fn with_recent_flows(node: &str, capacity: usize) -> Self {
        let mut registry = metrics::registry();
        let metrics = Metrics {
            control: ControlMetrics::register(&mut registry),
            source: source::Metrics::register(&mut registry),
            events: events::Metrics::register(&mut registry),
            drop_log: DropLogMetrics::register(&mut registry),
            flows: flowmetrics::Metrics::register(&mut registry),
            access: access::Metrics::register(&mut registry),
            posture: PostureMetrics::register(&mut registry),
            revocation: RevocationMetrics::register(&mut registry),
        };
        let recent_flows = RecentFlows::register(node, capacity, &mut registry);
        Self {
            ready: AtomicBool::new(false),
            registry,
            metrics,
            recent_flows,
            access: OnceLock::new(),
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

    /// The recent flows (the drop log adds to them, `/flows` and `/hints` read them).
    pub fn recent_flows(&self) -> &RecentFlows {
        &self.recent_flows
    }

    /// The readers' metrics, to build the [`Access`] with.
    pub fn access_metrics(&self) -> &access::Metrics {
        &self.metrics.access
    }

    /// Sets who may read the recent flows: the agent does, once it knows its source (tests
    /// that serve a state without an agent do too). Only the first call counts.
    pub fn set_access(&self, access: Access) {
        // Set once at startup; a second call would be a bug, and the first one stays.
        let _ = self.access.set(access);
    }

    /// Whether the bearer `token` may read the recent flows of `namespace` (every namespace's
    /// when `None`): unavailable (503) until the agent has set up its [`Access`].
    pub async fn check_reader(&self, token: Option<&str>, namespace: Option<&str>) -> Decision {
        match self.access.get() {
            Some(access) => access.check(token, namespace).await,
            None => Decision::Unavailable("the agent is starting".to_owned()),
        }
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
