//! Policy semantics: how a Kubernetes NetworkPolicy becomes the validated form the engine
//! enforces ([`crate::model::Policy`]), what that form selects, the same for
//! ClusterNetworkPolicy ([`cluster`]), and [`evaluate`], the verdict for one flow through every
//! tier (Admin, NetworkPolicy, Baseline) with its reasons.
//!
//! Everything here is pure. [`Policy::from_k8s`] applies the API's defaulting (policyTypes,
//! TCP, empty versus missing lists) and its validation. A policy that fails validation is kept
//! in a fail-closed form: it still isolates the directions it declares, but allows nothing,
//! and its errors name the field. The compiler ([`crate::compile`](mod@crate::compile)) and the evaluator read the
//! same types and share the matching helpers here, so the ruleset in the kernel and `evaluate`
//! agree by construction; the integration suites check that with real packets.

pub mod cluster;
mod evaluate;
mod parse;
mod selector;

use std::net::IpAddr;

use crate::model::{
    Labels, NamespaceScope, Peer, PeerKind, Pod, Policy, PortMatch, PortSpec, Protocol, Snapshot,
};

pub use evaluate::{
    ClusterRuleRef, DirectionVerdict, Endpoint, Flow, MissReason, RuleMiss, RuleRef, Verdict,
    evaluate,
};

impl Policy {
    /// Whether the policy selects the pod: same namespace, selector matches.
    pub fn selects(&self, pod: &Pod) -> bool {
        pod.key.namespace == self.key.namespace && self.pod_selector.matches(&pod.labels)
    }
}

impl Peer {
    /// Whether the peer selects the pod, for a rule of a policy in `policy_namespace`.
    /// Pods that are not policy endpoints (finished, hostNetwork, no IP) are never selected.
    pub fn selects_pod(&self, snapshot: &Snapshot, policy_namespace: &str, pod: &Pod) -> bool {
        if !pod.is_policy_endpoint() {
            return false;
        }
        match &self.kind {
            PeerKind::Pods { namespaces, pods } => {
                namespace_in_scope(snapshot, namespaces, policy_namespace, &pod.key.namespace)
                    && pods.matches(&pod.labels)
            }
            PeerKind::IpBlock { .. } => pod.ips.iter().any(|ip| self.contains_ip(*ip)),
        }
    }

    /// Whether the peer's ipBlock contains the address (always false for pod peers).
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        match &self.kind {
            PeerKind::IpBlock { cidr, except } => {
                cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
            }
            PeerKind::Pods { .. } => false,
        }
    }
}

/// Whether `namespace` is covered by a pod peer's namespace scope.
pub fn namespace_in_scope(
    snapshot: &Snapshot,
    scope: &NamespaceScope,
    policy_namespace: &str,
    namespace: &str,
) -> bool {
    match scope {
        NamespaceScope::PolicyNamespace => namespace == policy_namespace,
        NamespaceScope::Matching(selector) => {
            selector.is_everything() || selector.matches(&snapshot.namespace_labels(namespace))
        }
    }
}

impl NamespaceScope {
    /// [`namespace_in_scope`] for a caller that already holds the namespace's labels (as
    /// [`Snapshot::namespace_labels`] gives them).
    pub fn covers(&self, policy_namespace: &str, namespace: &str, labels: &Labels) -> bool {
        match self {
            Self::PolicyNamespace => namespace == policy_namespace,
            Self::Matching(selector) => selector.is_everything() || selector.matches(labels),
        }
    }
}

impl PortMatch {
    /// Whether a packet to `port`/`protocol` on `destination` matches. Named ports resolve on
    /// the destination pod; a name that does not resolve (or an external destination) matches
    /// nothing.
    pub fn matches(&self, protocol: Protocol, port: u16, destination: Option<&Pod>) -> bool {
        if self.protocol != protocol {
            return false;
        }
        match &self.port {
            None => true,
            Some(PortSpec::Range { start, end }) => (*start..=*end).contains(&port),
            Some(PortSpec::Named(name)) => destination
                .and_then(|pod| pod.named_port(name, protocol))
                .is_some_and(|resolved| resolved == port),
        }
    }
}
