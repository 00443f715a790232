//! The Kubernetes Events the agent writes, through one writer:
//!
//! - `InvalidNetworkPolicy` (Warning) on a NetworkPolicy that failed validation, once per
//!   version of the policy ([`invalid_policy`]), so `kubectl describe networkpolicy` shows why
//!   it allows nothing; `InvalidClusterNetworkPolicy` likewise on a ClusterNetworkPolicy (in
//!   the `default` namespace, the object being cluster-scoped);
//! - `PolicyDenied` (Warning) on a pod whose traffic default-deny dropped, at most one per pod
//!   per minute ([`denied`]), so `kubectl describe pod` shows it next to the pod's other events.
//!
//! One background task writes both kinds with one kube-rs [`Recorder`] (controller
//! `kube-nftpol`, reporting instance the node), which turns repeats into an Event series. Each
//! kind waits in a bounded queue of its own, so a flood of denied flows never crowds out an
//! invalid policy, and a slow or absent API server never holds up enforcement: what does not
//! fit is dropped and counted (`kube_nftpol_source_event_errors_total`).

pub mod denied;
pub mod invalid_policy;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::flow_line::{Action, FlowLine};
pub use invalid_policy::{InvalidPolicy, ObjectIdentity, PolicyKind, Reported};

/// Invalid policies waiting for the writer; more are dropped (and counted).
const INVALID_POLICY_QUEUE: usize = 256;
/// Denied flows waiting for the writer; more are dropped (and counted).
const DENIED_QUEUE: usize = 1024;
/// The API limits an Event's note to 1 KiB.
const NOTE_LIMIT: usize = 1024;

/// The Event writer's metrics (`kube_nftpol_source_events_total`,
/// `kube_nftpol_source_event_errors_total`: the source wrote the first Events).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Events written.
    pub written: Counter,
    /// Events that could not be written or were dropped from a full queue.
    pub errors: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("source");
        let help = "Kubernetes Events written (invalid policies, PolicyDenied)";
        sub.register("events", help, metrics.written.clone());
        let help = "Kubernetes Events that could not be written or were dropped";
        sub.register("event_errors", help, metrics.errors.clone());
        metrics
    }
}

/// Hands Events to the writer task; cheap to clone, never waits.
#[derive(Debug, Clone)]
pub struct Events {
    invalid_policies: mpsc::Sender<InvalidPolicy>,
    denied: mpsc::Sender<FlowLine>,
    metrics: Metrics,
}

impl Events {
    /// Starts the writer task; `node` is the reporting instance.
    pub fn spawn(client: Client, node: String, metrics: Metrics) -> Self {
        let (invalid_policies, invalid_rx) = mpsc::channel(INVALID_POLICY_QUEUE);
        let (denied, denied_rx) = mpsc::channel(DENIED_QUEUE);
        let reporter = Reporter {
            controller: "kube-nftpol".into(),
            instance: Some(node),
        };
        let writer = Writer {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: metrics.clone(),
        };
        tokio::spawn(writer.run(invalid_rx, denied_rx));
        Self {
            invalid_policies,
            denied,
            metrics,
        }
    }

    /// Queues an `InvalidNetworkPolicy` Event; false (and counted) when the queue is full.
    pub fn invalid_policy(&self, policy: &InvalidPolicy) -> bool {
        let queued = self.invalid_policies.try_send(policy.clone()).is_ok();
        if !queued {
            self.metrics.errors.inc();
        }
        queued
    }

    /// Queues a denied flow (of a pod the snapshot knows) for a `PolicyDenied` Event. Audited
    /// flows went through: their drop-log line and metric say so, and they get no Event; nor
    /// do allowed ones.
    pub fn denied(&self, line: &FlowLine) {
        if line.pod.unknown || line.action != Action::Deny {
            return;
        }
        if self.denied.try_send(line.clone()).is_err() {
            self.metrics.errors.inc();
        }
    }
}

/// The writer task's state.
struct Writer {
    recorder: Recorder,
    /// Reads a denied pod's uid (the snapshot keeps none).
    client: Client,
    metrics: Metrics,
}

impl Writer {
    async fn run(
        self,
        mut invalid_policies: mpsc::Receiver<InvalidPolicy>,
        mut denied: mpsc::Receiver<FlowLine>,
    ) {
        let mut limiter = denied::Limiter::default();
        loop {
            tokio::select! {
                // Invalid policies first: they are few and each one matters.
                biased;
                Some(policy) = invalid_policies.recv() => {
                    let (event, reference) = invalid_policy::event(&policy);
                    self.publish(&event, &reference, policy.kind.reason()).await;
                }
                Some(line) = denied.recv() => {
                    let pod = (line.pod.namespace.clone(), line.pod.name.clone());
                    let Some(held_back) = limiter.admit(pod, std::time::Instant::now()) else {
                        continue;
                    };
                    // One read of the pod's metadata per Event (at most one a minute per pod).
                    let Some(uid) = self.pod_uid(&line).await else { continue };
                    let (event, reference) = denied::event(&line, held_back, uid);
                    self.publish(&event, &reference, denied::REASON).await;
                }
                else => return,
            }
        }
    }

    /// The uid of the line's pod; `None` when the pod is gone (no Event then) or cannot be
    /// read (counted).
    async fn pod_uid(&self, line: &FlowLine) -> Option<Option<String>> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &line.pod.namespace);
        match pods.get_metadata_opt(&line.pod.name).await {
            Ok(Some(pod)) => Some(pod.metadata.uid),
            Ok(None) => {
                debug!(pod = %format!("{}/{}", line.pod.namespace, line.pod.name), "pod gone; no PolicyDenied Event");
                None
            }
            Err(error) => {
                self.metrics.errors.inc();
                warn!(%error, "cannot read the pod of a PolicyDenied Event");
                None
            }
        }
    }

    async fn publish(&self, event: &Event, reference: &ObjectReference, reason: &str) {
        let object = format!(
            "{}/{}",
            reference.namespace.as_deref().unwrap_or_default(),
            reference.name.as_deref().unwrap_or_default()
        );
        match self.recorder.publish(event, reference).await {
            Ok(()) => {
                self.metrics.written.inc();
                debug!(%object, reason, "Event written");
            }
            Err(error) => {
                self.metrics.errors.inc();
                warn!(%object, reason, %error, "cannot write an Event");
            }
        }
    }
}

/// A note cut to the API's 1 KiB limit (at a character boundary, ending in `...`).
fn limit_note(mut note: String) -> String {
    if note.len() > NOTE_LIMIT {
        let mut cut = NOTE_LIMIT - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    note
}
