//! A ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`) in the form the engine
//! enforces: the data only. How the Kubernetes object becomes one (validation, the fail-closed
//! form of an invalid one) and what it means ([`crate::policy::evaluate`]) are
//! [`crate::policy`]'s.
//!
//! The tiers, as the API orders them for each side of a connection: the Admin tier (its
//! policies by priority, each policy's rules in order; the first rule that matches decides:
//! Accept, Deny, or Pass to the next tier), then the NetworkPolicies (final for a pod they
//! isolate in that direction), then the Baseline tier, then the default: allowed.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Direction, FieldError, Protocol, Selector};

/// The highest priority value the API allows (`spec.priority`, 0 to 1000; lower values are
/// checked first).
pub const MAX_PRIORITY: u16 = 1000;
/// The most rules a policy may have in each direction, peers in a rule, protocols in a rule
/// and networks in a peer (the API's `MaxItems`).
pub const MAX_ITEMS: usize = 25;
/// The longest rule name the API allows.
pub const MAX_RULE_NAME: usize = 100;

/// A ClusterNetworkPolicy's tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tier {
    /// Before the NetworkPolicies: cluster-wide rules namespace owners cannot undo.
    Admin,
    /// After the NetworkPolicies: cluster-wide defaults a NetworkPolicy overrides.
    Baseline,
}

impl Tier {
    /// Both tiers, in the order they are evaluated.
    pub const ALL: [Tier; 2] = [Tier::Admin, Tier::Baseline];

    /// `Admin` or `Baseline`, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "Admin",
            Self::Baseline => "Baseline",
        }
    }

    /// Parses the API's spelling.
    pub fn from_k8s(value: &str) -> Option<Self> {
        match value {
            "Admin" => Some(Self::Admin),
            "Baseline" => Some(Self::Baseline),
            _ => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule does with the traffic it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ClusterAction {
    /// Allowed; no later policy of any tier is consulted for this side.
    Accept,
    /// Dropped; no later policy of any tier is consulted.
    Deny,
    /// The rest of this tier is skipped: the next tier decides (after the Admin tier the
    /// NetworkPolicies, after the Baseline tier the default allow).
    Pass,
}

impl ClusterAction {
    /// `Accept`, `Deny` or `Pass`, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "Accept",
            Self::Deny => "Deny",
            Self::Pass => "Pass",
        }
    }

    /// Parses the API's spelling.
    pub fn from_k8s(value: &str) -> Option<Self> {
        match value {
            "Accept" => Some(Self::Accept),
            "Deny" => Some(Self::Deny),
            "Pass" => Some(Self::Pass),
            _ => None,
        }
    }
}

impl fmt::Display for ClusterAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ClusterNetworkPolicy in the form the engine enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterPolicy {
    /// The policy's name (the object is cluster-scoped).
    pub name: String,
    /// Its tier.
    pub tier: Tier,
    /// Its priority within the tier, 0 to [`MAX_PRIORITY`]; lower first. Policies of equal
    /// priority are taken in name order (the API leaves the order to the implementation).
    pub priority: u16,
    /// The pods it applies to.
    pub subject: Subject,
    /// Rules for traffic arriving at the subject pods, in order.
    pub ingress: Vec<ClusterRule>,
    /// Rules for traffic leaving the subject pods, in order.
    pub egress: Vec<ClusterRule>,
    /// Validation errors. When not empty the policy is kept in its fail-closed form: no rule
    /// accepts or passes anything (see [`crate::policy`]).
    pub errors: Vec<FieldError>,
    /// Fields that are valid but not enforced (`domainNames` peers): the peer matches nothing,
    /// so a rule never allows more than it would without it. Reported, not errors.
    pub unsupported: Vec<FieldError>,
}

/// Which pods a ClusterNetworkPolicy applies to (host-network pods never).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Subject {
    /// Every pod of the namespaces whose labels match.
    Namespaces(Selector),
    /// The pods whose labels match `pods` in the namespaces whose labels match `namespaces`.
    Pods {
        /// Which namespaces.
        namespaces: Selector,
        /// Which pods within them.
        pods: Selector,
    },
}

/// One ingress or egress rule of a ClusterNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterRule {
    /// The rule's position in the policy's `ingress` or `egress` list as written.
    pub index: usize,
    /// The rule's name, when it has one.
    pub name: Option<String>,
    /// What it does.
    pub action: ClusterAction,
    /// The other end: the rule matches when one of these does (never empty).
    pub peers: Vec<ClusterPeer>,
    /// `None` when `protocols` is absent: every protocol and port.
    pub ports: Option<Vec<ClusterPort>>,
}

/// A peer of a ClusterNetworkPolicy rule (`from`/`to` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ClusterPeer {
    /// Every pod of the namespaces whose labels match.
    Namespaces(Selector),
    /// Pods by namespace and pod labels.
    Pods {
        /// Which namespaces.
        namespaces: Selector,
        /// Which pods within them.
        pods: Selector,
    },
    /// The addresses of the nodes whose labels match (egress only).
    Nodes(Selector),
    /// Addresses in these blocks, pod addresses included (egress only).
    Networks(Vec<IpNet>),
    /// Domain names (egress, Accept rules only): not enforced, matches nothing.
    DomainNames(Vec<String>),
    /// Every address: the peer of a rule that failed validation, which denies everything
    /// (the API's fail-closed reading of a peer it cannot understand).
    Any,
}

/// One `protocols` entry of a ClusterNetworkPolicy rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ClusterPort {
    /// A protocol with a destination port range (`start == end` for one port).
    Range {
        /// The protocol.
        protocol: Protocol,
        /// First port.
        start: u16,
        /// Last port, inclusive.
        end: u16,
    },
    /// `destinationNamedPort`: a container port name of the destination pod, with whatever
    /// protocol the pod gives it.
    Named(String),
}

impl ClusterPolicy {
    /// The rules of one direction.
    pub fn rules(&self, direction: Direction) -> &[ClusterRule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Whether validation failed (the policy then never accepts nor passes).
    pub fn is_invalid(&self) -> bool {
        !self.errors.is_empty()
    }
}

impl fmt::Display for ClusterPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Namespaces(namespaces) => write!(f, "pods in namespaces {namespaces}"),
            Self::Pods { namespaces, pods } => {
                write!(f, "pods {pods} in namespaces {namespaces}")
            }
            Self::Nodes(nodes) => write!(f, "nodes {nodes}"),
            Self::Networks(networks) => {
                let networks: Vec<String> = networks.iter().map(ToString::to_string).collect();
                write!(f, "networks {}", networks.join(","))
            }
            Self::DomainNames(names) => {
                write!(f, "domain names {} (not enforced)", names.join(","))
            }
            Self::Any => f.write_str("anything (rule failed validation)"),
        }
    }
}

impl fmt::Display for ClusterPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Range {
                protocol,
                start,
                end,
            } if start == end => write!(f, "{protocol}/{start}"),
            Self::Range {
                protocol,
                start,
                end,
            } => write!(f, "{protocol}/{start}-{end}"),
            Self::Named(name) => write!(f, "named port {name}"),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Namespaces(namespaces) => write!(f, "pods in namespaces {namespaces}"),
            Self::Pods { namespaces, pods } => {
                write!(f, "pods {pods} in namespaces {namespaces}")
            }
        }
    }
}
