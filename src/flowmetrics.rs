//! Flow metrics from the table's own rule counters, not from sampled logs:
//! `kube_nftpol_flows_allowed_total{namespace,policy,direction}` and
//! `kube_nftpol_flows_denied_total{namespace,direction,mode}`.
//!
//! Every policy rule of a pod chain and the counted verdict at its end carry a counter and a
//! comment naming the policy or the pod ([`crate::compile`]). The counters count packets, but
//! `postrouting` accepts `ct state established,related` before dispatching to pod chains, so
//! those rules see only packets of connections conntrack does not know as established: the
//! first packet of each new connection (for UDP, every datagram sent before the first reply),
//! and, since a dropped packet never confirms its conntrack entry, every retransmission of a
//! denied one. The counts are exact whatever the drop log's rate limit.
//!
//! [`FlowCounters`] reads the counted rules of the table from the kernel over netlink (a rule
//! dump, [`crate::dataplane::kernel`]: about a millisecond at a thousand rules, where an
//! `nft -j -t` listing took 70 ms of CPU), maps each counted rule to its series
//! ([`attribute`]), adds what each rule counted since the last read ([`accumulate`]) and removes
//! the series of deleted policies and namespaces. It reads every [`READ_INTERVAL`] and, at most
//! once per [`SCRAPE_MIN_AGE`], when `/metrics` is scraped. It never changes the table.

pub mod accumulate;
pub mod attribute;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};
use tracing::{debug, warn};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::dataplane::kernel::{self, Kernel, RuleCounter};
use crate::metrics::LabelValue;
use crate::model::{ClusterAction, Direction, Enforcement, ObjectKey, Snapshot, Tier};
use crate::source::manifests::Loaded;
use accumulate::{Accumulator, RuleId};
use attribute::{FlowKey, attribute};

/// How often the counters are read when nobody scrapes: also the most a rule can have counted
/// unseen when a change removes it.
pub const READ_INTERVAL: Duration = Duration::from_secs(5);
/// A scrape reads the counters again unless they were read this recently.
pub const SCRAPE_MIN_AGE: Duration = Duration::from_secs(1);

/// Flows counted by the table's rules (`kube_nftpol_flows_*`).
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// First packets of new connections accepted by a policy rule.
    pub allowed: Family<AllowedLabels, Counter>,
    /// Packets that reached a pod's default deny: dropped, or accepted in audit mode.
    pub denied: Family<DeniedLabels, Counter>,
    /// Packets a ClusterNetworkPolicy rule matched, by policy, tier, action and direction.
    pub cluster: Family<ClusterLabels, Counter>,
    /// Times the counters could not be read.
    pub read_errors: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("flows");
        let help = "New connections accepted by a policy rule (their first packets), by policy";
        sub.register("allowed", help, metrics.allowed.clone());
        let help = "Packets that reached a default deny (first packets of connections, SYN \
                    retransmissions included), by namespace and mode";
        sub.register("denied", help, metrics.denied.clone());
        let help = "Packets a ClusterNetworkPolicy rule matched: Accept (first packets of new \
                    connections), Deny (dropped, or logged and accepted for an audited pod; SYN \
                    retransmissions included) and Pass, by policy, tier and direction";
        sub.register("cluster_policy", help, metrics.cluster.clone());
        let help = "Times the table's counters could not be read";
        sub.register("read_errors", help, metrics.read_errors.clone());
        metrics
    }
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

/// Labels of `kube_nftpol_flows_cluster_policy_total`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
pub struct ClusterLabels {
    /// The ClusterNetworkPolicy (cluster-scoped, so no namespace).
    pub policy: String,
    /// `Admin` or `Baseline`.
    pub tier: LabelValue<Tier>,
    /// The rule's action: `Accept`, `Deny` or `Pass`.
    pub action: LabelValue<ClusterAction>,
    /// Ingress or egress, from the subject pod's side.
    pub direction: LabelValue<Direction>,
}

/// Why the counters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel could not be asked.
    #[error("cannot read the table's counters")]
    Read(#[from] kernel::Error),
}

/// Where the counters come from: the kernel in the agent (a [`Kernel`]), fixed readings in
/// tests.
pub trait CounterSource: Send + Sync {
    /// Every counted rule of the table now; none when the table does not exist.
    fn read(&self) -> impl Future<Output = Result<Vec<RuleCounter>, Error>> + Send;
}

impl CounterSource for Kernel {
    async fn read(&self) -> Result<Vec<RuleCounter>, Error> {
        Ok(self.rule_counters().await?)
    }
}

/// Reads the table's counters into the flow metrics.
#[derive(Debug)]
pub struct FlowCounters<S = Kernel> {
    source: S,
    metrics: Metrics,
    snapshots: watch::Receiver<Option<Arc<Loaded>>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    accumulator: Accumulator,
    /// Series created in the metrics.
    published: BTreeSet<FlowKey>,
    last_read: Option<Instant>,
}

impl<S: CounterSource> FlowCounters<S> {
    /// Counters of the table `source` reads, into `metrics`, labelled with the help of the
    /// latest snapshot.
    pub fn new(
        source: S,
        metrics: &Metrics,
        snapshots: watch::Receiver<Option<Arc<Loaded>>>,
    ) -> Self {
        Self {
            source,
            metrics: metrics.clone(),
            snapshots,
            state: Mutex::new(State::default()),
        }
    }

    /// Notes what the table's rules have counted so far without reporting it: call once,
    /// before the agent's first apply, so a previous agent's counts are not taken for new.
    pub async fn baseline(&self) {
        let mut state = self.state.lock().await;
        match self.source.read().await {
            Ok(rules) => state
                .accumulator
                .baseline(rules.into_iter().map(|r| (rule_id(&r), r.packets))),
            Err(error) => self.read_failed(error),
        }
        state.last_read = Some(Instant::now());
    }

    /// Reads the counters and updates the metrics.
    pub async fn refresh(&self) {
        let mut state = self.state.lock().await;
        self.refresh_locked(&mut state).await;
    }

    /// [`Self::refresh`], unless the counters were read less than `age` ago.
    pub async fn refresh_if_older(&self, age: Duration) {
        let mut state = self.state.lock().await;
        if state.last_read.is_some_and(|t| t.elapsed() < age) {
            return;
        }
        self.refresh_locked(&mut state).await;
    }

    async fn refresh_locked(&self, state: &mut State) {
        let rules = match self.source.read().await {
            Ok(rules) => rules,
            Err(error) => return self.read_failed(error),
        };
        state.last_read = Some(Instant::now());
        let loaded = self.snapshots.borrow().clone();
        let snapshot = loaded.as_deref().map(|l| &l.snapshot);
        let readings = rules.into_iter().filter_map(|rule| {
            let key = attribute(&rule.chain, &rule.comment, snapshot)?;
            Some((rule_id(&rule), key, rule.packets))
        });
        let counted = state.accumulator.update(readings);
        for (key, delta) in &counted {
            match key {
                FlowKey::Allowed(labels) => {
                    self.metrics.allowed.get_or_create(labels).inc_by(*delta);
                }
                FlowKey::Denied(labels) => {
                    self.metrics.denied.get_or_create(labels).inc_by(*delta);
                }
                FlowKey::Cluster(labels) => {
                    self.metrics.cluster.get_or_create(labels).inc_by(*delta);
                }
            }
            if !state.published.contains(key) {
                state.published.insert(key.clone());
            }
        }
        let exists = |key: &FlowKey| snapshot.is_none_or(|s| object_exists(s, key));
        for key in accumulate::stale(&state.published, &counted, exists) {
            match &key {
                FlowKey::Allowed(labels) => self.metrics.allowed.remove(labels),
                FlowKey::Denied(labels) => self.metrics.denied.remove(labels),
                FlowKey::Cluster(labels) => self.metrics.cluster.remove(labels),
            };
            state.published.remove(&key);
        }
        debug!(
            rules = state.accumulator.len(),
            series = state.published.len(),
            "flow counters read"
        );
    }

    /// Counts and logs a failed read; the series keep their values.
    fn read_failed(&self, error: Error) {
        self.metrics.read_errors.inc();
        warn!(error = %format!("{:#}", anyhow::Error::from(error)), "cannot read the flow counters");
    }
}

/// Reads the counters every [`READ_INTERVAL`] until the task is dropped.
pub async fn run(counters: Arc<FlowCounters>) {
    let mut every = tokio::time::interval(READ_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        counters.refresh_if_older(READ_INTERVAL / 2).await;
    }
}

fn rule_id(rule: &RuleCounter) -> RuleId {
    RuleId {
        chain: rule.chain.clone(),
        comment: rule.comment.clone(),
        handle: rule.handle,
    }
}

/// Whether the policy (allowed, ClusterNetworkPolicy) or namespace (denied) of a series is still
/// in the cluster.
fn object_exists(snapshot: &Snapshot, key: &FlowKey) -> bool {
    match key {
        FlowKey::Allowed(labels) => snapshot
            .policy(&ObjectKey::new(
                labels.namespace.as_str(),
                labels.policy.as_str(),
            ))
            .is_some(),
        FlowKey::Denied(labels) => snapshot.namespace(&labels.namespace).is_some(),
        FlowKey::Cluster(labels) => snapshot.cluster_policy(&labels.policy).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use serde_json::json;

    use super::*;
    use crate::metrics;

    /// A registry with the flow metrics alone.
    fn registered() -> (Registry, Metrics) {
        let mut registry = metrics::registry();
        let flows = Metrics::register(&mut registry);
        (registry, flows)
    }

    /// The table as the kernel would report it: policy `x/p`'s rule (handle `handle`,
    /// `allowed` packets) in `in_x_a` and its default deny (handle 11, `denied` packets).
    fn reading(rule: Option<(u64, u64)>, denied: u64) -> Reading {
        let counted = |handle, comment: &str, packets| RuleCounter {
            chain: "in_x_a".into(),
            handle,
            comment: comment.into(),
            packets,
        };
        let mut rules: Vec<_> = rule
            .map(|(handle, packets)| counted(handle, "x/p ingress[0]", packets))
            .into_iter()
            .collect();
        rules.push(counted(11, "default deny ingress x/a", denied));
        Some(rules)
    }

    /// What the next read returns; `None` fails it.
    type Reading = Option<Vec<RuleCounter>>;

    /// A counter source whose next reading the test sets.
    #[derive(Debug, Clone, Default)]
    struct Fixed(Arc<StdMutex<Reading>>);

    impl Fixed {
        fn set(&self, reading: Reading) {
            *self.0.lock().unwrap() = reading;
        }
    }

    impl CounterSource for Fixed {
        async fn read(&self) -> Result<Vec<RuleCounter>, Error> {
            self.0
                .lock()
                .unwrap()
                .clone()
                .ok_or_else(|| kernel::Error::Answer("made to fail".into()).into())
        }
    }

    fn loaded(with_policy: bool) -> Option<Arc<Loaded>> {
        let mut snapshot = Snapshot::new();
        snapshot.upsert_namespace(crate::model::Namespace::implicit("x"));
        if with_policy {
            let policy = serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "x"},
                "spec": {"podSelector": {}, "ingress": [{}]}
            }))
            .unwrap();
            snapshot.upsert_network_policy(&policy).unwrap();
        }
        Some(Arc::new(Loaded {
            snapshot,
            ..Loaded::default()
        }))
    }

    fn lines(registry: &Registry) -> Vec<String> {
        metrics::encode(registry)
            .lines()
            .filter(|l| l.starts_with("kube_nftpol_flows_") && !l.contains("read_errors"))
            .map(str::to_owned)
            .collect()
    }

    const ALLOWED: &str =
        "kube_nftpol_flows_allowed_total{namespace=\"x\",policy=\"p\",direction=\"ingress\"}";
    const DENIED: &str =
        "kube_nftpol_flows_denied_total{namespace=\"x\",direction=\"ingress\",mode=\"enforce\"}";

    #[tokio::test]
    async fn counters_become_monotonic_series_that_go_with_their_policy() {
        let source = Fixed::default();
        let (registry, metrics) = registered();
        let (tx, rx) = watch::channel(loaded(true));
        let counters = FlowCounters::new(source.clone(), &metrics, rx);

        // A previous agent's counts are not reported.
        source.set(reading(Some((10, 7)), 40));
        counters.baseline().await;
        source.set(reading(Some((10, 9)), 45));
        counters.refresh().await;
        assert_eq!(
            lines(&registry),
            [format!("{ALLOWED} 2"), format!("{DENIED} 5")]
        );

        // The chain is refilled: the policy rule gets handle 20, its counter starts at 0.
        source.set(reading(Some((20, 3)), 46));
        counters.refresh().await;
        assert_eq!(
            lines(&registry),
            [format!("{ALLOWED} 5"), format!("{DENIED} 6")]
        );

        // A read within the scrape age is skipped.
        source.set(reading(Some((20, 4)), 46));
        counters.refresh_if_older(Duration::from_secs(60)).await;
        assert_eq!(lines(&registry)[0], format!("{ALLOWED} 5"));

        // The policy's rule is gone but the policy exists: the series stays.
        source.set(reading(None, 46));
        counters.refresh().await;
        assert_eq!(
            lines(&registry),
            [format!("{ALLOWED} 5"), format!("{DENIED} 6")]
        );

        // The policy is deleted: its series goes.
        tx.send_replace(loaded(false));
        counters.refresh().await;
        assert_eq!(lines(&registry), [format!("{DENIED} 6")]);
        assert!(metrics::encode(&registry).contains("kube_nftpol_flows_read_errors_total 0\n"));
    }

    #[tokio::test]
    async fn a_failed_read_is_counted_and_changes_no_series() {
        let source = Fixed::default();
        let (registry, metrics) = registered();
        let (_tx, rx) = watch::channel(loaded(true));
        let counters = FlowCounters::new(source.clone(), &metrics, rx);
        source.set(reading(Some((10, 1)), 1));
        counters.refresh().await;
        source.set(None);
        counters.refresh().await;
        counters.refresh().await;
        assert_eq!(
            lines(&registry),
            [format!("{ALLOWED} 1"), format!("{DENIED} 1")]
        );
        assert!(metrics::encode(&registry).contains("kube_nftpol_flows_read_errors_total 2\n"));
    }

    #[test]
    fn flow_counters_are_encoded_with_namespace_policy_direction_and_mode() {
        let (registry, metrics) = registered();
        let allowed = AllowedLabels {
            namespace: "shop".into(),
            policy: "frontend-to-backend".into(),
            direction: LabelValue(Direction::Ingress),
        };
        metrics.allowed.get_or_create(&allowed).inc_by(3);
        let denied = DeniedLabels {
            namespace: "payments".into(),
            direction: LabelValue(Direction::Egress),
            mode: LabelValue(Enforcement::Audit),
        };
        metrics.denied.get_or_create(&denied).inc();
        let text = metrics::encode(&registry);
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
        metrics.denied.remove(&denied);
        assert!(!metrics::encode(&registry).contains("payments"));
    }
}
