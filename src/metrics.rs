//! The agent's Prometheus metrics: one registry with the `kube_nftpol` prefix, one struct per
//! subsystem registered into it, served as OpenMetrics text at `/metrics` (see [`crate::http`]).
//!
//! Label values come from fixed enums, never from error strings or pod names or addresses, so
//! the number of series stays bounded; the flow counters alone carry namespace and policy
//! names, and drop a series once its policy or namespace is gone ([`crate::flowmetrics`]).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::model::{Direction, Enforcement};

/// Every metric of the agent.
#[derive(Debug)]
pub struct Metrics {
    /// The registry that `/metrics` encodes.
    pub registry: Registry,
    /// Dataplane metrics.
    pub dataplane: DataplaneMetrics,
    /// Source metrics.
    pub source: SourceMetrics,
    /// Drop log metrics.
    pub flowlog: FlowlogMetrics,
    /// `/hints` metrics.
    pub hints: HintsMetrics,
    /// Flow counters read from the table's rules.
    pub flows: FlowMetrics,
}

/// The metrics of the agent's aggregate of denied flows for `/hints` (`kube_nftpol_hints_*`).
#[derive(Debug, Default)]
pub struct HintsMetrics {
    /// Distinct denied flows evicted to keep the aggregate within its bound.
    pub evicted_flows: Counter,
}

/// Flows counted by the table's rules (`kube_nftpol_flows_*`), filled by
/// [`crate::flowmetrics`].
#[derive(Debug, Default, Clone)]
pub struct FlowMetrics {
    /// First packets of new connections accepted by a policy rule.
    pub allowed: Family<AllowedLabels, Counter>,
    /// Packets that reached a pod's default deny: dropped, or accepted in audit mode.
    pub denied: Family<DeniedLabels, Counter>,
    /// Times the counters could not be read.
    pub read_errors: Counter,
}

/// Labels of `kube_nftpol_flows_allowed_total`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
pub struct AllowedLabels {
    /// The policy's namespace (that of the pods it selects).
    pub namespace: String,
    /// The policy whose rule accepted the flow.
    pub policy: String,
    /// Ingress or egress, from the selected pod's side.
    pub direction: LabelValue<Direction>,
}

/// Labels of `kube_nftpol_flows_denied_total`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
pub struct DeniedLabels {
    /// The namespace of the isolated pod.
    pub namespace: String,
    /// Ingress or egress, from the isolated pod's side.
    pub direction: LabelValue<Direction>,
    /// `enforce` (dropped) or `audit` (logged and accepted).
    pub mode: LabelValue<Enforcement>,
}

/// A value of the core's vocabulary as a label value, written as its `as_str()`: the core does
/// not know about Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelValue<T>(pub T);

/// `ingress`, `egress`.
impl EncodeLabelValue for LabelValue<Direction> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

/// `enforce`, `audit`.
impl EncodeLabelValue for LabelValue<Enforcement> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

/// The drop log's metrics (`kube_nftpol_flowlog_*`).
#[derive(Debug, Default)]
pub struct FlowlogMetrics {
    /// NFLOG records received.
    pub records: Counter,
    /// Records the kernel logged that never reached the agent (socket overruns) or that the
    /// agent dropped because it was behind (a full channel).
    pub lost: Counter,
    /// Records that did not decode (not one of ours, or a malformed packet).
    pub undecodable: Counter,
    /// Records left out of the drop log because the dedup table was full.
    pub dedup_dropped: Counter,
    /// Flows in the dedup table.
    pub dedup_flows: Gauge,
}

/// How a ruleset reached the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum ApplyKind {
    /// The table's content was replaced in one transaction.
    Full,
    /// Only what changed was updated.
    Incremental,
}

/// Labels of apply counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ApplyLabels {
    /// Full or incremental.
    pub kind: ApplyKind,
}

/// A histogram family with the agent's latency buckets (1 ms to 8 s).
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// The dataplane's metrics (`kube_nftpol_dataplane_*`, `kube_nftpol_ruleset_*`).
#[derive(Debug)]
pub struct DataplaneMetrics {
    /// Rulesets applied, by kind.
    pub applies: Family<ApplyLabels, Counter>,
    /// Applies that failed (the previous table stays in the kernel).
    pub apply_errors: Counter,
    /// Times the table was found changed by someone else and replaced.
    pub repairs: Counter,
    /// Seconds from the decision to apply to the verified table, by kind.
    pub apply_duration: HistogramFamily<ApplyLabels>,
    /// Chains in the table.
    pub chains: Gauge,
    /// Elements in the table's sets and maps.
    pub set_elements: Gauge,
}

/// The source's metrics (`kube_nftpol_source_*`, `kube_nftpol_policies_invalid`,
/// `kube_nftpol_programming_latency_seconds`).
#[derive(Debug)]
pub struct SourceMetrics {
    /// Snapshots loaded.
    pub loads: Counter,
    /// Loads that failed (the last good snapshot stays in force).
    pub load_errors: Counter,
    /// NetworkPolicies that failed validation and are enforced fail-closed.
    pub invalid_policies: Gauge,
    /// Kubernetes watch errors (each retried with backoff).
    pub watch_errors: Counter,
    /// Kubernetes Events written (invalid policies).
    pub events: Counter,
    /// Kubernetes Events that could not be written or were dropped from a full queue.
    pub event_errors: Counter,
    /// Seconds from a change seen by the source to the verified ruleset that enforces it.
    pub programming_latency: Histogram,
}

impl Default for SourceMetrics {
    fn default() -> Self {
        Self {
            loads: Counter::default(),
            load_errors: Counter::default(),
            invalid_policies: Gauge::default(),
            watch_errors: Counter::default(),
            events: Counter::default(),
            event_errors: Counter::default(),
            programming_latency: latency_histogram(),
        }
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kube_nftpol");
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );

        let dataplane = DataplaneMetrics {
            applies: Family::default(),
            apply_errors: Counter::default(),
            repairs: Counter::default(),
            apply_duration: Family::new_with_constructor(latency_histogram),
            chains: Gauge::default(),
            set_elements: Gauge::default(),
        };
        let sub = registry.sub_registry_with_prefix("dataplane");
        sub.register(
            "applies",
            "Rulesets applied to the kernel, by kind",
            dataplane.applies.clone(),
        );
        sub.register(
            "apply_errors",
            "Applies that failed; the previous table stays",
            dataplane.apply_errors.clone(),
        );
        sub.register(
            "repairs",
            "Times the table was changed by someone else and repaired",
            dataplane.repairs.clone(),
        );
        sub.register(
            "apply_duration_seconds",
            "Time to apply and verify a ruleset, by kind",
            dataplane.apply_duration.clone(),
        );
        let sub = registry.sub_registry_with_prefix("ruleset");
        sub.register(
            "chains",
            "Chains in the agent's table",
            dataplane.chains.clone(),
        );
        sub.register(
            "set_elements",
            "Elements in the table's sets and maps",
            dataplane.set_elements.clone(),
        );

        let source = SourceMetrics::default();
        let sub = registry.sub_registry_with_prefix("source");
        sub.register(
            "loads",
            "Snapshots loaded from the source",
            source.loads.clone(),
        );
        sub.register(
            "load_errors",
            "Source loads that failed; the last good snapshot stays",
            source.load_errors.clone(),
        );
        let help = "Kubernetes watch errors; each is retried with backoff";
        sub.register("watch_errors", help, source.watch_errors.clone());
        let help = "Kubernetes Events written (invalid policies, PolicyDenied)";
        sub.register("events", help, source.events.clone());
        let help = "Kubernetes Events that could not be written or were dropped";
        sub.register("event_errors", help, source.event_errors.clone());
        registry.register(
            "programming_latency_seconds",
            "Time from a change seen by the source to the verified ruleset that enforces it",
            source.programming_latency.clone(),
        );
        registry.register(
            "policies_invalid",
            "NetworkPolicies that failed validation and are enforced fail-closed",
            source.invalid_policies.clone(),
        );
        let flowlog = FlowlogMetrics::default();
        let sub = registry.sub_registry_with_prefix("flowlog");
        let help = "NFLOG records of default-deny drops received";
        sub.register("records", help, flowlog.records.clone());
        let help = "NFLOG records the kernel logged that never reached the agent";
        sub.register("lost_records", help, flowlog.lost.clone());
        let help = "NFLOG records that did not decode";
        sub.register("undecodable", help, flowlog.undecodable.clone());
        let help = "Records left out of the drop log because the dedup table was full";
        sub.register("dedup_dropped_records", help, flowlog.dedup_dropped.clone());
        let help = "Flows in the drop log's dedup table";
        sub.register("dedup_flows", help, flowlog.dedup_flows.clone());
        let hints = HintsMetrics::default();
        let help = "Distinct denied flows evicted from the /hints aggregate to keep it bounded";
        let sub = registry.sub_registry_with_prefix("hints");
        sub.register("evicted_flows", help, hints.evicted_flows.clone());
        let flows = FlowMetrics::default();
        let sub = registry.sub_registry_with_prefix("flows");
        let help = "New connections accepted by a policy rule (their first packets), by policy";
        sub.register("allowed", help, flows.allowed.clone());
        let help = "Packets that reached a default deny (first packets of connections, SYN \
                    retransmissions included), by namespace and mode";
        sub.register("denied", help, flows.denied.clone());
        let help = "Times the table's counters could not be read";
        sub.register("read_errors", help, flows.read_errors.clone());
        Self {
            registry,
            dataplane,
            source,
            flowlog,
            hints,
            flows,
        }
    }

    /// The registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_encoded_with_the_prefix_and_kind_labels() {
        let metrics = Metrics::new();
        metrics
            .dataplane
            .applies
            .get_or_create(&ApplyLabels {
                kind: ApplyKind::Full,
            })
            .inc();
        metrics.dataplane.repairs.inc();
        metrics.dataplane.chains.set(7);
        let text = metrics.encode();
        assert!(
            text.contains("kube_nftpol_dataplane_applies_total{kind=\"Full\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kube_nftpol_dataplane_repairs_total 1\n"),
            "{text}"
        );
        assert!(text.contains("kube_nftpol_ruleset_chains 7\n"), "{text}");
        assert!(text.contains("kube_nftpol_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn drop_log_dedup_metrics_are_encoded() {
        let metrics = Metrics::new();
        metrics.flowlog.dedup_dropped.inc_by(3);
        metrics.flowlog.dedup_flows.set(42);
        let text = metrics.encode();
        assert!(
            text.contains("kube_nftpol_flowlog_dedup_dropped_records_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("kube_nftpol_flowlog_dedup_flows 42\n"),
            "{text}"
        );
    }

    #[test]
    fn flow_counters_are_encoded_with_namespace_policy_direction_and_mode() {
        let metrics = Metrics::new();
        let allowed = AllowedLabels {
            namespace: "shop".into(),
            policy: "frontend-to-backend".into(),
            direction: LabelValue(Direction::Ingress),
        };
        metrics.flows.allowed.get_or_create(&allowed).inc_by(3);
        let denied = DeniedLabels {
            namespace: "payments".into(),
            direction: LabelValue(Direction::Egress),
            mode: LabelValue(Enforcement::Audit),
        };
        metrics.flows.denied.get_or_create(&denied).inc();
        let text = metrics.encode();
        assert!(
            text.contains(
                "kube_nftpol_flows_allowed_total{namespace=\"shop\",policy=\"frontend-to-backend\",direction=\"ingress\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "kube_nftpol_flows_denied_total{namespace=\"payments\",direction=\"egress\",mode=\"audit\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("kube_nftpol_flows_read_errors_total 0\n"),
            "{text}"
        );
        metrics.flows.denied.remove(&denied);
        assert!(!metrics.encode().contains("payments"));
    }
}
