//! The agent's control loop: source, snapshot, compile, dataplane. It owns the desired
//! ruleset, the sticky pod-address bindings and the programming metrics; it releases the
//! readiness latch once the first ruleset is verified in the kernel, and hands each snapshot
//! whose changed ruleset the kernel now enforces to the revocation pass.

use std::net::IpAddr;
use std::time::Instant;

use anyhow::Context as _;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::bindings::Bindings;
use super::{Config, State};
use crate::compile::{self, Ruleset};
use crate::dataplane::{Applied, Check, Dataplane};
use crate::metrics::{HistogramFamily, latency_histogram};
use crate::model::PodInterfaces;
use crate::source::ChangeClock;
use crate::source::manifests::Loaded;
use std::sync::Arc;

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

/// The control loop's metrics (`kube_nftpol_dataplane_*`, `kube_nftpol_ruleset_*`,
/// `kube_nftpol_programming_latency_seconds`).
#[derive(Debug, Clone)]
pub struct ControlMetrics {
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
    /// Seconds from a change seen by the source to the verified ruleset that enforces it.
    pub programming_latency: Histogram,
}

impl ControlMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            applies: Family::default(),
            apply_errors: Counter::default(),
            repairs: Counter::default(),
            apply_duration: Family::new_with_constructor(latency_histogram),
            chains: Gauge::default(),
            set_elements: Gauge::default(),
            programming_latency: latency_histogram(),
        };
        registry.register(
            "programming_latency_seconds",
            "Time from a change seen by the source to the verified ruleset that enforces it",
            metrics.programming_latency.clone(),
        );
        let sub = registry.sub_registry_with_prefix("dataplane");
        let help = "Rulesets applied to the kernel, by kind";
        sub.register("applies", help, metrics.applies.clone());
        let help = "Applies that failed; the previous table stays";
        sub.register("apply_errors", help, metrics.apply_errors.clone());
        let help = "Times the table was changed by someone else and repaired";
        sub.register("repairs", help, metrics.repairs.clone());
        let help = "Time to apply and verify a ruleset, by kind";
        sub.register(
            "apply_duration_seconds",
            help,
            metrics.apply_duration.clone(),
        );
        let sub = registry.sub_registry_with_prefix("ruleset");
        sub.register(
            "chains",
            "Chains in the agent's table",
            metrics.chains.clone(),
        );
        let help = "Elements in the table's sets and maps";
        sub.register("set_elements", help, metrics.set_elements.clone());
        metrics
    }
}

/// What the interface watcher reports: the pods' host-side veths, and the addresses of pods
/// behind a bridge (no veth of their own to dispatch on).
pub(super) struct PodLinks {
    pub(super) interfaces: watch::Receiver<PodInterfaces>,
    pub(super) bridged: watch::Receiver<Vec<IpAddr>>,
}

/// Applies each snapshot, each change of the pods' interfaces and, every resync interval, checks
/// the table and repairs it; returns on SIGTERM or SIGINT, or when the source stops.
pub(super) async fn control_loop(
    config: &Config,
    mut snapshots: watch::Receiver<Option<Arc<Loaded>>>,
    links: PodLinks,
    dataplane: Dataplane,
    state: &State,
    clock: &ChangeClock,
    applied: &watch::Sender<Option<Arc<Loaded>>>,
) -> anyhow::Result<()> {
    let metrics = &state.metrics().control;
    let PodLinks {
        mut interfaces,
        mut bridged,
    } = links;
    let mut resync = tokio::time::interval(config.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    let mut node = Programmer {
        config,
        state,
        applied,
        dataplane,
        bindings: Bindings::default(),
        desired: None,
    };
    let mut loaded: Option<Arc<Loaded>> = None;
    let mut interfaces_open = true;
    let mut bridged_open = true;
    let mut bridges_reported = false;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the source stopped");
                }
                loaded = snapshots.borrow_and_update().clone();
                let Some(current) = &loaded else { continue };
                let ruleset = node.compile(current, &interfaces.borrow(), &bridged.borrow());
                if node.install(ruleset, current).await && let Some(seen) = clock.take() {
                    let latency = seen.elapsed();
                    metrics.programming_latency.observe(latency.as_secs_f64());
                    debug!(micros = latency.as_micros(), "change enforced");
                }
            }
            changed = interfaces.changed(), if loaded.is_some() && interfaces_open => {
                if changed.is_err() {
                    // The watcher only stops when the agent does; keep enforcing meanwhile.
                    warn!("the pod interface watcher stopped");
                    interfaces_open = false;
                    continue;
                }
                let Some(current) = &loaded else { continue };
                let ruleset =
                    node.compile(current, &interfaces.borrow_and_update(), &bridged.borrow());
                node.install(ruleset, current).await;
            }
            changed = bridged.changed(), if bridged_open => {
                if changed.is_err() {
                    bridged_open = false;
                    continue;
                }
                let addresses = bridged.borrow_and_update().clone();
                if !addresses.is_empty() && !bridges_reported {
                    bridges_reported = true;
                    report_bridge_cni(addresses.len());
                }
                let Some(current) = &loaded else { continue };
                let ruleset = node.compile(current, &interfaces.borrow(), &addresses);
                node.install(ruleset, current).await;
            }
            _ = resync.tick() => {
                if node.bindings.rebind_pending() && let Some(current) = &loaded {
                    let ruleset = node.compile(current, &interfaces.borrow(), &bridged.borrow());
                    node.install(ruleset, current).await;
                }
                node.check(loaded.as_ref()).await;
            }
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// What the control loop programs the node with: the dataplane, the sticky address bindings
/// and the last ruleset it wanted.
struct Programmer<'a> {
    config: &'a Config,
    state: &'a State,
    /// Where a snapshot whose changed ruleset the kernel now enforces goes (the revocation
    /// pass).
    applied: &'a watch::Sender<Option<Arc<Loaded>>>,
    dataplane: Dataplane,
    bindings: Bindings,
    desired: Option<Ruleset>,
}

impl Programmer<'_> {
    /// The node's ruleset for `loaded` with the pods' links as they are now.
    fn compile(&mut self, loaded: &Loaded, learned: &PodInterfaces, bridged: &[IpAddr]) -> Ruleset {
        compile_node(self.config, loaded, &mut self.bindings, learned, bridged)
    }

    /// Applies `ruleset` (compiled from `current`), hands `current` to the revocation pass when
    /// the kernel's table changed, and keeps `ruleset` as the desired state; whether the kernel
    /// enforces it now.
    async fn install(&mut self, ruleset: Ruleset, current: &Arc<Loaded>) -> bool {
        let enforced = apply(&mut self.dataplane, &ruleset, self.state).await;
        hand_over(self.applied, enforced, current);
        self.desired = Some(ruleset);
        enforced.is_some()
    }

    /// The resync's check of the table: repaired when someone changed it, applied again when
    /// the last apply failed.
    async fn check(&mut self, loaded: Option<&Arc<Loaded>>) {
        let metrics = &self.state.metrics().control;
        match self.dataplane.check().await {
            Ok(Check::Repaired) => {
                metrics.repairs.inc();
            }
            Ok(Check::Intact) => debug!("table intact"),
            Ok(Check::NotInstalled) => {
                // The last apply failed: try again with what we want.
                if let Some(ruleset) = &self.desired {
                    let enforced = apply(&mut self.dataplane, ruleset, self.state).await;
                    if let Some(current) = loaded {
                        hand_over(self.applied, enforced, current);
                    }
                }
            }
            Err(error) => {
                metrics.apply_errors.inc();
                warn!(error = %format!("{:#}", anyhow::Error::from(error)), "table check failed");
            }
        }
    }
}

/// Says once what the agent does for pods behind a bridge (a bridge CNI such as flannel's):
/// what it enforces and what it cannot, and whether br_netfilter sends bridged traffic through
/// the hooks at all.
fn report_bridge_cni(addresses: usize) {
    warn!(
        addresses,
        "pods behind a bridge (bridge CNI): policies are enforced by address; anti-spoofing and \
         the reused-address guards need a routed veth per pod and do not cover them; \
         starting_pods drops the bridge's unclaimed addresses while an isolated pod starts"
    );
    // Per network namespace; the agent runs in the node's (hostNetwork).
    const BR_NETFILTER: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    match std::fs::read_to_string(BR_NETFILTER) {
        Ok(value) if value.trim() == "1" => {}
        Ok(value) => error!(
            value = value.trim(),
            "net.bridge.bridge-nf-call-iptables is not 1: packets between pods on one bridge \
             skip the ip and inet hooks, and no policy applies to them (modprobe br_netfilter; \
             sysctl -w net.bridge.bridge-nf-call-iptables=1)"
        ),
        Err(error) => error!(
            %error,
            "no {BR_NETFILTER} (br_netfilter not loaded): packets between pods on one bridge skip \
             the ip and inet hooks, and no policy applies to them"
        ),
    }
}

/// Compiles this node's ruleset, with the learned veths filtered through the sticky bindings,
/// and the addresses behind the node's bridges.
fn compile_node(
    config: &Config,
    loaded: &Loaded,
    bindings: &mut Bindings,
    learned: &PodInterfaces,
    bridged: &[IpAddr],
) -> Ruleset {
    let mut interfaces =
        bindings.update(&loaded.snapshot, &config.node_name, learned, Instant::now());
    // The other veths as the routes say: the compiler drops those whose address no pod owns
    // yet while an isolated pod of this node waits for its IP (pods are plugged in before the
    // API reports their IP). A bound address keeps its binding.
    for (ip, veth) in learned {
        interfaces.entry(*ip).or_insert_with(|| veth.clone());
    }
    compile::compile_with_bridged(
        &loaded.snapshot,
        &config.node_name,
        &interfaces,
        bridged,
        &config.compile,
    )
}

/// Hands a snapshot whose changed ruleset the kernel now enforces to the revocation pass.
fn hand_over(
    applied: &watch::Sender<Option<Arc<Loaded>>>,
    enforced: Option<Enforced>,
    current: &Arc<Loaded>,
) {
    if enforced == Some(Enforced::Changed) {
        applied.send_replace(Some(Arc::clone(current)));
    }
}

/// How the kernel came to enforce a ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enforced {
    /// It was there already.
    Unchanged,
    /// It was written.
    Changed,
}

/// Applies `ruleset`; `None` when it failed, otherwise whether the kernel's table changed.
async fn apply(dataplane: &mut Dataplane, ruleset: &Ruleset, state: &State) -> Option<Enforced> {
    let started = Instant::now();
    let metrics = &state.metrics().control;
    match dataplane.apply(ruleset).await {
        Ok(Applied::Unchanged) => {
            debug!("ruleset unchanged");
            state.set_ready();
            Some(Enforced::Unchanged)
        }
        Ok(applied) => {
            let kind = match applied {
                Applied::Full => ApplyKind::Full,
                Applied::Repaired => {
                    // Someone changed the table since the last check; counted as the resync
                    // would have counted it.
                    metrics.repairs.inc();
                    ApplyKind::Full
                }
                _ => ApplyKind::Incremental,
            };
            let seconds = started.elapsed().as_secs_f64();
            metrics.applies.get_or_create(&ApplyLabels { kind }).inc();
            metrics
                .apply_duration
                .get_or_create(&ApplyLabels { kind })
                .observe(seconds);
            let chains = ruleset.chains.len();
            let elements = ruleset.sets.iter().map(|s| s.elements.len()).sum::<usize>()
                + ruleset.maps.iter().map(|m| m.elements.len()).sum::<usize>();
            metrics
                .chains
                .set(i64::try_from(chains).unwrap_or(i64::MAX));
            metrics
                .set_elements
                .set(i64::try_from(elements).unwrap_or(i64::MAX));
            match &applied {
                Applied::Incremental(touched) => debug!(
                    chains = ?touched.chains,
                    sets = touched.sets.len(),
                    maps = ?touched.maps,
                    millis = started.elapsed().as_millis(),
                    "ruleset updated"
                ),
                _ => info!(
                    chains,
                    elements,
                    millis = started.elapsed().as_millis(),
                    "ruleset applied"
                ),
            }
            state.set_ready();
            Some(Enforced::Changed)
        }
        Err(error) => {
            metrics.apply_errors.inc();
            error!(error = %format!("{:#}", anyhow::Error::from(error)), "cannot apply the ruleset; the previous one stays");
            if dataplane.installed().is_some() {
                state.set_ready();
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics;

    #[test]
    fn control_metrics_are_encoded_with_the_prefix_and_kind_labels() {
        let mut registry = metrics::registry();
        let control = ControlMetrics::register(&mut registry);
        control
            .applies
            .get_or_create(&ApplyLabels {
                kind: ApplyKind::Full,
            })
            .inc();
        control.repairs.inc();
        control.chains.set(7);
        let text = metrics::encode(&registry);
        assert!(
            text.contains("kube_nftpol_dataplane_applies_total{kind=\"Full\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kube_nftpol_dataplane_repairs_total 1\n"),
            "{text}"
        );
        assert!(text.contains("kube_nftpol_ruleset_chains 7\n"), "{text}");
        assert!(
            text.contains("kube_nftpol_programming_latency_seconds_count 0\n"),
            "{text}"
        );
    }
}
