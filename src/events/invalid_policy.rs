//! `InvalidNetworkPolicy` Events: what an invalid policy is, its Event, and which versions
//! were reported already ([`Reported`]: one Event per version of a policy and agent).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::{Events, limit_note};
use crate::model::{FieldError, ObjectKey};

/// The reason on every invalid-policy Event.
pub const REASON: &str = "InvalidNetworkPolicy";

/// The identity of an API object an Event can be about: which version of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentity {
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.resourceVersion`: which version the errors are about.
    pub resource_version: Option<String>,
}

/// A NetworkPolicy that failed validation, with what identifies the version that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPolicy {
    /// `namespace/name`.
    pub key: ObjectKey,
    /// uid and resourceVersion.
    pub identity: ObjectIdentity,
    /// The field errors.
    pub errors: Vec<FieldError>,
}

/// The Event and the object it is about.
pub(super) fn event(policy: &InvalidPolicy) -> (Event, ObjectReference) {
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
        reason: REASON.into(),
        note: Some(note(policy)),
        action: "Enforce".into(),
        secondary: None,
    };
    (event, reference)
}

/// "invalid, enforced fail-closed (its pods stay isolated): spec.ingress[0]...: why; ..."
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
