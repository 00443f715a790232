//! Enriching a logged packet with what the cluster snapshot knows: who the policed pod and the
//! other end are, which policies isolate the pod in that direction, for an allowed first
//! packet (observe mode) which rule allowed it, and for a ClusterNetworkPolicy's deny (or
//! accept) the tier and the rule.
//!
//! Pure: a [`LoggedPacket`] and a [`Snapshot`] in, the flow log's line out ([`FlowLine`],
//! standing for that one packet). The isolating policies are found the way the compiler chose
//! them ([`crate::compile::compile`]), and the allowing rule is the one
//! [`crate::policy::evaluate`] finds, so they name the policies of the chain that logged the
//! packet, provided the snapshot is the one the ruleset came from. It does not decode packets
//! ([`super::decode`]) or write lines anywhere.

use std::net::IpAddr;
use std::time::SystemTime;

use super::decode::LoggedPacket;
use crate::compile::LogKind;
use crate::flow_line::{
    Action, AllowedBy, ClusterPolicyRule, FlowLine, Peer, PodInfo, rfc3339_millis,
};
use crate::model::{ClusterAction, Direction, Labels, Pod, Snapshot};
use crate::policy::{DirectionVerdict, Endpoint, Flow, evaluate};

/// nftables' limit on log prefixes: the compiler cuts longer ones, losing the end of the name.
const MAX_LOG_PREFIX: usize = 127;

/// Builds the line of one logged packet seen at `now` (the record's `received_at` is the
/// natural choice).
pub fn enrich(packet: &LoggedPacket, snapshot: &Snapshot, now: SystemTime) -> FlowLine {
    let (policed_ip, peer_ip) = match packet.direction {
        Direction::Ingress => (packet.destination, packet.source),
        Direction::Egress => (packet.source, packet.destination),
    };
    let pod = policed_pod(packet, snapshot, policed_ip);
    let decided = match (packet.kind, pod) {
        (LogKind::Allowed | LogKind::TierDenied(_) | LogKind::TierAudited(_), Some(pod)) => {
            side_verdict(packet, snapshot, pod)
        }
        _ => None,
    };
    let allowed_by = match (&decided, packet.kind) {
        (Some(DirectionVerdict::Allowed { rule, .. }), LogKind::Allowed) => Some(AllowedBy {
            policy: rule.policy.to_string(),
            rule: rule.index,
        }),
        _ => None,
    };
    // The deciding ClusterNetworkPolicy rule: the one `evaluate` finds when it agrees with
    // what the kernel logged (a deny of that tier, or an accept), else only the logged tier.
    let cluster_rule = decided
        .as_ref()
        .and_then(DirectionVerdict::cluster_rule)
        .filter(|rule| match packet.kind.tier() {
            Some(tier) => rule.tier == tier && rule.action == ClusterAction::Deny,
            None => rule.action == ClusterAction::Accept,
        });
    let tier = cluster_rule.map(|rule| rule.tier).or(packet.kind.tier());
    let cluster_policy = cluster_rule.map(|rule| ClusterPolicyRule {
        name: rule.policy.clone(),
        priority: rule.priority,
        rule: rule.index,
        rule_name: rule.name.clone(),
    });
    let policies = pod
        .map(|pod| {
            snapshot
                .policies_in(&pod.key.namespace)
                .filter(|p| p.rules(packet.direction).is_some() && p.selects(pod))
                .map(|p| p.key.to_string())
                .collect()
        })
        .unwrap_or_default();
    let pod = match pod {
        Some(pod) => pod_info(pod),
        None => PodInfo {
            namespace: packet.pod.namespace.clone(),
            name: packet.pod.name.clone(),
            labels: Labels::new(),
            owner: None,
            unknown: true,
        },
    };
    let peer = match snapshot.pod_by_ip(peer_ip) {
        Some(peer) => Peer::Pod(pod_info(peer)),
        None => Peer::External { ip: peer_ip },
    };
    FlowLine {
        ts: rfc3339_millis(now),
        action: match packet.kind {
            LogKind::Denied | LogKind::TierDenied(_) => Action::Deny,
            LogKind::Audited | LogKind::TierAudited(_) => Action::Audit,
            LogKind::Allowed | LogKind::NotIsolated => Action::Allow,
        },
        direction: packet.direction,
        pod,
        peer,
        protocol: packet.protocol,
        port: packet.destination_port,
        source_port: packet.source_port,
        source: Some(packet.source),
        destination: Some(packet.destination),
        policies,
        allowed_by,
        tier,
        cluster_policy,
        count: 1,
        first_ts: None,
        last_ts: None,
    }
}

/// The pod named by the prefix; when the prefix was cut at nftables' limit, the pod at the
/// packet's policed-side address whose name starts with what is left.
fn policed_pod<'a>(
    packet: &LoggedPacket,
    snapshot: &'a Snapshot,
    policed_ip: IpAddr,
) -> Option<&'a Pod> {
    if let Some(pod) = snapshot.pod(&packet.pod) {
        return Some(pod);
    }
    let prefix_len = packet.kind.prefix().len()
        + packet.direction.as_str().len()
        + 1
        + packet.pod.namespace.len()
        + 1
        + packet.pod.name.len();
    // The cut falls on a char boundary, so up to 3 bytes short of the limit.
    if prefix_len + 3 < MAX_LOG_PREFIX {
        return None;
    }
    snapshot.pod_by_ip(policed_ip).filter(|pod| {
        pod.key.namespace == packet.pod.namespace && pod.key.name.starts_with(&packet.pod.name)
    })
}

/// How [`evaluate`] decides the packet's flow on `pod`'s side (which rule of which tier), on
/// the agent's snapshot; `None` for protocols without ports (a policy names none of them by
/// port; evaluating needs one).
fn side_verdict(packet: &LoggedPacket, snapshot: &Snapshot, pod: &Pod) -> Option<DirectionVerdict> {
    let protocol = packet.protocol.policy_protocol()?;
    let port = packet.destination_port?;
    let pod_end = Endpoint::Pod(pod.key.clone());
    let (source, destination) = match packet.direction {
        Direction::Egress => (pod_end, Endpoint::Ip(packet.destination)),
        Direction::Ingress => (Endpoint::Ip(packet.source), pod_end),
    };
    let flow = Flow {
        source,
        destination,
        protocol,
        port,
    };
    let verdict = evaluate(snapshot, &flow).ok()?;
    Some(match packet.direction {
        Direction::Egress => verdict.egress,
        Direction::Ingress => verdict.ingress,
    })
}

fn pod_info(pod: &Pod) -> PodInfo {
    PodInfo {
        namespace: pod.key.namespace.clone(),
        name: pod.key.name.clone(),
        labels: pod.labels.clone(),
        owner: pod.owner.clone(),
        unknown: false,
    }
}

#[cfg(test)]
mod tests;
