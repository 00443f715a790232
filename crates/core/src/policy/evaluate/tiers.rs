//! The ClusterNetworkPolicy tiers' share of [`super::evaluate`]: for one side of a flow, the
//! first rule of a tier that matches, in the tier's order (policies by priority, then name;
//! each policy's rules as written).
//!
//! The compiled tier chains ([`crate::compile`](mod@crate::compile)) put the same rules in the
//! same order, and match peers the same way: `namespaces` and `pods` peers by the pod (so every
//! address of a selected pod), `networks` and `nodes` by the address on the packet.

use super::{ClusterRuleRef, DirectionVerdict, Flow, Resolved};
use crate::model::{ClusterAction, ClusterPeer, ClusterRule, Direction, Pod, Snapshot, Tier};

/// The side being decided.
pub(super) struct Side<'a, 'b> {
    /// The pod whose side it is (the subject).
    pub(super) pod: &'a Pod,
    /// Which side.
    pub(super) direction: Direction,
    /// The flow.
    pub(super) flow: &'b Flow,
    /// The other end.
    pub(super) other: &'b Resolved<'a>,
    /// The destination pod, where named ports resolve (`None` for an external destination).
    pub(super) destination: Option<&'a Pod>,
}

/// The tier's decision for the side: `Some` verdict when a rule accepts or denies; `None` when
/// none matches or one passes (a passing rule is added to `passed`).
pub(super) fn decide(
    snapshot: &Snapshot,
    tier: Tier,
    side: &Side<'_, '_>,
    passed: &mut Vec<ClusterRuleRef>,
) -> Option<DirectionVerdict> {
    for policy in snapshot.tier_policies(tier) {
        let rules = policy.rules(side.direction);
        if rules.is_empty() || !policy.selects(snapshot, side.pod) {
            continue;
        }
        let Some(rule) = rules.iter().find(|rule| matches(snapshot, rule, side)) else {
            continue;
        };
        let reference = ClusterRuleRef {
            policy: policy.name.clone(),
            tier,
            priority: policy.priority,
            direction: side.direction,
            index: rule.index,
            name: rule.name.clone(),
            action: rule.action,
        };
        if rule.action == ClusterAction::Pass {
            passed.push(reference);
            return None;
        }
        return Some(DirectionVerdict::Cluster {
            pod: side.pod.key.clone(),
            rule: reference,
            passed: std::mem::take(passed),
        });
    }
    None
}

/// Whether the rule matches the flow: one of its peers is the other end, and one of its ports
/// (when it lists any) is the flow's.
fn matches(snapshot: &Snapshot, rule: &ClusterRule, side: &Side<'_, '_>) -> bool {
    let peer = rule.peers.iter().any(|peer| match side.other {
        Resolved::Pod(pod, address) => {
            peer.selects_pod(snapshot, pod)
                || match address {
                    Some(ip) => peer.contains_ip(snapshot, *ip),
                    None => pod.ips.iter().any(|ip| peer.contains_ip(snapshot, *ip)),
                }
        }
        Resolved::Other { ip, .. } => {
            matches!(peer, ClusterPeer::Any) || ip.is_some_and(|ip| peer.contains_ip(snapshot, ip))
        }
    });
    peer && rule.ports.as_ref().is_none_or(|ports| {
        ports
            .iter()
            .any(|p| p.matches(side.flow.protocol, side.flow.port, side.destination))
    })
}
