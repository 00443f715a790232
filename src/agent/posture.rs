//! The cluster's posture as a metric: the linter ([`crate::lint`]) run on the agent's
//! snapshots, its findings counted by rule and severity in `kube_nftpol_lint_findings`, so a
//! dashboard shows what `kube-nftpol lint` would say about the live cluster.
//!
//! Off the enforcement path: a task of its own follows the snapshots the control loop gets,
//! runs the linter on the blocking pool (it costs CPU, not I/O), and then waits out the
//! interval (`--lint-interval-secs`, a minute by default) before it looks again, so a burst of
//! changes costs one run a minute, an idle cluster nothing, and enforcement never waits on it.
//! Labels are bounded: one series per rule that is on, at its configured severity.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::State;
use crate::lint::{self, Finding, RuleId, Severity};
use crate::metrics::{LabelValue, latency_histogram};
use crate::source::manifests::Loaded;

/// How often the task looks whether the agent is ready, before its first lint.
const READY_POLL: Duration = Duration::from_millis(100);

/// How often and with which rules the agent lints its snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct PostureOptions {
    /// The rules' parameters and severities (`--lint-config`).
    pub config: Arc<lint::Config>,
    /// The least time between two runs (`--lint-interval-secs`).
    pub interval: Duration,
}

impl Default for PostureOptions {
    fn default() -> Self {
        Self {
            config: Arc::new(lint::Config::default()),
            interval: Duration::from_secs(60),
        }
    }
}

/// Labels of the findings gauge: a rule and the severity its findings have.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FindingLabels {
    /// The rule id.
    pub rule: LabelValue<RuleId>,
    /// `error`, `warning` or `info`.
    pub severity: LabelValue<Severity>,
}

/// The posture metrics (`kube_nftpol_lint_*`).
#[derive(Debug, Clone)]
pub struct PostureMetrics {
    /// Findings of the last run, by rule and severity.
    pub findings: Family<FindingLabels, Gauge>,
    /// Runs of the linter.
    pub runs: Counter,
    /// Seconds each run took.
    pub duration: Histogram,
}

impl PostureMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            findings: Family::default(),
            runs: Counter::default(),
            duration: latency_histogram(),
        };
        let sub = registry.sub_registry_with_prefix("lint");
        let help =
            "Findings of kube-nftpol lint on the agent's view of the cluster, by rule and severity";
        sub.register("findings", help, metrics.findings.clone());
        let help = "Runs of the linter on the agent's snapshots";
        sub.register("runs", help, metrics.runs.clone());
        let help = "Time one run of the linter took";
        sub.register("duration_seconds", help, metrics.duration.clone());
        metrics
    }

    /// Records a run's findings: every rule the config leaves on gets its count, zero
    /// included, so a fixed finding goes back to 0.
    pub fn record(&self, findings: &[Finding], config: &lint::Config, took: Duration) {
        for rule in RuleId::ALL {
            let Some(severity) = config.severity(rule) else {
                continue;
            };
            let count = findings.iter().filter(|f| f.rule == rule).count();
            let labels = FindingLabels {
                rule: LabelValue(rule),
                severity: LabelValue(severity),
            };
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            self.findings.get_or_create(&labels).set(count);
        }
        self.runs.inc();
        self.duration.observe(took.as_secs_f64());
    }
}

/// Lints each snapshot the source publishes, at most once per interval, until the source stops;
/// the first once the agent is ready: at a start the linter's memory would otherwise add to that
/// of the first list and compile, the agent's peak.
pub(super) async fn run(
    mut snapshots: watch::Receiver<Option<Arc<Loaded>>>,
    options: PostureOptions,
    metrics: PostureMetrics,
    state: Arc<State>,
) {
    while !state.is_ready() {
        tokio::time::sleep(READY_POLL).await;
    }
    loop {
        if snapshots.changed().await.is_err() {
            return;
        }
        let Some(loaded) = snapshots.borrow_and_update().clone() else {
            continue;
        };
        let config = Arc::clone(&options.config);
        let started = Instant::now();
        let linted = tokio::task::spawn_blocking(move || lint::lint(&loaded.snapshot, &config));
        match linted.await {
            Ok(findings) => {
                let took = started.elapsed();
                metrics.record(&findings, &options.config, took);
                debug!(
                    findings = findings.len(),
                    millis = took.as_millis(),
                    "cluster linted"
                );
            }
            Err(error) => {
                warn!(%error, "the linter failed; the posture metric keeps its last values")
            }
        }
        tokio::time::sleep(options.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::load_str;
    use crate::metrics;

    const OPEN_NAMESPACE: &str = "apiVersion: v1\nkind: Pod\n\
                                  metadata: {name: web, namespace: shop, labels: {app: web}}\n\
                                  status: {podIP: 10.0.0.1}\n";

    #[test]
    fn each_rule_that_is_on_gets_its_count_at_its_severity() {
        let mut registry = metrics::registry();
        let posture = PostureMetrics::register(&mut registry);
        let loaded = load_str(OPEN_NAMESPACE, "shop.yaml").unwrap();
        let config =
            lint::Config::from_yaml("rules: {shadowed-rule: off, unprotected-pod: error}\n")
                .unwrap();
        let findings = lint::lint(&loaded.snapshot, &config);
        posture.record(&findings, &config, Duration::from_millis(3));
        let text = metrics::encode(&registry);
        for line in [
            "kube_nftpol_lint_findings{rule=\"missing-default-deny-ingress\",severity=\"warning\"} 1\n",
            "kube_nftpol_lint_findings{rule=\"missing-default-deny-egress\",severity=\"info\"} 1\n",
            "kube_nftpol_lint_findings{rule=\"unprotected-pod\",severity=\"error\"} 1\n",
            "kube_nftpol_lint_findings{rule=\"invalid-policy\",severity=\"error\"} 0\n",
            "kube_nftpol_lint_runs_total 1\n",
            "kube_nftpol_lint_duration_seconds_count 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("shadowed-rule"), "{text}");
        assert_eq!(text.matches("kube_nftpol_lint_findings{").count(), 15);
    }

    #[tokio::test]
    async fn the_task_lints_a_published_snapshot_and_then_waits_out_the_interval() {
        let mut registry = metrics::registry();
        let posture = PostureMetrics::register(&mut registry);
        let (tx, rx) = watch::channel(None);
        let options = PostureOptions {
            interval: Duration::from_secs(3600),
            ..PostureOptions::default()
        };
        let state = Arc::new(State::new("node-1"));
        let task = tokio::spawn(run(rx, options, posture.clone(), Arc::clone(&state)));
        let loaded = load_str(OPEN_NAMESPACE, "shop.yaml").unwrap();
        tx.send_replace(Some(Arc::new(loaded)));
        // Not before the agent is ready; then the snapshot published meanwhile.
        tokio::time::sleep(READY_POLL * 3).await;
        assert_eq!(posture.runs.get(), 0);
        state.set_ready();
        let deadline = Instant::now() + Duration::from_secs(10);
        while posture.runs.get() == 0 {
            assert!(Instant::now() < deadline, "the posture task never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A second snapshot within the interval is not linted yet.
        tx.send_replace(Some(Arc::new(Loaded::default())));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(posture.runs.get(), 1);
        let labels = FindingLabels {
            rule: LabelValue(RuleId::UnprotectedPod),
            severity: LabelValue(Severity::Warning),
        };
        assert_eq!(posture.findings.get_or_create(&labels).get(), 1);
        task.abort();
    }
}
