//! The agent's Prometheus metrics: one registry with the `kube_nftpol` prefix, served as
//! OpenMetrics text at `/metrics` ([`crate::http`]). Each subsystem defines its metrics and
//! registers them itself (`Metrics::register`), and keeps the handles it updates:
//!
//! - `kube_nftpol_source_*` and `kube_nftpol_policies_invalid`, by [`crate::source::Metrics`];
//! - `kube_nftpol_source_events_total` and `..._event_errors_total`, by
//!   [`crate::events::Metrics`];
//! - `kube_nftpol_dataplane_*`, `kube_nftpol_ruleset_*` and
//!   `kube_nftpol_programming_latency_seconds`, by [`crate::agent::ControlMetrics`];
//! - `kube_nftpol_flowlog_*`, by [`crate::agent::DropLogMetrics`];
//! - `kube_nftpol_flow_window_*`, by [`crate::agent::RecentFlows`];
//! - `kube_nftpol_access_*`, by [`crate::access::Metrics`];
//! - `kube_nftpol_flows_*`, by [`crate::flowmetrics::Metrics`];
//! - `kube_nftpol_lint_*`, the cluster's posture, by [`crate::agent::PostureMetrics`].
//!
//! Label values come from fixed enums, never from error strings or pod names or addresses, so
//! the number of series stays bounded; the flow counters alone carry namespace and policy
//! names, and drop a series once its policy or namespace is gone ([`crate::flowmetrics`]).

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::flow_line::Action;
use crate::lint::{RuleId, Severity};
use crate::model::{ClusterAction, Direction, Enforcement, Tier};

/// A registry with the `kube_nftpol` prefix and the build information, for the subsystems to
/// register into.
pub fn registry() -> Registry {
    let mut registry = Registry::with_prefix("kube_nftpol");
    registry.register(
        "build",
        "Build information",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry
}

/// The registry as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// A histogram family with the agent's latency buckets (1 ms to 8 s).
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A histogram with the agent's latency buckets: 1 ms to 8 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// A value of the core's vocabulary as a label value, written as its `as_str()`: the core does
/// not know about Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelValue<T>(pub T);

/// A value of the core's vocabulary that names itself with a fixed word (its `as_str()`).
pub trait LabelText {
    /// The word.
    fn label_text(&self) -> &'static str;
}

/// `ingress`, `egress`.
impl LabelText for Direction {
    fn label_text(&self) -> &'static str {
        self.as_str()
    }
}

/// `enforce`, `audit`.
impl LabelText for Enforcement {
    fn label_text(&self) -> &'static str {
        self.as_str()
    }
}

/// `Admin`, `Baseline` (as the API spells them).
impl LabelText for Tier {
    fn label_text(&self) -> &'static str {
        self.as_str()
    }
}

/// `Accept`, `Deny`, `Pass` (as the API spells them).
impl LabelText for ClusterAction {
    fn label_text(&self) -> &'static str {
        self.as_str()
    }
}

/// A lint rule's id.
impl LabelText for RuleId {
    fn label_text(&self) -> &'static str {
        self.as_str()
    }
}

/// `error`, `warning`, `info`.
impl LabelText for Severity {
    fn label_text(&self) -> &'static str {
        self.as_str()
    }
}

impl<T: LabelText> EncodeLabelValue for LabelValue<T> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.label_text(), encoder)
    }
}

/// `allow`, `deny`, `audit`.
impl EncodeLabelValue for LabelValue<Action> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_has_the_prefix_and_the_build_information() {
        let text = encode(&registry());
        assert!(text.contains("kube_nftpol_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
