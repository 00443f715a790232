//! Rules that allow more than they should: `any-address-peer` (an ipBlock of `0.0.0.0/0` or
//! `::/0` without `except`), `all-namespaces-ingress` (`namespaceSelector: {}` in an ingress
//! rule), `allow-all-rule` (neither peers nor ports) and `all-ports-open` (peers, but every
//! port of every protocol). Structural: they read the policy alone.

use super::context::{Context, finding, peer_field, peers_key, policy_ref, rule_field};
use super::{Finding, RuleId};
use crate::model::{Direction, NamespaceScope, Peer, PeerKind, Policy, Rule};

pub(super) fn check(context: &Context<'_>, out: &mut Vec<Finding>) {
    for policy in context.valid_policies() {
        for direction in [Direction::Ingress, Direction::Egress] {
            for rule in policy.rules(direction).unwrap_or_default() {
                open_rule(policy, direction, rule, out);
                for peer in rule.peers.iter().flatten() {
                    any_address(policy, direction, rule, peer, out);
                    if direction == Direction::Ingress {
                        all_namespaces(policy, rule, peer, out);
                    }
                }
            }
        }
    }
}

/// `allow-all-rule` and `all-ports-open`.
fn open_rule(policy: &Policy, direction: Direction, rule: &Rule, out: &mut Vec<Finding>) {
    let field = Some(rule_field(direction, rule.index));
    let key = peers_key(direction);
    match (&rule.peers, &rule.ports) {
        (None, None) => out.push(finding(
            RuleId::AllowAllRule,
            policy_ref(policy),
            field,
            format!(
                "the rule has neither `{key}` nor `ports`: it allows all {direction} traffic, so \
                 the policy isolates its pods for {direction} in name only"
            ),
            format!(
                "list the peers in `{key}` and the ports they need, or delete the rule (and the \
                 policy, if allowing everything is its purpose)"
            ),
        )),
        (Some(_), None) => out.push(finding(
            RuleId::AllPortsOpen,
            policy_ref(policy),
            field,
            "the rule has no `ports`: it allows its peers on every port of TCP, UDP and SCTP"
                .to_owned(),
            "list the ports the peers need, for example `ports: [{protocol: TCP, port: 8080}]`"
                .to_owned(),
        )),
        _ => {}
    }
}

fn any_address(
    policy: &Policy,
    direction: Direction,
    rule: &Rule,
    peer: &Peer,
    out: &mut Vec<Finding>,
) {
    let PeerKind::IpBlock { cidr, except } = &peer.kind else {
        return;
    };
    if cidr.prefix_len() != 0 || !except.is_empty() {
        return;
    }
    let family = if cidr.addr().is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    };
    let whom = match direction {
        Direction::Ingress => "source",
        Direction::Egress => "destination",
    };
    out.push(finding(
        RuleId::AnyAddressPeer,
        policy_ref(policy),
        Some(peer_field(direction, rule.index, peer.index)),
        format!(
            "ipBlock {cidr} without `except` allows every {family} {whom}: the internet, every \
             pod and node of the cluster and the cloud metadata address"
        ),
        format!(
            "list the networks that need access; keep {cidr} only with `except` for what must \
             stay out (the cluster's pod and node networks, the cloud metadata address)"
        ),
    ));
}

fn all_namespaces(policy: &Policy, rule: &Rule, peer: &Peer, out: &mut Vec<Finding>) {
    let PeerKind::Pods {
        namespaces: NamespaceScope::Matching(selector),
        pods,
    } = &peer.kind
    else {
        return;
    };
    if !selector.is_everything() {
        return;
    }
    let who = if pods.is_everything() {
        "every pod of every namespace".to_owned()
    } else {
        format!(
            "pods labelled {pods} in every namespace, and anyone who can create a pod anywhere can \
             give it those labels"
        )
    };
    out.push(finding(
        RuleId::AllNamespacesIngress,
        policy_ref(policy),
        Some(format!(
            "{}.namespaceSelector",
            peer_field(Direction::Ingress, rule.index, peer.index)
        )),
        format!("`namespaceSelector: {{}}` admits {who}, including namespaces created later"),
        "select the namespaces that need access by label, for example `namespaceSelector: \
         {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}`"
            .to_owned(),
    ));
}
