//! Warning Events on invalid NetworkPolicies: `kubectl describe networkpolicy` shows why a
//! policy allows nothing.
//!
//! One Event per version (resourceVersion) of an invalid policy and agent, written by a
//! background task behind a bounded queue, so a slow or absent API server never holds up
//! enforcement. kube-rs' [`Recorder`] turns repeats into an Event series.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::InvalidPolicy;
use crate::http::Shared;
use crate::model::ObjectKey;

/// The reason on every invalid-policy Event.
pub const INVALID_POLICY_REASON: &str = "InvalidNetworkPolicy";
/// Events waiting to be written; more are dropped (and counted).
const QUEUE: usize = 256;
/// The API limits an Event's note to 1 KiB.
const NOTE_LIMIT: usize = 1024;

/// Hands invalid policies to the Event writer, once per policy version.
pub struct PolicyEvents {
    queue: mpsc::Sender<InvalidPolicy>,
    reported: HashMap<ObjectKey, Option<String>>,
    shared: Arc<Shared>,
}

impl PolicyEvents {
    /// Starts the writer task.
    pub fn spawn(client: Client, node: String, shared: Arc<Shared>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let reporter = Reporter {
            controller: "kube-nftpol".into(),
            instance: Some(node),
        };
        tokio::spawn(write(
            Recorder::new(client, reporter),
            rx,
            Arc::clone(&shared),
        ));
        Self {
            queue,
            reported: HashMap::new(),
            shared,
        }
    }

    /// Queues an Event for each policy version not reported yet; forgets fixed policies.
    pub fn report(&mut self, invalid: &[InvalidPolicy]) {
        self.reported
            .retain(|key, _| invalid.iter().any(|p| &p.key == key));
        for policy in invalid {
            let version = &policy.identity.resource_version;
            if self.reported.get(&policy.key) == Some(version) {
                continue;
            }
            match self.queue.try_send(policy.clone()) {
                Ok(()) => {
                    self.reported.insert(policy.key.clone(), version.clone());
                }
                Err(_) => {
                    self.shared.metrics.source.event_errors.inc();
                }
            }
        }
    }
}

async fn write(recorder: Recorder, mut rx: mpsc::Receiver<InvalidPolicy>, shared: Arc<Shared>) {
    while let Some(policy) = rx.recv().await {
        let reference = ObjectReference {
            api_version: Some("networking.k8s.io/v1".into()),
            kind: Some("NetworkPolicy".into()),
            namespace: Some(policy.key.namespace.clone()),
            name: Some(policy.key.name.clone()),
            uid: policy.identity.uid.clone(),
            resource_version: policy.identity.resource_version.clone(),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: INVALID_POLICY_REASON.into(),
            note: Some(note(&policy)),
            action: "Enforce".into(),
            secondary: None,
        };
        match recorder.publish(&event, &reference).await {
            Ok(()) => {
                shared.metrics.source.events.inc();
                debug!(policy = %policy.key, "invalid-policy Event written");
            }
            Err(error) => {
                shared.metrics.source.event_errors.inc();
                warn!(policy = %policy.key, %error, "cannot write the invalid-policy Event");
            }
        }
    }
}

/// "invalid, enforced fail-closed (allows nothing): spec.ingress[0]...: why; ..."
pub fn note(policy: &InvalidPolicy) -> String {
    let errors: Vec<String> = policy
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    limit_note(format!(
        "invalid, enforced fail-closed (its pods stay isolated): {}",
        errors.join("; ")
    ))
}

/// The recorder every Event of this agent goes through: controller `kube-nftpol`, reporting
/// instance the node.
pub(crate) fn recorder(client: Client, node: String) -> Recorder {
    let reporter = Reporter {
        controller: "kube-nftpol".into(),
        instance: Some(node),
    };
    Recorder::new(client, reporter)
}

/// A note cut to the API's 1 KiB limit (at a character boundary, ending in `...`).
pub(crate) fn limit_note(mut note: String) -> String {
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
