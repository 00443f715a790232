//! [`evaluate`]: the verdict for one flow, with the reasons a person needs to act on it.
//!
//! A flow is allowed when its source may send it (egress) and its destination may receive it
//! (ingress). Each side is decided on its own, tier by tier, as ClusterNetworkPolicy orders
//! them: the Admin tier's first matching rule (policies by priority, then name; rules in
//! order) accepts, denies or passes; then the NetworkPolicies, final for a pod they isolate in
//! that direction (one rule of one selecting policy must match peer and port); then the
//! Baseline tier the same way as the Admin tier; then the default: allowed. The tiers are the
//! private `tiers` module. Replies of allowed connections are always allowed (connection
//! tracking), so only the initiating direction is evaluated. A pod's traffic to itself and
//! traffic from a pod's own node are always allowed, as in the compiled ruleset.

mod tiers;

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::model::{
    ClusterAction, Direction, FieldError, ObjectKey, PeerKind, Pod, Policy, PortMatch, Protocol,
    Rule, Snapshot, Tier,
};

/// One end of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// A pod by `namespace/name`.
    Pod(ObjectKey),
    /// An address; resolved to the pod that owns it, if any.
    Ip(IpAddr),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pod(key) => key.fmt(f),
            Self::Ip(ip) => ip.fmt(f),
        }
    }
}

/// The first packet of a connection, after Service DNAT: who sends it to whom, on which
/// protocol and destination port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// The sender.
    pub source: Endpoint,
    /// The receiver (the pod behind a Service, not the Service).
    pub destination: Endpoint,
    /// The transport protocol.
    pub protocol: Protocol,
    /// The destination port (the pod's port, not the Service port).
    pub port: u16,
}

/// The verdict for a flow, with the decision of each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Both sides allow the flow.
    pub allowed: bool,
    /// The source's egress decision.
    pub egress: DirectionVerdict,
    /// The destination's ingress decision.
    pub ingress: DirectionVerdict,
}

/// One side's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum DirectionVerdict {
    /// This end is not a pod that policy governs (an external address, a node, a hostNetwork
    /// or finished pod), so this side does not restrict the flow.
    NotPoliced {
        /// What the end is.
        reason: String,
    },
    /// Always-allowed traffic: a pod to itself, or a node to its own pods.
    Exempt {
        /// Why.
        reason: String,
    },
    /// No tier decides: no NetworkPolicy isolates the pod for this direction and no
    /// ClusterNetworkPolicy rule accepts or denies the flow, so it is allowed.
    NotIsolated {
        /// The pod.
        pod: ObjectKey,
        /// The ClusterNetworkPolicy rules that passed the flow on to the next tier.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        passed: Vec<ClusterRuleRef>,
    },
    /// Isolated by NetworkPolicies, and a rule allows the flow.
    Allowed {
        /// The pod.
        pod: ObjectKey,
        /// The policies that select the pod for this direction.
        isolated_by: Vec<ObjectKey>,
        /// The first rule that allows it (policies by name, rules in order).
        rule: RuleRef,
        /// The Admin tier rule that passed the flow on to the NetworkPolicies, if one did.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        passed: Vec<ClusterRuleRef>,
    },
    /// Isolated by NetworkPolicies, and no rule allows the flow.
    Denied {
        /// The pod.
        pod: ObjectKey,
        /// The policies that select the pod for this direction.
        isolated_by: Vec<ObjectKey>,
        /// Why each candidate rule missed.
        misses: Vec<RuleMiss>,
        /// The Admin tier rule that passed the flow on to the NetworkPolicies, if one did.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        passed: Vec<ClusterRuleRef>,
    },
    /// A ClusterNetworkPolicy rule of the Admin or the Baseline tier accepted or denied the
    /// flow ([`ClusterRuleRef::action`]).
    Cluster {
        /// The pod.
        pod: ObjectKey,
        /// The deciding rule.
        rule: ClusterRuleRef,
        /// An Admin tier rule that passed the flow on before the Baseline tier decided.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        passed: Vec<ClusterRuleRef>,
    },
}

impl DirectionVerdict {
    /// Whether this side lets the flow through.
    pub fn allows(&self) -> bool {
        match self {
            Self::Denied { .. } => false,
            Self::Cluster { rule, .. } => rule.action != ClusterAction::Deny,
            _ => true,
        }
    }

    /// The ClusterNetworkPolicy rule that decided this side, if one did.
    pub fn cluster_rule(&self) -> Option<&ClusterRuleRef> {
        match self {
            Self::Cluster { rule, .. } => Some(rule),
            _ => None,
        }
    }
}

/// A rule of a ClusterNetworkPolicy, with what a reader needs to find and judge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterRuleRef {
    /// The ClusterNetworkPolicy's name.
    pub policy: String,
    /// Its tier.
    pub tier: Tier,
    /// Its priority.
    pub priority: u16,
    /// The direction of the rule list.
    pub direction: Direction,
    /// The rule's index in that list, as written.
    pub index: usize,
    /// The rule's name, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the rule does (a rule of an invalid policy denies; see [`crate::policy`]).
    pub action: ClusterAction,
}

impl fmt::Display for ClusterRuleRef {
    /// `ClusterNetworkPolicy deny-imds egress[0] "block-imds" (Admin tier, priority 5)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClusterNetworkPolicy {} {}[{}]",
            self.policy, self.direction, self.index
        )?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        write!(f, " ({} tier, priority {})", self.tier, self.priority)
    }
}

/// A rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// The policy.
    pub policy: ObjectKey,
    /// The direction of the rule list.
    pub direction: Direction,
    /// The rule's index in that list.
    pub index: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}[{}]", self.policy, self.direction, self.index)
    }
}

/// Why a candidate missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleMiss {
    /// The policy.
    pub policy: ObjectKey,
    /// The rule, `None` when the policy has no rules for this direction.
    pub rule: Option<usize>,
    /// What did not match.
    pub reason: MissReason,
}

/// What did not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MissReason {
    /// The policy isolates the pod and has no rule for this direction (deny all).
    NoRules,
    /// The policy is invalid and allows nothing.
    Invalid {
        /// The validation errors.
        errors: Vec<FieldError>,
    },
    /// The other end is not among the rule's peers.
    Peer {
        /// The peers the rule lists.
        peers: Vec<String>,
    },
    /// No port entry has the flow's protocol.
    Protocol {
        /// The rule's port entries.
        ports: Vec<String>,
    },
    /// A port entry has the protocol but not the port (or a named port did not resolve to it).
    Port {
        /// The rule's port entries.
        ports: Vec<String>,
    },
}

/// Why a flow could not be evaluated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A pod endpoint is not in the snapshot.
    #[error("no pod {0} in the snapshot")]
    UnknownPod(ObjectKey),
}

/// A flow end after lookup in the snapshot.
enum Resolved<'a> {
    /// A pod that policy governs, with the address the flow names (when it names one: ipBlocks
    /// are then checked against that address only, as the kernel sees it on the packet).
    Pod(&'a Pod, Option<IpAddr>),
    /// Anything else, with what it is and its address when known.
    Other {
        reason: String,
        ip: Option<IpAddr>,
        host_pod: Option<&'a Pod>,
    },
}

impl<'a> Resolved<'a> {
    fn pod(&self) -> Option<&'a Pod> {
        match self {
            Self::Pod(pod, _) => Some(pod),
            Self::Other { .. } => None,
        }
    }
}

/// Evaluates a flow against the snapshot's policies.
pub fn evaluate(snapshot: &Snapshot, flow: &Flow) -> Result<Verdict, Error> {
    let source = resolve(snapshot, &flow.source)?;
    let destination = resolve(snapshot, &flow.destination)?;
    let egress = side(snapshot, flow, Direction::Egress, &source, &destination);
    let ingress = side(snapshot, flow, Direction::Ingress, &destination, &source);
    Ok(Verdict {
        allowed: egress.allows() && ingress.allows(),
        egress,
        ingress,
    })
}

fn resolve<'a>(snapshot: &'a Snapshot, endpoint: &Endpoint) -> Result<Resolved<'a>, Error> {
    let (pod, address) = match endpoint {
        Endpoint::Pod(key) => (
            snapshot
                .pod(key)
                .ok_or_else(|| Error::UnknownPod(key.clone()))?,
            None,
        ),
        Endpoint::Ip(ip) => match snapshot.pod_by_ip(*ip) {
            Some(pod) => (pod, Some(*ip)),
            None => {
                let host_pod = snapshot.host_network_pod_by_ip(*ip);
                let reason = match host_pod {
                    Some(p) => format!("{ip} is the node address of hostNetwork pod {}", p.key),
                    None => format!("{ip} is not a pod address"),
                };
                return Ok(Resolved::Other {
                    reason,
                    ip: Some(*ip),
                    host_pod,
                });
            }
        },
    };
    if pod.is_policy_endpoint() {
        return Ok(Resolved::Pod(pod, address));
    }
    let reason = if pod.host_network {
        format!("{} is a hostNetwork pod: node traffic", pod.key)
    } else if pod.ips.is_empty() {
        format!("{} has no IP yet", pod.key)
    } else {
        format!("{} has finished (Succeeded or Failed)", pod.key)
    };
    Ok(Resolved::Other {
        reason,
        ip: pod.ips.first().copied(),
        host_pod: Some(pod).filter(|p| p.host_network),
    })
}

/// The decision of `this` end for `direction`; `other` is the far end.
fn side(
    snapshot: &Snapshot,
    flow: &Flow,
    direction: Direction,
    this: &Resolved<'_>,
    other: &Resolved<'_>,
) -> DirectionVerdict {
    let pod = match this {
        Resolved::Pod(pod, _) => *pod,
        Resolved::Other { reason, .. } => {
            return DirectionVerdict::NotPoliced {
                reason: reason.clone(),
            };
        }
    };
    if other.pod().is_some_and(|o| o.key == pod.key) {
        return DirectionVerdict::Exempt {
            reason: format!("{} talking to itself", pod.key),
        };
    }
    if direction == Direction::Ingress
        && let Resolved::Other {
            host_pod: Some(host),
            ..
        } = other
        && host.node.is_some()
        && host.node == pod.node
    {
        return DirectionVerdict::Exempt {
            reason: format!("traffic from {}'s own node is always allowed", pod.key),
        };
    }

    let destination = match direction {
        Direction::Egress => other.pod(),
        Direction::Ingress => Some(pod),
    };
    let tier = |tier, passed: &mut Vec<ClusterRuleRef>| {
        tiers::decide(
            snapshot,
            tier,
            &tiers::Side {
                pod,
                direction,
                flow,
                other,
                destination,
            },
            passed,
        )
    };
    let mut passed = Vec::new();
    if let Some(decided) = tier(Tier::Admin, &mut passed) {
        return decided;
    }
    let isolating: Vec<&Policy> = snapshot
        .policies_in(&pod.key.namespace)
        .filter(|p| p.rules(direction).is_some() && p.selects(pod))
        .collect();
    if isolating.is_empty() {
        if let Some(decided) = tier(Tier::Baseline, &mut passed) {
            return decided;
        }
        return DirectionVerdict::NotIsolated {
            pod: pod.key.clone(),
            passed,
        };
    }
    let isolated_by: Vec<ObjectKey> = isolating.iter().map(|p| p.key.clone()).collect();
    let mut misses = Vec::new();
    for policy in &isolating {
        let rules = policy.rules(direction).unwrap_or_default();
        if policy.is_invalid() {
            misses.push(RuleMiss {
                policy: policy.key.clone(),
                rule: None,
                reason: MissReason::Invalid {
                    errors: policy.errors.clone(),
                },
            });
            continue;
        }
        if rules.is_empty() {
            misses.push(RuleMiss {
                policy: policy.key.clone(),
                rule: None,
                reason: MissReason::NoRules,
            });
        }
        for rule in rules {
            match rule_miss(snapshot, policy, rule, flow, other, destination) {
                None => {
                    return DirectionVerdict::Allowed {
                        pod: pod.key.clone(),
                        isolated_by,
                        rule: RuleRef {
                            policy: policy.key.clone(),
                            direction,
                            index: rule.index,
                        },
                        passed,
                    };
                }
                Some(reason) => misses.push(RuleMiss {
                    policy: policy.key.clone(),
                    rule: Some(rule.index),
                    reason,
                }),
            }
        }
    }
    DirectionVerdict::Denied {
        pod: pod.key.clone(),
        isolated_by,
        misses,
        passed,
    }
}

/// `None` when the rule matches; otherwise what missed (peer is checked first).
fn rule_miss(
    snapshot: &Snapshot,
    policy: &Policy,
    rule: &Rule,
    flow: &Flow,
    peer: &Resolved<'_>,
    destination: Option<&Pod>,
) -> Option<MissReason> {
    if let Some(peers) = &rule.peers {
        let matched = peers.iter().any(|p| match peer {
            Resolved::Pod(pod, Some(ip)) if matches!(p.kind, PeerKind::IpBlock { .. }) => {
                pod.ips.contains(ip) && p.contains_ip(*ip)
            }
            Resolved::Pod(pod, _) => p.selects_pod(snapshot, &policy.key.namespace, pod),
            Resolved::Other { ip, .. } => ip.is_some_and(|ip| p.contains_ip(ip)),
        });
        if !matched {
            return Some(MissReason::Peer {
                peers: peers.iter().map(ToString::to_string).collect(),
            });
        }
    }
    let ports = rule.ports.as_ref()?;
    if ports
        .iter()
        .any(|p| p.matches(flow.protocol, flow.port, destination))
    {
        return None;
    }
    let listed = ports.iter().map(PortMatch::to_string).collect();
    if ports.iter().any(|p| p.protocol == flow.protocol) {
        Some(MissReason::Port { ports: listed })
    } else {
        Some(MissReason::Protocol { ports: listed })
    }
}
