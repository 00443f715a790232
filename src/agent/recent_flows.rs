//! The denied flows this agent saw recently, for `/hints` ([`crate::http`]).
//!
//! The drop log hands [`RecentFlows`] every line it writes; it keeps at most a fixed number of
//! distinct flows (the least recently seen make room, counted in
//! `kube_nftpol_hints_evicted_flows_total`). A report runs [`hints::suggest`] on them against
//! the agent's current snapshot, so flows that a policy allows by now drop out, and selectors
//! are checked against the cluster.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;

use crate::flow_line::FlowLine;
use crate::hints::{self, Aggregate, FlowToAllow, Options, Suggestions};
use crate::source::manifests::Loaded;

/// Distinct denied flows an agent keeps for `/hints` (a few hundred bytes each).
pub const MAX_FLOWS: usize = 4096;

/// The agent's recent denied flows, and where its current snapshot is.
#[derive(Debug)]
pub struct RecentFlows {
    flows: Mutex<Aggregate>,
    snapshots: OnceLock<watch::Receiver<Option<Arc<Loaded>>>>,
    evicted: Counter,
}

impl RecentFlows {
    /// Keeps at most `capacity` flows and counts evictions in
    /// `kube_nftpol_hints_evicted_flows_total`, registered in `registry`.
    pub fn register(capacity: usize, registry: &mut Registry) -> Self {
        let evicted = Counter::default();
        let help = "Distinct denied flows evicted from the /hints aggregate to keep it bounded";
        let sub = registry.sub_registry_with_prefix("hints");
        sub.register("evicted_flows", help, evicted.clone());
        Self {
            flows: Mutex::new(Aggregate::new(capacity)),
            snapshots: OnceLock::new(),
            evicted,
        }
    }

    /// Adds the flow of a line the drop log wrote, when it was denied (or audited).
    pub fn record(&self, record: &FlowLine) {
        if !record.action.is_denied() {
            return;
        }
        let flow = FlowToAllow::from_line(record);
        // A panic elsewhere while holding the lock leaves the aggregate consistent (every
        // update completes before anything can panic), so a poisoned lock is still usable.
        let evicted = self
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(flow);
        self.evicted.inc_by(evicted);
    }

    /// Checks suggestions against the snapshots on `snapshots` (the agent's source). Only the
    /// first call counts.
    pub fn follow(&self, snapshots: watch::Receiver<Option<Arc<Loaded>>>) {
        // Set once at startup; a second source would be a bug, and the first one stays.
        let _ = self.snapshots.set(snapshots);
    }

    /// The suggestions for the flows kept now, and how many flows were kept and evicted.
    pub fn report(&self, namespace: Option<&str>) -> Report {
        let flows = self
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let loaded = self.snapshots.get().and_then(|rx| rx.borrow().clone());
        let options = Options {
            snapshot: loaded.as_deref().map(|l| &l.snapshot),
            namespace,
            observed: None,
        };
        Report {
            recent_flows: Occupancy {
                kept: flows.len(),
                capacity: flows.capacity(),
                evicted: flows.evicted(),
            },
            suggestions: hints::suggest(flows.flows(), &options),
        }
    }
}

/// What `/hints` serves as JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    /// How full the agent's window of flows is.
    pub recent_flows: Occupancy,
    /// The suggestions, their counts and issues.
    #[serde(flatten)]
    pub suggestions: Suggestions,
}

/// How full the agent's window of denied flows is.
#[derive(Debug, Serialize)]
pub struct Occupancy {
    /// Distinct flows kept.
    pub kept: usize,
    /// The most it keeps.
    pub capacity: usize,
    /// Flows evicted to make room since the agent started.
    pub evicted: u64,
}
