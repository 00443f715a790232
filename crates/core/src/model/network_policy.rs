//! A NetworkPolicy in the form the engine enforces: the data only. What it means (which pods
//! and peers it selects, [`crate::policy::evaluate`]) and how a Kubernetes object becomes one
//! (defaulting and validation) are [`crate::policy`]'s.

use std::fmt;

use ipnet::IpNet;
use serde::Serialize;

use super::{Direction, ObjectKey, Protocol, Selector};

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
