//! A namespace as policy sees it: its name, its labels (always with the name label) and
//! whether its default deny enforces or audits.

use std::fmt;

use k8s_openapi::api::core::v1 as core;
use serde::Serialize;

use super::{Labels, NAMESPACE_NAME_LABEL};

/// The namespace annotation that selects audit mode: `kube-nftpol.io/enforcement: audit`.
pub const ENFORCEMENT_ANNOTATION: &str = "kube-nftpol.io/enforcement";

/// The namespace annotation that selects observe mode: `kube-nftpol.io/observe: "true"`: the
/// first packet of every new connection of the namespace's pods is logged with its verdict.
pub const OBSERVE_ANNOTATION: &str = "kube-nftpol.io/observe";

/// What a namespace's default deny does with the packets no policy allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Log and drop them (the NetworkPolicy semantics).
    #[default]
    Enforce,
    /// Log them, count them, and let them through: see what enforcing would block before
    /// enforcing it.
    Audit,
}

impl Enforcement {
    /// From the value of [`ENFORCEMENT_ANNOTATION`]: `audit` audits; anything else, or no
    /// annotation, enforces (a typo must not open a namespace).
    pub fn from_annotation(value: Option<&str>) -> Self {
        match value {
            Some("audit") => Self::Audit,
            _ => Self::Enforce,
        }
    }

    /// `enforce` or `audit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
        }
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A namespace: its name, labels and enforcement mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Namespace {
    /// The namespace name.
    pub name: String,
    /// Labels, always including [`NAMESPACE_NAME_LABEL`].
    pub labels: Labels,
    /// From the [`ENFORCEMENT_ANNOTATION`] annotation; enforce when absent.
    pub enforcement: Enforcement,
    /// From the [`OBSERVE_ANNOTATION`] annotation (`"true"`); off when absent.
    pub observe: bool,
    /// Whether it has a deletion timestamp (Terminating): nothing new can be created in it.
    pub terminating: bool,
}

impl Namespace {
    /// A namespace with only its name label, for pods whose namespace object is not known.
    pub fn implicit(name: &str) -> Self {
        Self::new(name, Labels::new())
    }

    /// An enforced namespace with the given labels plus the name label.
    pub fn new(name: &str, mut labels: Labels) -> Self {
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned());
        Self {
            name: name.to_owned(),
            labels,
            enforcement: Enforcement::Enforce,
            observe: false,
            terminating: false,
        }
    }

    /// Converts a Kubernetes Namespace (labels, the enforcement and observe annotations, whether
    /// it is being deleted); `None` when it has no name.
    pub fn from_k8s(namespace: &core::Namespace) -> Option<Self> {
        let name = namespace.metadata.name.as_deref()?;
        let mut converted = Self::new(name, namespace.metadata.labels.clone().unwrap_or_default());
        let annotation = |name: &str| {
            namespace
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(name))
                .map(String::as_str)
        };
        converted.enforcement = Enforcement::from_annotation(annotation(ENFORCEMENT_ANNOTATION));
        converted.observe = annotation(OBSERVE_ANNOTATION) == Some("true");
        converted.terminating = namespace.metadata.deletion_timestamp.is_some();
        Some(converted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Snapshot;

    fn namespace(annotations: serde_json::Value) -> core::Namespace {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop", "annotations": annotations}
        }))
        .unwrap()
    }

    #[test]
    fn the_enforcement_annotation_audits_a_namespace_and_anything_else_enforces() {
        let enforcement = |annotations| {
            Namespace::from_k8s(&namespace(annotations))
                .unwrap()
                .enforcement
        };
        let key = ENFORCEMENT_ANNOTATION;
        assert_eq!(
            enforcement(serde_json::json!({key: "audit"})),
            Enforcement::Audit
        );
        for value in ["enforce", "Audit", "audit ", "", "yes"] {
            assert_eq!(
                enforcement(serde_json::json!({key: value})),
                Enforcement::Enforce,
                "{value:?}"
            );
        }
        assert_eq!(enforcement(serde_json::json!({})), Enforcement::Enforce);
        assert_eq!(enforcement(serde_json::Value::Null), Enforcement::Enforce);
        let mut snapshot = Snapshot::new();
        snapshot.upsert_namespace(
            Namespace::from_k8s(&namespace(serde_json::json!({key: "audit"}))).unwrap(),
        );
        assert_eq!(snapshot.enforcement("shop"), Enforcement::Audit);
        assert_eq!(snapshot.enforcement("unknown"), Enforcement::Enforce);
    }
}
