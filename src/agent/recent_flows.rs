//! The flows this agent saw recently, for `/flows` and `/hints` ([`crate::http`]).
//!
//! The drop log hands [`RecentFlows`] every line it writes, of every action; a
//! [`flows::Window`] keeps at most a fixed number of distinct flows, the least recently seen
//! making room (counted in `kube_nftpol_flow_window_evicted_flows_total`, by action, beside the
//! gauge `kube_nftpol_flow_window_flows`). `/flows` serves the window's lines as they are; a
//! `/hints` report runs [`hints::suggest`] on its denied (and audited) flows against the agent's
//! current snapshot, so flows that a policy allows by now drop out, and selectors are checked
//! against the cluster.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;

use crate::flow_line::{Action, FlowLine};
use crate::flows::{NodeFlows, Window};
use crate::hints::{self, FlowToAllow, Options, Suggestions};
use crate::metrics::LabelValue;
use crate::source::manifests::Loaded;

/// Distinct flows an agent keeps by default (about 2.5 KiB each with labelled pods at both
/// ends: about 10 MiB when full).
pub const MAX_FLOWS: usize = 4096;

/// The labels of the window's metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabels {
    /// `allow`, `deny`, `audit` or `revoke`.
    action: LabelValue<Action>,
}

/// The agent's recent flows, and where its current snapshot is.
#[derive(Debug)]
pub struct RecentFlows {
    node: String,
    window: Mutex<Window>,
    snapshots: OnceLock<watch::Receiver<Option<Arc<Loaded>>>>,
    evicted: Family<ActionLabels, Counter>,
    kept: Family<ActionLabels, Gauge>,
}

impl RecentFlows {
    /// Keeps at most `capacity` flows of the pods of `node`, and registers the window's
    /// metrics (`kube_nftpol_flow_window_*`) in `registry`.
    pub fn register(node: &str, capacity: usize, registry: &mut Registry) -> Self {
        let evicted = Family::<ActionLabels, Counter>::default();
        let kept = Family::<ActionLabels, Gauge>::default();
        let sub = registry.sub_registry_with_prefix("flow_window");
        let help = "Distinct flows evicted from the agent's window of recent flows (/flows, \
                    /hints) to keep it bounded, by the evicted flow's action";
        sub.register("evicted_flows", help, evicted.clone());
        let help = "Distinct flows in the agent's window of recent flows, by action";
        sub.register("flows", help, kept.clone());
        for action in Action::ALL {
            // Every series from the start, at zero.
            let labels = ActionLabels {
                action: LabelValue(action),
            };
            drop(evicted.get_or_create(&labels));
            drop(kept.get_or_create(&labels));
        }
        Self {
            node: node.to_owned(),
            window: Mutex::new(Window::new(capacity)),
            snapshots: OnceLock::new(),
            evicted,
            kept,
        }
    }

    /// Adds a line the drop log wrote (a flow's first packet, or a summary of its repeats).
    pub fn record(&self, line: &FlowLine) {
        // A panic elsewhere while holding the lock leaves the window consistent (every update
        // completes before anything can panic), so a poisoned lock is still usable.
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let evicted = window.record(line.clone());
        if let Some(action) = evicted {
            self.evicted
                .get_or_create(&ActionLabels {
                    action: LabelValue(action),
                })
                .inc();
        }
        for action in [Some(line.action), evicted].into_iter().flatten() {
            let kept = i64::try_from(window.kept(action)).unwrap_or(i64::MAX);
            self.kept
                .get_or_create(&ActionLabels {
                    action: LabelValue(action),
                })
                .set(kept);
        }
    }

    /// Checks suggestions against the snapshots on `snapshots` (the agent's source). Only the
    /// first call counts.
    pub fn follow(&self, snapshots: watch::Receiver<Option<Arc<Loaded>>>) {
        // Set once at startup; a second source would be a bug, and the first one stays.
        let _ = self.snapshots.set(snapshots);
    }

    /// What `/flows` serves: the flows kept of the pods of `namespace` (all when `None`).
    pub fn flows(&self, namespace: Option<&str>) -> NodeFlows {
        let window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        NodeFlows {
            node: self.node.clone(),
            capacity: window.capacity(),
            kept: window.len(),
            evicted: window.evicted(),
            flows: window
                .flows()
                .filter(|line| namespace.is_none_or(|ns| line.pod.namespace == ns))
                .cloned()
                .collect(),
        }
    }

    /// The suggestions for the denied and audited flows kept now, and how full the window is.
    pub fn report(&self, namespace: Option<&str>) -> Report {
        let (denied, occupancy) = {
            let window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            let denied: Vec<FlowToAllow> = window
                .flows()
                .filter(|line| line.action.is_denied())
                .map(FlowToAllow::from_line)
                .collect();
            let occupancy = Occupancy {
                kept: window.len(),
                capacity: window.capacity(),
                evicted: window.evicted(),
                denied: denied.len(),
            };
            (denied, occupancy)
        };
        let loaded = self.snapshots.get().and_then(|rx| rx.borrow().clone());
        let options = Options {
            snapshot: loaded.as_deref().map(|l| &l.snapshot),
            namespace,
            observed: None,
        };
        Report {
            recent_flows: occupancy,
            suggestions: hints::suggest(&denied, &options),
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

/// How full the agent's window of recent flows (of every action) is.
#[derive(Debug, Serialize)]
pub struct Occupancy {
    /// Distinct flows kept.
    pub kept: usize,
    /// The most it keeps.
    pub capacity: usize,
    /// Flows evicted to make room since the agent started.
    pub evicted: u64,
    /// The denied and audited flows among those kept, what `/hints` suggests from (left out of
    /// the JSON, whose `kept` counts the window as `/flows` does).
    #[serde(skip)]
    pub denied: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_line::{AllowedBy, Peer, PodInfo};
    use crate::model::{Direction, IpProtocol};

    fn line(namespace: &str, port: u16, action: Action) -> FlowLine {
        FlowLine {
            ts: "2026-01-01T00:00:01.000Z".to_owned(),
            action,
            direction: Direction::Egress,
            pod: PodInfo {
                namespace: namespace.to_owned(),
                name: "web".to_owned(),
                labels: [("app".to_owned(), "web".to_owned())].into(),
                owner: None,
                unknown: false,
            },
            peer: Peer::External {
                ip: "203.0.113.9".parse().unwrap(),
            },
            protocol: IpProtocol::Tcp,
            port: Some(port),
            source_port: Some(40000),
            source: None,
            destination: None,
            policies: Vec::new(),
            allowed_by: (action == Action::Allow).then(|| AllowedBy {
                policy: format!("{namespace}/allow"),
                rule: 0,
            }),
            tier: None,
            cluster_policy: None,
            count: 1,
            first_ts: None,
            last_ts: None,
        }
    }

    #[test]
    fn flows_of_every_action_are_kept_and_filtered_by_the_pods_namespace() {
        let mut registry = Registry::default();
        let recent = RecentFlows::register("node-1", 10, &mut registry);
        recent.record(&line("shop", 80, Action::Allow));
        recent.record(&line("shop", 81, Action::Deny));
        recent.record(&line("ops", 82, Action::Audit));
        let all = recent.flows(None);
        assert_eq!(
            (all.node.as_str(), all.kept, all.capacity),
            ("node-1", 3, 10)
        );
        assert_eq!(all.flows.len(), 3);
        let shop = recent.flows(Some("shop"));
        assert_eq!(shop.kept, 3, "kept counts the whole window");
        let ports: Vec<_> = shop.flows.iter().map(|f| f.port).collect();
        assert_eq!(ports, [Some(80), Some(81)]);
        // /hints sees the denied and audited flows only.
        let report = recent.report(None);
        assert_eq!(report.suggestions.denied_flows, 2);
        assert_eq!(
            (report.recent_flows.kept, report.recent_flows.denied),
            (3, 2)
        );
    }

    #[test]
    fn evictions_and_kept_flows_are_counted_by_action() {
        let mut registry = crate::metrics::registry();
        let recent = RecentFlows::register("node-1", 2, &mut registry);
        recent.record(&line("shop", 1, Action::Deny));
        recent.record(&line("shop", 2, Action::Allow));
        recent.record(&line("shop", 3, Action::Allow));
        let text = crate::metrics::encode(&registry);
        for expected in [
            "kube_nftpol_flow_window_evicted_flows_total{action=\"deny\"} 1\n",
            "kube_nftpol_flow_window_evicted_flows_total{action=\"allow\"} 0\n",
            "kube_nftpol_flow_window_evicted_flows_total{action=\"audit\"} 0\n",
            "kube_nftpol_flow_window_flows{action=\"allow\"} 2\n",
            "kube_nftpol_flow_window_flows{action=\"deny\"} 0\n",
            "kube_nftpol_flow_window_flows{action=\"audit\"} 0\n",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }
}
