//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`): the object as the API serves it
//! ([`api`]), its validation into the enforced form [`ClusterPolicy`] (the private `parse`
//! module: limits, CEL rules, the fail-closed form of an invalid policy), and what its subjects,
//! peers and ports select. What a tier decides for a flow is [`super::evaluate`]'s, beside the
//! NetworkPolicies, so one evaluator orders every tier.

pub mod api;
mod parse;

use std::net::IpAddr;

use crate::model::{
    ClusterPeer, ClusterPolicy, ClusterPort, Error, Pod, Protocol, Selector, Snapshot, Subject,
};

impl Snapshot {
    /// Adds or replaces a ClusterNetworkPolicy object, validating it. Invalid policies are kept
    /// in their fail-closed form; their errors are in [`ClusterPolicy::errors`].
    pub fn upsert_cluster_network_policy(
        &mut self,
        object: &api::ClusterNetworkPolicy,
    ) -> Result<(), Error> {
        let policy = ClusterPolicy::from_api(object).ok_or(Error::MissingName {
            kind: "ClusterNetworkPolicy",
        })?;
        self.upsert_cluster_policy(policy);
        Ok(())
    }
}

impl ClusterPolicy {
    /// Whether the policy applies to the pod (host-network, finished and unaddressed pods are
    /// never subjects).
    pub fn selects(&self, snapshot: &Snapshot, pod: &Pod) -> bool {
        self.subject.selects(snapshot, pod)
    }

    /// Whether the policy applies to the pod and has rules for `direction`.
    pub fn applies(
        &self,
        snapshot: &Snapshot,
        pod: &Pod,
        direction: crate::model::Direction,
    ) -> bool {
        !self.rules(direction).is_empty() && self.selects(snapshot, pod)
    }
}

impl Subject {
    /// Whether the subject selects the pod: a policy endpoint whose labels it covers.
    pub fn selects(&self, snapshot: &Snapshot, pod: &Pod) -> bool {
        pod.is_policy_endpoint() && self.covers(snapshot, pod)
    }

    /// Whether the subject's selectors match the pod's labels and namespace, whatever the
    /// pod's state (a pod still waiting for its IP is covered, not yet selected).
    pub fn covers(&self, snapshot: &Snapshot, pod: &Pod) -> bool {
        match self {
            Self::Namespaces(namespaces) => in_namespaces(snapshot, pod, namespaces, None),
            Self::Pods { namespaces, pods } => in_namespaces(snapshot, pod, namespaces, Some(pods)),
        }
    }
}

/// Whether the pod's namespace matches `namespaces` and, when given, its labels `pods` (the
/// `namespaces` and `pods` forms of subjects and peers).
fn in_namespaces(
    snapshot: &Snapshot,
    pod: &Pod,
    namespaces: &Selector,
    pods: Option<&Selector>,
) -> bool {
    pods.is_none_or(|pods| pods.matches(&pod.labels))
        && namespaces.matches(&snapshot.namespace_labels(&pod.key.namespace))
}

impl ClusterPeer {
    /// Whether the peer selects the pod as a pod (its labels and namespace), for the
    /// `namespaces` and `pods` peers; host-network and finished pods never.
    pub fn selects_pod(&self, snapshot: &Snapshot, pod: &Pod) -> bool {
        if !pod.is_policy_endpoint() {
            return false;
        }
        match self {
            Self::Namespaces(namespaces) => in_namespaces(snapshot, pod, namespaces, None),
            Self::Pods { namespaces, pods } => in_namespaces(snapshot, pod, namespaces, Some(pods)),
            Self::Nodes(_) | Self::Networks(_) | Self::DomainNames(_) | Self::Any => false,
        }
    }

    /// Whether the peer matches an address by address: `networks` (pod addresses included),
    /// `nodes` (the addresses of the matching nodes) and the fail-closed `Any`.
    pub fn contains_ip(&self, snapshot: &Snapshot, ip: IpAddr) -> bool {
        match self {
            Self::Networks(networks) => networks.iter().any(|net| net.contains(&ip)),
            Self::Nodes(selector) => snapshot
                .nodes()
                .any(|node| node.addresses.contains(&ip) && selector.matches(&node.labels)),
            Self::Any => true,
            Self::Namespaces(_) | Self::Pods { .. } | Self::DomainNames(_) => false,
        }
    }
}

impl ClusterPort {
    /// Whether a packet to `port`/`protocol` on `destination` matches. A named port resolves on
    /// the destination pod, with the protocol the pod gives it; an external destination has
    /// none.
    pub fn matches(&self, protocol: Protocol, port: u16, destination: Option<&Pod>) -> bool {
        match self {
            Self::Range {
                protocol: wanted,
                start,
                end,
            } => *wanted == protocol && (*start..=*end).contains(&port),
            Self::Named(name) => destination.is_some_and(|pod| {
                pod.ports.iter().any(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol == protocol
                        && p.port == port
                })
            }),
        }
    }
}
