//! Where snapshots come from: the Kubernetes API ([`kubernetes`]) in a cluster, or a directory
//! of manifests ([`directory`], loaded by [`manifests`]) offline and in tests.
//!
//! Both publish complete snapshots on a `watch` channel and mark a [`ChangeClock`] when they
//! see a change, so the agent can time a change from the source to the kernel. Each counts
//! what it loads and what fails in its own [`Metrics`].

pub mod directory;
pub mod kubernetes;
pub mod manifests;

use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A source's metrics (`kube_nftpol_source_*`, `kube_nftpol_policies_invalid`).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Snapshots loaded.
    pub loads: Counter,
    /// Loads that failed (the last good snapshot stays in force).
    pub load_errors: Counter,
    /// NetworkPolicies that failed validation and are enforced fail-closed.
    pub invalid_policies: Gauge,
    /// ClusterNetworkPolicies that failed validation and are enforced fail-closed.
    pub invalid_cluster_policies: Gauge,
    /// Kubernetes watch errors (each retried with backoff).
    pub watch_errors: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "policies_invalid",
            "NetworkPolicies that failed validation and are enforced fail-closed",
            metrics.invalid_policies.clone(),
        );
        registry.register(
            "cluster_policies_invalid",
            "ClusterNetworkPolicies that failed validation and are enforced fail-closed (they \
             only deny)",
            metrics.invalid_cluster_policies.clone(),
        );
        let sub = registry.sub_registry_with_prefix("source");
        let help = "Snapshots loaded from the source";
        sub.register("loads", help, metrics.loads.clone());
        let help = "Source loads that failed; the last good snapshot stays";
        sub.register("load_errors", help, metrics.load_errors.clone());
        let help = "Kubernetes watch errors; each is retried with backoff";
        sub.register("watch_errors", help, metrics.watch_errors.clone());
        metrics
    }
}

/// The moment the oldest change not yet enforced was seen: marked by a source, taken by the
/// agent once the ruleset that includes it is in the kernel.
#[derive(Debug, Default)]
pub struct ChangeClock(Mutex<Option<Instant>>);

impl ChangeClock {
    /// Records a change seen at `at`, unless an older one is still waiting.
    pub fn mark(&self, at: Instant) {
        if let Ok(mut oldest) = self.0.lock() {
            oldest.get_or_insert(at);
        }
    }

    /// The oldest waiting change, clearing it.
    pub fn take(&self) -> Option<Instant> {
        self.0.lock().ok().and_then(|mut oldest| oldest.take())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_clock_keeps_the_oldest_change_until_taken() {
        let clock = ChangeClock::default();
        let first = Instant::now();
        clock.mark(first);
        clock.mark(first + Duration::from_millis(5));
        assert_eq!(clock.take(), Some(first));
        assert_eq!(clock.take(), None);
    }
}
