//! `InvalidNetworkPolicy` and `InvalidClusterNetworkPolicy` Events: what an invalid policy is,
//! its Event, and which versions were reported already ([`Reported`]: one Event per version of
//! a policy and agent). A ClusterNetworkPolicy is cluster-scoped, so its Events go to the
//! `default` namespace (kube's recorder does that; `kubectl describe cnp NAME` finds them).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::{Events, limit_note};
use crate::model::{FieldError, ObjectKey};

/// The reason on every invalid-NetworkPolicy Event.
pub const REASON: &str = "InvalidNetworkPolicy";
/// The reason on every invalid-ClusterNetworkPolicy Event.
pub const CLUSTER_REASON: &str = "InvalidClusterNetworkPolicy";

/// Which kind of policy is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// A `networking.k8s.io/v1` NetworkPolicy (its key is `namespace/name`).
    NetworkPolicy,
    /// A `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy (its key has an empty
    /// namespace).
    ClusterNetworkPolicy,
}

impl PolicyKind {
    /// The Event reason for this kind.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NetworkPolicy => REASON,
            Self::ClusterNetworkPolicy => CLUSTER_REASON,
        }
    }
}

/// The identity of an API object an Event can be about: which version of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentity {
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.resourceVersion`: which version the errors are about.
    pub resource_version: Option<String>,
}

/// A NetworkPolicy or ClusterNetworkPolicy that failed validation, with what identifies the
/// version that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPolicy {
    /// Which kind.
    pub kind: PolicyKind,
    /// `namespace/name` (a ClusterNetworkPolicy's namespace is empty).
    pub key: ObjectKey,
    /// uid and resourceVersion.
    pub identity: ObjectIdentity,
    /// The field errors.
    pub errors: Vec<FieldError>,
}

/// The Event and the object it is about.
pub(super) fn event(policy: &InvalidPolicy) -> (Event, ObjectReference) {
    let (api_version, kind, namespace) = match policy.kind {
        PolicyKind::NetworkPolicy => (
            "networking.k8s.io/v1",
            "NetworkPolicy",
            Some(policy.key.namespace.clone()),
        ),
        PolicyKind::ClusterNetworkPolicy => (
            crate::policy::cluster::api::API_VERSION,
            crate::policy::cluster::api::KIND,
            None,
        ),
    };
    let reference = ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        namespace,
        name: Some(policy.key.name.clone()),
        uid: policy.identity.uid.clone(),
        resource_version: policy.identity.resource_version.clone(),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: policy.kind.reason().into(),
        note: Some(note(policy)),
        action: "Enforce".into(),
        secondary: None,
    };
    (event, reference)
}

/// "invalid, enforced fail-closed (its pods stay isolated): spec.ingress[0]...: why; ..."
/// (a ClusterNetworkPolicy: "... (it only denies: no rule accepts or passes)").
pub fn note(policy: &InvalidPolicy) -> String {
    let errors: Vec<String> = policy
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    let how = match policy.kind {
        PolicyKind::NetworkPolicy => "its pods stay isolated",
        PolicyKind::ClusterNetworkPolicy => "it only denies: no rule accepts or passes",
    };
    limit_note(format!(
        "invalid, enforced fail-closed ({how}): {}",
        errors.join("; ")
    ))
}

/// Which version of each invalid policy was reported, so that each version gets one Event.
#[derive(Debug, Default)]
pub struct Reported(HashMap<ObjectKey, Option<String>>);

impl Reported {
    /// Queues an Event for each policy version in `invalid` not reported yet, and forgets the
    /// policies no longer invalid (fixed or deleted).
    pub fn report(&mut self, events: &Events, invalid: &[InvalidPolicy]) {
        self.0
            .retain(|key, _| invalid.iter().any(|p| &p.key == key));
        for policy in invalid {
            let version = &policy.identity.resource_version;
            if self.0.get(&policy.key) == Some(version) {
                continue;
            }
            if events.invalid_policy(policy) {
                self.0.insert(policy.key.clone(), version.clone());
            }
        }
    }
}
