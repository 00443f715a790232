//! The cluster snapshot: namespaces, pods and NetworkPolicies as the policy engine sees them.
//!
//! A [`Snapshot`] is plain data built from k8s-openapi objects, so the manifest directory and the
//! API watch fill it the same way. It owns the conversion from Kubernetes objects (labels, IPs,
//! phases, container ports) and the indexes the compiler and the evaluator need; it does not
//! decide what a policy means (that is [`crate::policy`]) and does no I/O. Storage by namespace,
//! with its label index, is [`namespaced`].

mod namespaced;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as networking;
use serde::Serialize;

use crate::policy::{Policy, Selector};
use namespaced::{Keyed, Labelled, NamespacedMap};

/// Object labels, ordered so everything derived from them is deterministic.
pub type Labels = BTreeMap<String, String>;

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

/// A transport protocol a NetworkPolicy port can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP, IP protocol 6 (the default wherever Kubernetes omits the protocol).
    Tcp,
    /// UDP, IP protocol 17.
    Udp,
    /// SCTP, IP protocol 132.
    Sctp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`); `None` for anything else.
    pub fn from_k8s(value: &str) -> Option<Self> {
        match value {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The lowercase name nftables and users write (`tcp`, `udp`, `sctp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }

    /// Parses a protocol in either case (`tcp`, `TCP`).
    pub fn parse_any_case(value: &str) -> Option<Self> {
        Self::from_k8s(&value.to_ascii_uppercase())
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The namespace annotation that selects audit mode: `kube-nftpol.io/enforcement: audit`.
pub const ENFORCEMENT_ANNOTATION: &str = "kube-nftpol.io/enforcement";

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
            terminating: false,
        }
    }

    /// Converts a Kubernetes Namespace (labels, the enforcement annotation, whether it is being
    /// deleted); `None` when it has no name.
    pub fn from_k8s(namespace: &core::Namespace) -> Option<Self> {
        let name = namespace.metadata.name.as_deref()?;
        let mut converted = Self::new(name, namespace.metadata.labels.clone().unwrap_or_default());
        let annotation = namespace
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ENFORCEMENT_ANNOTATION));
        converted.enforcement = Enforcement::from_annotation(annotation.map(String::as_str));
        converted.terminating = namespace.metadata.deletion_timestamp.is_some();
        Some(converted)
    }
}

/// The pod phase, as far as policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PodPhase {
    /// Pending, Running, Unknown or absent: the pod may use its IPs.
    Active,
    /// Succeeded or Failed: the pod is done and its IPs may already belong to another pod, so
    /// it is ignored everywhere (kube-router #1056, Antrea #6507).
    Finished,
}

/// A container port, used to resolve named ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ContainerPort {
    /// The port name, when the container names it.
    pub name: Option<String>,
    /// The port number.
    pub port: u16,
    /// The protocol (TCP when the manifest omits it).
    pub protocol: Protocol,
}

/// The controller that owns a pod, for grouping pods into workloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// The owner's kind (`ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job`, ...).
    pub kind: String,
    /// The owner's name.
    pub name: String,
}

/// A pod: identity, labels, placement, addresses and ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pod {
    /// `namespace/name`.
    pub key: ObjectKey,
    /// Pod labels.
    pub labels: Labels,
    /// The node the pod is scheduled on (`spec.nodeName`).
    pub node: Option<String>,
    /// The pod's IPs from `status.podIPs` (or `status.podIP`), without duplicates.
    pub ips: Vec<IpAddr>,
    /// Whether the pod is running or done.
    pub phase: PodPhase,
    /// A hostNetwork pod shares its node's addresses and is treated as node traffic.
    pub host_network: bool,
    /// Set once the pod has a deletion timestamp; such pods stay policed until they are gone.
    pub terminating: bool,
    /// Ports declared by the pod's containers (init containers included, as the API does).
    pub ports: Vec<ContainerPort>,
    /// The controlling owner, if any.
    pub owner: Option<Owner>,
}

/// Why a Kubernetes object could not become part of the snapshot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The object has no `metadata.name`.
    #[error("{kind} without metadata.name")]
    MissingName {
        /// The object's kind.
        kind: &'static str,
    },
}

impl Pod {
    /// Converts a Kubernetes Pod. IP strings that do not parse are left out (and reported in the
    /// returned list of problems) rather than failing the whole pod.
    pub fn from_k8s(pod: &core::Pod) -> Result<(Self, Vec<String>), Error> {
        let name = pod
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingName { kind: "Pod" })?;
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let mut problems = Vec::new();

        let mut ip_strings: Vec<&str> = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|ip| ip.ip.as_str()).collect())
            .unwrap_or_default();
        if let Some(ip) = status.and_then(|s| s.pod_ip.as_deref()) {
            ip_strings.push(ip);
        }
        let mut ips = Vec::new();
        for text in ip_strings {
            match text.parse::<IpAddr>() {
                Ok(ip) if !ips.contains(&ip) => ips.push(ip),
                Ok(_) => {}
                Err(_) => {
                    problems.push(format!("pod {namespace}/{name}: ignoring bad IP {text:?}"))
                }
            }
        }

        let phase = match status.and_then(|s| s.phase.as_deref()) {
            Some("Succeeded" | "Failed") => PodPhase::Finished,
            _ => PodPhase::Active,
        };
        let mut ports = Vec::new();
        if let Some(spec) = spec {
            let containers = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten());
            for port in containers.flat_map(|c| c.ports.iter().flatten()) {
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                let (Some(protocol), Ok(number)) = (
                    Protocol::from_k8s(protocol),
                    u16::try_from(port.container_port),
                ) else {
                    problems.push(format!(
                        "pod {namespace}/{name}: ignoring container port {} {protocol}",
                        port.container_port
                    ));
                    continue;
                };
                ports.push(ContainerPort {
                    name: port.name.clone(),
                    port: number,
                    protocol,
                });
            }
        }
        ports.sort();
        ports.dedup();
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let pod = Pod {
            key: ObjectKey::new(namespace, name),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            node: spec.and_then(|s| s.node_name.clone()),
            ips,
            phase,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            ports,
            owner: owner.map(|o| Owner {
                kind: o.kind.clone(),
                name: o.name.clone(),
            }),
        };
        Ok((pod, problems))
    }

    /// A running pod with labels, a node and IPs, and nothing else (no ports, no owner): what
    /// tests, benchmarks and simulations build clusters from.
    pub fn running(
        key: ObjectKey,
        labels: Labels,
        node: impl Into<String>,
        ips: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        Self {
            key,
            labels,
            node: Some(node.into()),
            ips: ips.into_iter().collect(),
            phase: PodPhase::Active,
            host_network: false,
            terminating: false,
            ports: Vec::new(),
            owner: None,
        }
    }

    /// Whether the pod's traffic is pod traffic that policy governs: active, not hostNetwork,
    /// and addressed. Finished pods and hostNetwork pods are never policed and never peers.
    pub fn is_policy_endpoint(&self) -> bool {
        self.phase == PodPhase::Active && !self.host_network && !self.ips.is_empty()
    }

    /// Resolves a named port on this pod for a protocol (name and protocol must both match).
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }
}

/// The cluster as the agent knows it at one moment.
///
/// Objects are held behind `Arc`s, pods and policies grouped by namespace: the Kubernetes
/// source publishes a copy of the snapshot after every batch of watch events, and at 10,000
/// pods in 500 namespaces that copy costs a reference count per namespace, not a copy of every
/// pod's key, labels, ports and names (issue 7).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    namespaces: BTreeMap<String, Arc<Namespace>>,
    pods: NamespacedMap<Pod>,
    policies: NamespacedMap<Policy>,
}

impl Keyed for Pod {
    fn key(&self) -> &ObjectKey {
        &self.key
    }
}

impl Keyed for Policy {
    fn key(&self) -> &ObjectKey {
        &self.key
    }
}

impl Labelled for Pod {
    fn labels(&self) -> &Labels {
        &self.labels
    }
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a namespace.
    pub fn upsert_namespace(&mut self, namespace: Namespace) {
        self.namespaces
            .insert(namespace.name.clone(), Arc::new(namespace));
    }

    /// Adds or replaces a pod. Its namespace is created implicitly when unknown.
    pub fn upsert_pod(&mut self, pod: Pod) {
        self.ensure_namespace(&pod.key.namespace);
        self.pods.insert(pod);
    }

    /// Adds or replaces a policy (already validated into its enforceable form).
    pub fn upsert_policy(&mut self, policy: Policy) {
        self.ensure_namespace(&policy.key.namespace);
        self.policies.insert(policy);
    }

    /// Creates a namespace implied by an object when it is unknown.
    fn ensure_namespace(&mut self, name: &str) {
        if !self.namespaces.contains_key(name) {
            self.namespaces
                .insert(name.to_owned(), Arc::new(Namespace::implicit(name)));
        }
    }

    /// Adds or replaces a Kubernetes NetworkPolicy, validating it. Invalid policies are kept in
    /// their fail-closed form; their errors are in [`Policy::errors`].
    pub fn upsert_network_policy(
        &mut self,
        policy: &networking::NetworkPolicy,
    ) -> Result<(), Error> {
        let policy = Policy::from_k8s(policy).ok_or(Error::MissingName {
            kind: "NetworkPolicy",
        })?;
        self.upsert_policy(policy);
        Ok(())
    }

    /// Removes a namespace.
    pub fn remove_namespace(&mut self, name: &str) -> Option<Namespace> {
        self.namespaces.remove(name).map(Arc::unwrap_or_clone)
    }

    /// Removes a pod.
    pub fn remove_pod(&mut self, key: &ObjectKey) -> Option<Pod> {
        self.pods
            .remove(&key.namespace, &key.name)
            .map(Arc::unwrap_or_clone)
    }

    /// Removes a policy.
    pub fn remove_policy(&mut self, key: &ObjectKey) -> Option<Policy> {
        self.policies
            .remove(&key.namespace, &key.name)
            .map(Arc::unwrap_or_clone)
    }

    /// A namespace by name.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name).map(|ns| &**ns)
    }

    /// All namespaces, by name.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values().map(|ns| &**ns)
    }

    /// A pod by key.
    pub fn pod(&self, key: &ObjectKey) -> Option<&Pod> {
        self.pods.get(&key.namespace, &key.name)
    }

    /// All pods, ordered by namespace then name.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter()
    }

    /// The pods of one namespace, ordered by name.
    pub fn pods_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a Pod> + use<'a> {
        self.pods.iter_in(namespace)
    }

    /// The namespaces that hold at least one pod, in order (a namespace object may be gone
    /// while its pods are still listed).
    pub fn pod_namespaces(&self) -> impl Iterator<Item = &str> {
        self.pods.namespaces()
    }

    /// [`Snapshot::pod_namespaces`], each with its labels as [`Snapshot::namespace_labels`]
    /// gives them, found by walking the namespaces alongside instead of a lookup for each.
    pub fn pod_namespaces_with_labels(&self) -> impl Iterator<Item = (&str, Cow<'_, Labels>)> {
        let mut objects = self.namespaces.iter().peekable();
        self.pods.namespaces().map(move |name| {
            while objects
                .next_if(|(other, _)| other.as_str() < name)
                .is_some()
            {}
            match objects.next_if(|(other, _)| other.as_str() == name) {
                Some((_, namespace)) => (name, Cow::Borrowed(&namespace.labels)),
                None => (name, Cow::Owned(Namespace::implicit(name).labels)),
            }
        })
    }

    /// The pods of one namespace whose labels `selector` matches, ordered by name: the same
    /// pods as `pods_in(namespace)` filtered by [`Selector::matches`], found through the
    /// namespace's label index when it is large (see [`namespaced`]).
    pub fn pods_selected(&self, namespace: &str, selector: &Selector) -> Vec<&Pod> {
        self.pods.selected(namespace, selector)
    }

    /// All policies, ordered by namespace then name.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.iter()
    }

    /// A policy by key.
    pub fn policy(&self, key: &ObjectKey) -> Option<&Policy> {
        self.policies.get(&key.namespace, &key.name)
    }

    /// The policies of one namespace, ordered by name.
    pub fn policies_in<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = &'a Policy> + use<'a> {
        self.policies.iter_in(namespace)
    }

    /// The policy endpoint (active, non-hostNetwork pod) that owns an IP, if any. When a reused
    /// IP is claimed by several pods (a finished one is never an endpoint), the first by key wins.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|pod| pod.is_policy_endpoint() && pod.ips.contains(&ip))
    }

    /// The enforcement mode of a namespace; enforce when the namespace is unknown.
    pub fn enforcement(&self, namespace: &str) -> Enforcement {
        self.namespaces
            .get(namespace)
            .map_or(Enforcement::Enforce, |ns| ns.enforcement)
    }

    /// Labels of a namespace; the name label alone when the namespace is unknown.
    pub fn namespace_labels(&self, name: &str) -> Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(ns) => Cow::Borrowed(&ns.labels),
            None => Cow::Owned(Namespace::implicit(name).labels),
        }
    }

    /// Names of all namespaces, including those only implied by pods and policies.
    pub fn namespace_names(&self) -> BTreeSet<&str> {
        self.namespaces.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
