//! The cluster model and the shared vocabulary: what every other part of kube-nftpol talks
//! about.
//!
//! A [`Snapshot`] is plain data built from k8s-openapi objects, so the manifest directory and
//! the API watch fill it the same way: [`Namespace`]s, [`Pod`]s, [`Policy`]s (NetworkPolicies
//! in their validated form), [`ClusterPolicy`]s (ClusterNetworkPolicies, validated) and
//! [`Node`]s (for ClusterNetworkPolicy node peers). Beside it, the words the rest uses: [`ObjectKey`], [`Labels`] and
//! [`Selector`]s, [`Direction`], [`Protocol`] and [`IpProtocol`], a node's [`PodInterfaces`].
//!
//! This module owns the conversion from Kubernetes Namespaces and Pods and the indexes the
//! compiler and the evaluator need. It does not decide what a policy means, nor turn a
//! Kubernetes NetworkPolicy into a [`Policy`]: that is [`crate::policy`], which depends on this
//! module and never the reverse. No I/O.

mod cluster_policy;
mod interfaces;
mod namespace;
mod namespaced;
mod network_policy;
mod node;
mod object_ref;
mod pod;
mod selector;
mod snapshot;
mod traffic;

use std::fmt;

use serde::Serialize;

pub use cluster_policy::{
    ClusterAction, ClusterPeer, ClusterPolicy, ClusterPort, ClusterRule, MAX_ITEMS, MAX_PRIORITY,
    MAX_RULE_NAME, Subject, Tier,
};
pub use interfaces::PodInterfaces;
pub use namespace::{ENFORCEMENT_ANNOTATION, Enforcement, Namespace, OBSERVE_ANNOTATION};
pub use network_policy::{
    FieldError, NamespaceScope, Peer, PeerKind, Policy, PortMatch, PortSpec, Rule,
};
pub use node::Node;
pub use object_ref::{ObjectKind, ObjectRef};
pub use pod::{ContainerPort, Error, Owner, Pod, PodPhase};
pub use selector::{Labels, Operator, Requirement, Selector};
pub use snapshot::Snapshot;
pub use traffic::{Direction, IpProtocol, Protocol};

/// The label every namespace carries with its own name (API servers 1.21+ add it; the snapshot
/// adds it when an older server or a manifest leaves it out).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The namespace objects without one are placed in, as `kubectl` does.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A namespaced object's identity: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    /// The namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key from its two parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
