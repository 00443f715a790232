//! NetworkPolicy semantics: the validated, enforceable form of a `networking.k8s.io/v1`
//! NetworkPolicy, and [`evaluate`], the verdict for one flow with its reasons.
//!
//! Everything here is pure. [`Policy::from_k8s`] turns a Kubernetes object into a [`Policy`],
//! applying the API's defaulting (policyTypes, TCP, empty versus missing lists) and its
//! validation. A policy that fails validation is kept in a fail-closed form: it still isolates
//! the directions it declares, but allows nothing, and its errors name the field. The compiler
//! ([`crate::compile`]) and the evaluator read the same types and share the matching helpers
//! here, so the ruleset in the kernel and `evaluate` agree by construction; the integration
//! suite checks that with real packets.

mod evaluate;
mod parse;
mod selector;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::model::{Labels, ObjectKey, Pod, Protocol, Snapshot};

pub use evaluate::{
    Direction, DirectionVerdict, Endpoint, Flow, MissReason, RuleMiss, RuleRef, Verdict, evaluate,
};
pub use selector::{Operator, Requirement, Selector};

/// A NetworkPolicy in the form the engine enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// `namespace/name`.
    pub key: ObjectKey,
    /// Which pods of the policy's namespace it selects.
    pub pod_selector: Selector,
    /// `Some` when the policy isolates its pods for ingress: the allow rules (empty: deny all).
    pub ingress: Option<Vec<Rule>>,
    /// `Some` when the policy isolates its pods for egress: the allow rules (empty: deny all).
    pub egress: Option<Vec<Rule>>,
    /// Validation errors. When not empty the policy allows nothing (rules are empty) but still
    /// isolates the directions it declares.
    pub errors: Vec<FieldError>,
}

/// A validation error: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field path, as in `spec.ingress[0].from[1].ipBlock.cidr`.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl FieldError {
    /// Builds an error for a field.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// One ingress or egress rule: traffic is allowed when it matches one of the peers and one of
/// the ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The rule's position in the policy's `ingress` or `egress` list.
    pub index: usize,
    /// `None` when `from`/`to` is missing or empty: every source or destination, including
    /// addresses outside the cluster.
    pub peers: Option<Vec<Peer>>,
    /// `None` when `ports` is missing or empty: every port of every protocol.
    pub ports: Option<Vec<PortMatch>>,
}

/// A peer of a rule (`from`/`to` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// The peer's position in the rule's `from`/`to` list.
    pub index: usize,
    /// What the peer selects.
    pub kind: PeerKind,
}

/// What a peer selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PeerKind {
    /// Pods chosen by label: pods matching `pods` in the namespaces chosen by `namespaces`
    /// (both must hold).
    Pods {
        /// Which namespaces.
        namespaces: NamespaceScope,
        /// Which pods within them (empty selector: all).
        pods: Selector,
    },
    /// Addresses: `cidr` minus `except`. Matches any address, pod or not.
    IpBlock {
        /// The block, host bits masked.
        cidr: IpNet,
        /// Sub-blocks removed from this peer only.
        except: Vec<IpNet>,
    },
}

/// Which namespaces a pod peer covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum NamespaceScope {
    /// No namespaceSelector: the policy's own namespace only.
    PolicyNamespace,
    /// Namespaces whose labels match (empty selector: all namespaces).
    Matching(Selector),
}

/// One `ports` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortMatch {
    /// The protocol (TCP when omitted).
    pub protocol: Protocol,
    /// The port; `None` for every port of the protocol.
    pub port: Option<PortSpec>,
}

/// A port number, range or name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PortSpec {
    /// `port` alone (`start == end`) or `port`..=`endPort`.
    Range {
        /// First port.
        start: u16,
        /// Last port, inclusive.
        end: u16,
    },
    /// A container port name, resolved on the destination pod.
    Named(String),
}

impl Policy {
    /// Whether the policy selects the pod: same namespace, selector matches.
    pub fn selects(&self, pod: &Pod) -> bool {
        pod.key.namespace == self.key.namespace && self.pod_selector.matches(&pod.labels)
    }

    /// The rules of one direction, `None` when the policy does not isolate that direction.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Whether validation failed (the policy then allows nothing).
    pub fn is_invalid(&self) -> bool {
        !self.errors.is_empty()
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

impl fmt::Display for PortMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            None => write!(f, "{}/*", self.protocol),
            Some(PortSpec::Range { start, end }) if start == end => {
                write!(f, "{}/{start}", self.protocol)
            }
            Some(PortSpec::Range { start, end }) => write!(f, "{}/{start}-{end}", self.protocol),
            Some(PortSpec::Named(name)) => write!(f, "{}/{name}", self.protocol),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PeerKind::Pods {
                namespaces: NamespaceScope::PolicyNamespace,
                pods,
            } => {
                write!(f, "pods {pods} in the policy's namespace")
            }
            PeerKind::Pods {
                namespaces: NamespaceScope::Matching(ns),
                pods,
            } => {
                write!(f, "pods {pods} in namespaces {ns}")
            }
            PeerKind::IpBlock { cidr, except } if except.is_empty() => write!(f, "ipBlock {cidr}"),
            PeerKind::IpBlock { cidr, except } => {
                let except: Vec<String> = except.iter().map(ToString::to_string).collect();
                write!(f, "ipBlock {cidr} except {}", except.join(","))
            }
        }
    }
}
