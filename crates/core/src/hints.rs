//! Learning hints: denied flows from the drop log turned into suggested NetworkPolicies.
//!
//! Pure, no I/O. The input is [`FlowToAllow`]s, the parts of the flow log's
//! [`FlowLine`](crate::flow_line::FlowLine)s that a policy can name (parsed from the JSON
//! lines by [`parse_line`], or converted in the agent by [`FlowToAllow::from_line`]), and
//! optionally the cluster [`Snapshot`] to check selectors against. [`suggest`] returns, for
//! each isolated workload and direction, one NetworkPolicy that allows exactly the denied peers
//! on the denied ports, plus the [`Issue`]s that kept something from being suggested.
//!
//! What a suggestion contains:
//! - `podSelector`: the workload's stable labels (`workload` names the workload and the
//!   per-instance labels left out; `labels` chooses and, with a snapshot, checks them);
//! - one rule per set of ports: pod peers by labels, in other namespaces with a
//!   `kubernetes.io/metadata.name` namespaceSelector; the ports merged per peer, and peers with
//!   identical port sets sharing a rule;
//! - peers outside the cluster as `/32` or `/128` ipBlocks, in rules of their own, flagged with
//!   the annotation [`ANNOTATION_EXTERNAL`] (with a snapshot, never an address that a policy of
//!   the pod carves out with `except`, such as the cloud metadata address);
//! - for denied DNS (egress to `k8s-app=kube-dns` in `kube-system`), one rule to kube-dns on
//!   UDP and TCP for the denied port;
//! - `policyTypes` naming only its direction (so it never isolates the other one), the label
//!   [`HINT_LABEL`] and the number of denied flows in [`ANNOTATION_DENIED_FLOWS`];
//! - with a snapshot, the rules of an existing policy of the same name (an earlier hint, which
//!   applying would replace) before its own (`merge`).
//!
//! `build` decides and checks, `objects` makes the Kubernetes objects, [`render`] prints
//! them as YAML or JSON, and
//! [`Aggregate`] keeps a bounded set of recent denied flows (`suggest`'s input).

mod aggregate;
mod build;
mod input;
mod labels;
mod merge;
mod objects;
mod observed;
pub mod render;
mod workload;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Serialize;

use crate::flow_line::ClusterPolicyRule;
use crate::model::{
    ClusterAction, Direction, IpProtocol, Labels, ObjectKey, Owner, PeerKind, Protocol, Snapshot,
    Tier,
};
use crate::policy::DirectionVerdict;

pub use aggregate::Aggregate;
pub use input::parse_line;
pub use observed::{
    Exclude, ExcludeError, ExternalPeer, FlowEnd, Observed, WorkloadFlow, observed_namespaces,
    suggest_observed, to_allow,
};
pub use workload::{PER_INSTANCE_LABELS, PER_RUN_LABELS, Workload, may_be_policed};

/// The label every suggested policy carries (`kubectl get netpol -l kube-nftpol.io/hint`).
pub const HINT_LABEL: &str = "kube-nftpol.io/hint";
/// Annotation: how many distinct denied flows the policy was made from.
pub const ANNOTATION_DENIED_FLOWS: &str = "kube-nftpol.io/hint-denied-flows";
/// Annotation, `"true"` when the policy allows addresses outside the cluster (ipBlocks): review
/// those before applying.
pub const ANNOTATION_EXTERNAL: &str = "kube-nftpol.io/hint-external";

/// One flow a suggested policy should allow on one side: the policed pod, the direction, the
/// other end, protocol and port. Denied (from the drop log), or in observe mode any flow seen
/// ([`to_allow`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowToAllow {
    /// Ingress (the pod was receiving) or egress (it was sending).
    pub direction: Direction,
    /// The pod whose isolation denied the flow.
    pub pod: FlowPod,
    /// The other end.
    pub peer: FlowPeer,
    /// The transport protocol.
    pub protocol: IpProtocol,
    /// The destination port, when the packet showed one.
    pub port: Option<u16>,
    /// How many logged packets this flow stands for: at least 1 when its side was logged, 0
    /// for a side inferred from the other end's line ([`to_allow`]).
    pub drops: u64,
    /// The ClusterNetworkPolicy tier whose Deny rule dropped it, when the line says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// That rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_policy: Option<ClusterPolicyRule>,
}

/// A pod as the drop log names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowPod {
    /// `namespace/name`.
    pub key: ObjectKey,
    /// Its labels when the drop was logged.
    pub labels: Labels,
    /// Its controller, when it has one.
    pub owner: Option<Owner>,
    /// The drop log did not know the pod (its labels are empty, not absent).
    pub unknown: bool,
}

/// The other end of a denied flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowPeer {
    /// A pod of the cluster.
    Pod(FlowPod),
    /// An address that is no pod: outside the cluster, a node, a hostNetwork pod.
    External(IpAddr),
}

impl fmt::Display for FlowPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pod(pod) => pod.key.fmt(f),
            Self::External(ip) => ip.fmt(f),
        }
    }
}

/// What [`suggest`] looks at besides the flows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// The cluster now: labels and owners of the pods, selector checks, isolation checks, and
    /// flows no longer denied left out. Without it the drop log's labels are trusted.
    pub snapshot: Option<&'a Snapshot>,
    /// Only flows of pods in this namespace (the namespace of the suggested policies).
    pub namespace: Option<&'a str>,
    /// Observe mode: the flows were observed ([`to_allow`]), not only denied, and these
    /// namespaces' traffic was (all of it). Every workload of them gets a policy for each
    /// direction that allows exactly what was observed (a direction with no flow: nothing),
    /// leaving out what the snapshot's policies already allow; a policy that isolates pods not
    /// isolated today is marked ([`Suggestion::isolates`]) rather than refused.
    pub observed: Option<&'a BTreeSet<String>>,
}

/// The result of [`suggest`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestions {
    /// Observe mode: the flows were observed, not only denied ([`Options::observed`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub observed: bool,
    /// Distinct flows considered, denied (or, observed, every side that needs a rule), after
    /// the namespace filter.
    pub denied_flows: usize,
    /// Of those, flows the snapshot now allows on the side that denied them (left out).
    pub no_longer_denied: usize,
    /// Observed flows only: sides an isolating policy already allows today (left out).
    #[serde(skip_serializing_if = "is_zero")]
    pub already_allowed: usize,
    /// The suggested policies, by namespace, then workload, then direction.
    pub suggestions: Vec<Suggestion>,
    /// What could not be suggested, and why, sorted.
    pub issues: Vec<Issue>,
    /// Observe mode: the flows `--exclude` left out ([`Observed::excluded`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<WorkloadFlow>,
    /// Observe mode: flows with addresses outside the cluster, left out
    /// ([`Observed::external`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_left_out: Vec<ExternalPeer>,
    /// Where flows came from agents (`suggest --cluster`): the agents that did not answer, as
    /// `POD (node NODE)`. Their nodes' flows are missing, so the policies may not allow all of
    /// their workloads' traffic.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_agents: Vec<String>,
}

/// One suggested NetworkPolicy and what it was made from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    /// The workload it selects.
    pub workload: Workload,
    /// The direction it allows.
    pub direction: Direction,
    /// Distinct denied flows it allows.
    pub denied_flows: usize,
    /// Logged drops of those flows.
    pub logged_drops: u64,
    /// Addresses outside the cluster it allows (review them).
    pub external: Vec<IpAddr>,
    /// Whether it has the DNS rule.
    pub dns: bool,
    /// Caveats for the reader, one sentence each.
    pub notes: Vec<String>,
    /// Observed flows only: applying the policy isolates pods that nothing isolates in this
    /// direction today (all else they do in that direction is then denied).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub isolates: bool,
    /// The policy, ready to apply.
    pub policy: NetworkPolicy,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Something denied that no suggestion covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Issue {
    /// What kind of problem.
    pub kind: IssueKind,
    /// The policed workload.
    pub workload: Workload,
    /// The direction its flows were denied in.
    pub direction: Direction,
    /// What is wrong, for people.
    pub message: String,
}

/// The kinds of [`Issue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// The policed pod is unknown (not in the drop log's snapshot nor in this one).
    UnknownPod,
    /// ICMP or another protocol NetworkPolicy cannot name.
    UnsupportedProtocol,
    /// The packet showed no destination port (a fragment).
    NoPort,
    /// An address an ipBlock cannot name (IPv4-mapped IPv6).
    UnsupportedAddress,
    /// No labels select exactly the policed workload.
    NoSelector,
    /// No labels select exactly a peer workload (that peer is left out).
    NoPeerSelector,
    /// The policy would isolate pods that are not isolated in that direction now.
    WouldIsolate,
    /// The policy would fail validation (labels or names no API server would have given).
    Invalid,
    /// A policy of the suggested name exists and cannot be merged into (other pods or
    /// directions).
    NameTaken,
    /// An address that a rule of a policy isolating the pod removes from its ipBlock with
    /// `except` (such as the cloud metadata address): denied on purpose, so not suggested.
    ExcludedOnPurpose,
    /// A Deny rule of an Admin tier ClusterNetworkPolicy drops the flow: it comes before every
    /// NetworkPolicy, so no NetworkPolicy can allow it.
    DeniedByAdminTier,
    /// A Deny rule of a Baseline tier ClusterNetworkPolicy drops the flow: a NetworkPolicy
    /// selecting the pod would override it, but would also isolate the pod in that direction,
    /// so none is suggested.
    DeniedByBaselineTier,
    /// The policed pod's namespace is not in the manifests checked against, or is being
    /// deleted there: no policy can be created in it.
    NamespaceGone,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.workload, self.direction, self.message)
    }
}

/// Everything denied for one workload in one direction.
#[derive(Default)]
struct Group {
    /// Labels of the policed pods seen.
    pods: Vec<Labels>,
    /// Pod peers by workload.
    pod_peers: BTreeMap<Workload, PeerFlows>,
    /// External peers.
    ip_peers: BTreeMap<IpAddr, PeerFlows>,
    /// Denied DNS (egress to kube-dns): its ports (protocols are both UDP and TCP).
    dns: PeerFlows,
}

/// The denied flows with one peer (or with kube-dns).
#[derive(Default)]
struct PeerFlows {
    ports: BTreeSet<(Protocol, u16)>,
    /// Labels of the peer pods seen (pod peers only).
    labels: Vec<Labels>,
    flows: usize,
    drops: u64,
}

impl PeerFlows {
    fn add(&mut self, protocol: Protocol, port: u16, drops: u64) {
        self.ports.insert((protocol, port));
        self.flows += 1;
        self.drops = self.drops.saturating_add(drops);
    }
}

/// Suggests policies for `flows` (duplicates are merged; order does not matter).
pub fn suggest<'f>(
    flows: impl IntoIterator<Item = &'f FlowToAllow>,
    options: &Options<'_>,
) -> Suggestions {
    let mut distinct = Aggregate::unbounded();
    for flow in flows {
        if options
            .namespace
            .is_none_or(|ns| flow.pod.key.namespace == ns)
        {
            distinct.record(flow.clone());
        }
    }
    let mut issues = BTreeSet::new();
    let mut groups: BTreeMap<(Workload, Direction), Group> = BTreeMap::new();
    let mut no_longer_denied = 0;
    let mut already_allowed = 0;
    for flow in distinct.flows() {
        let pod = resolve(&flow.pod, options.snapshot);
        let workload = Workload::of(&pod.key, &pod.labels, pod.owner.as_ref());
        let issue = |kind, message: String| Issue {
            kind,
            workload: workload.clone(),
            direction: flow.direction,
            message,
        };
        let today = options
            .snapshot
            .and_then(|snapshot| observed::side_today(snapshot, flow));
        if let Some((kind, message)) = tier_denial(flow, today.as_ref(), options.snapshot.is_some())
        {
            issues.insert(issue(kind, message));
            continue;
        }
        if options.snapshot.is_some() {
            if options.observed.is_some() {
                // A side no policy isolates gets a policy (which isolates it); a side whose
                // policies allow the flow needs nothing more.
                if matches!(
                    today,
                    Some(
                        DirectionVerdict::Allowed { .. }
                            | DirectionVerdict::Cluster { .. }
                            | DirectionVerdict::Exempt { .. }
                            | DirectionVerdict::NotPoliced { .. }
                    )
                ) {
                    already_allowed += 1;
                    continue;
                }
            } else if today.is_some_and(|side| !matches!(side, DirectionVerdict::Denied { .. })) {
                no_longer_denied += 1;
                continue;
            }
        }
        let (protocol, port) = match expressible(flow, &pod, options.snapshot) {
            Ok(protocol_port) => protocol_port,
            Err((kind, message)) => {
                issues.insert(issue(kind, message));
                continue;
            }
        };
        let group = groups
            .entry((workload.clone(), flow.direction))
            .or_default();
        match &flow.peer {
            FlowPeer::Pod(peer) => {
                let peer = resolve(peer, options.snapshot);
                if flow.direction == Direction::Egress
                    && protocol != Protocol::Sctp
                    && objects::is_dns(&peer.key, &peer.labels)
                {
                    group.dns.add(protocol, port, flow.drops);
                } else {
                    let peer_workload = Workload::of(&peer.key, &peer.labels, peer.owner.as_ref());
                    let entry = group.pod_peers.entry(peer_workload).or_default();
                    entry.add(protocol, port, flow.drops);
                    entry.labels.push(peer.labels);
                }
            }
            FlowPeer::External(ip) => group
                .ip_peers
                .entry(*ip)
                .or_default()
                .add(protocol, port, flow.drops),
        }
        group.pods.push(pod.labels);
    }
    if let (Some(scope), Some(snapshot)) = (options.observed, options.snapshot) {
        // Every observed workload is isolated in both directions, to exactly what was seen.
        for pod in snapshot.pods().filter(|p| {
            scope.contains(&p.key.namespace)
                && workload::may_be_policed(p)
                && options.namespace.is_none_or(|ns| p.key.namespace == ns)
        }) {
            let workload = Workload::of(&pod.key, &pod.labels, pod.owner.as_ref());
            for direction in [Direction::Ingress, Direction::Egress] {
                groups
                    .entry((workload.clone(), direction))
                    .or_default()
                    .pods
                    .push(pod.labels.clone());
            }
        }
    }
    let suggestions = build::policies(
        groups,
        options.snapshot,
        options.observed.is_some(),
        &mut issues,
    );
    Suggestions {
        observed: options.observed.is_some(),
        denied_flows: distinct.len(),
        no_longer_denied,
        already_allowed,
        suggestions,
        issues: issues.into_iter().collect(),
        excluded: Vec::new(),
        external_left_out: Vec::new(),
        missing_agents: Vec::new(),
    }
}

/// Why no NetworkPolicy is suggested for a flow a ClusterNetworkPolicy Deny rule drops: as the
/// snapshot decides the flow today when there is one (`today`, `None` when it cannot tell),
/// else as the line says.
fn tier_denial(
    flow: &FlowToAllow,
    today: Option<&DirectionVerdict>,
    with_snapshot: bool,
) -> Option<(IssueKind, String)> {
    let (tier, rule) = match today {
        Some(DirectionVerdict::Cluster { rule, .. }) if rule.action == ClusterAction::Deny => {
            (rule.tier, rule.to_string())
        }
        Some(_) => return None,
        None if with_snapshot && flow.tier.is_none() => return None,
        None => {
            let tier = flow.tier?;
            let rule = match &flow.cluster_policy {
                Some(rule) => format!(
                    "ClusterNetworkPolicy {} {}[{}] ({tier} tier, priority {})",
                    rule.name, flow.direction, rule.rule, rule.priority
                ),
                None => format!("a ClusterNetworkPolicy of the {tier} tier"),
            };
            (tier, rule)
        }
    };
    let what = match flow.port {
        Some(port) => format!("{} {}/{port}", flow.peer, flow.protocol),
        None => format!("{} {}", flow.peer, flow.protocol),
    };
    Some(match tier {
        Tier::Admin => (
            IssueKind::DeniedByAdminTier,
            format!(
                "{what} is denied by {rule}: the Admin tier comes before every NetworkPolicy, so \
                 no NetworkPolicy can allow it (ask the cluster's administrators)"
            ),
        ),
        Tier::Baseline => (
            IssueKind::DeniedByBaselineTier,
            format!(
                "{what} is denied by {rule}: a NetworkPolicy selecting the pod for {} would \
                 override the Baseline tier, but would also isolate the pod, denying all else it \
                 does in that direction; write that policy with all of its traffic, or change \
                 the Baseline policy",
                flow.direction
            ),
        ),
    })
}

/// The flow's protocol and port when a policy can allow it; otherwise why not.
fn expressible(
    flow: &FlowToAllow,
    pod: &FlowPod,
    snapshot: Option<&Snapshot>,
) -> Result<(Protocol, u16), (IssueKind, String)> {
    if let Some(snapshot) = snapshot
        && snapshot
            .namespace(&pod.key.namespace)
            .is_none_or(|namespace| namespace.terminating)
    {
        return Err((
            IssueKind::NamespaceGone,
            format!(
                "namespace {} is being deleted or not in the manifests (deleted since the \
                 drop?): no policy can be created there",
                pod.key.namespace
            ),
        ));
    }
    if pod.unknown {
        return Err((
            IssueKind::UnknownPod,
            format!(
                "pod {} was unknown to the agent and is not in the manifests, so its labels are \
                 unknown",
                pod.key
            ),
        ));
    }
    let Some(protocol) = policy_protocol(flow.protocol) else {
        return Err((
            IssueKind::UnsupportedProtocol,
            format!(
                "{} with {} was denied: NetworkPolicy can only name TCP, UDP and SCTP ports",
                flow.protocol, flow.peer
            ),
        ));
    };
    let Some(port) = flow.port.filter(|port| *port != 0) else {
        return Err((
            IssueKind::NoPort,
            format!(
                "{protocol} with {} was denied without a destination port in the packet (a \
                 fragment)",
                flow.peer
            ),
        ));
    };
    if let FlowPeer::External(ip) = &flow.peer {
        if let IpAddr::V6(v6) = ip
            && v6.to_ipv4_mapped().is_some()
        {
            return Err((
                IssueKind::UnsupportedAddress,
                format!("{v6} is an IPv4-mapped IPv6 address, which no ipBlock can name"),
            ));
        }
        if let Some(rule) =
            snapshot.and_then(|s| excluded_on_purpose(s, &pod.key, flow.direction, *ip))
        {
            return Err((
                IssueKind::ExcludedOnPurpose,
                format!("{ip} is left out: {rule} excludes it on purpose"),
            ));
        }
    }
    Ok((protocol, port))
}

/// The pod as the snapshot knows it now, else as the drop log knew it.
fn resolve(pod: &FlowPod, snapshot: Option<&Snapshot>) -> FlowPod {
    match snapshot.and_then(|s| s.pod(&pod.key)) {
        Some(known) => FlowPod {
            key: known.key.clone(),
            labels: known.labels.clone(),
            owner: known.owner.clone(),
            unknown: false,
        },
        None => pod.clone(),
    }
}

/// The rule of a policy that isolates the pod for `direction` and carves `ip` out of one of its
/// ipBlocks with `except`, as `ns/policy egress[0] (ipBlock 0.0.0.0/0 except 169.254.169.254/32)`.
fn excluded_on_purpose(
    snapshot: &Snapshot,
    pod: &ObjectKey,
    direction: Direction,
    ip: IpAddr,
) -> Option<String> {
    let pod = snapshot.pod(pod)?;
    snapshot
        .policies_in(&pod.key.namespace)
        .filter(|policy| policy.selects(pod))
        .flat_map(|policy| {
            let rules = policy.rules(direction).unwrap_or_default();
            rules.iter().map(move |rule| (policy, rule))
        })
        .find_map(|(policy, rule)| {
            rule.peers
                .iter()
                .flatten()
                .find_map(|peer| match &peer.kind {
                    PeerKind::IpBlock { cidr, except } if cidr.contains(&ip) => {
                        except.iter().find(|e| e.contains(&ip)).map(|e| {
                            format!(
                                "{} {direction}[{}] (ipBlock {cidr} except {e})",
                                policy.key, rule.index
                            )
                        })
                    }
                    _ => None,
                })
        })
}

/// NetworkPolicy's name for an IP protocol, when it has one.
fn policy_protocol(protocol: IpProtocol) -> Option<Protocol> {
    match protocol {
        IpProtocol::Tcp => Some(Protocol::Tcp),
        IpProtocol::Udp => Some(Protocol::Udp),
        IpProtocol::Sctp => Some(Protocol::Sctp),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
