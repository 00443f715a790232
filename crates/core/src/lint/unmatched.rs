//! Selectors and ports that match nothing: `selects-no-pods` (a podSelector that selects none
//! of its namespace's pods), `peer-selects-no-pods`, `namespace-selector-matches-nothing` and
//! `named-port-not-declared` (no pod the traffic goes to declares the name with that protocol).
//! They judge by the pods and namespaces of the input, so they run only when it has pods
//! ([`Context::knows_pods`]).

use super::context::{Context, finding, list, peer_field, policy_ref, port_field};
use super::{Finding, RuleId};
use crate::model::{
    Direction, NAMESPACE_NAME_LABEL, NamespaceScope, Operator, Peer, PeerKind, Pod, Policy,
    PortSpec, Rule, Selector,
};

pub(super) fn check(context: &Context<'_>, out: &mut Vec<Finding>) {
    if !context.knows_pods() {
        return;
    }
    for policy in context.valid_policies() {
        selects_no_pods(context, policy, out);
        for direction in [Direction::Ingress, Direction::Egress] {
            for rule in policy.rules(direction).unwrap_or_default() {
                for peer in rule.peers.iter().flatten() {
                    peer_matches_nothing(context, policy, direction, rule, peer, out);
                }
                named_ports(context, policy, direction, rule, out);
            }
        }
    }
}

fn selects_no_pods(context: &Context<'_>, policy: &Policy, out: &mut Vec<Finding>) {
    let namespace = &policy.key.namespace;
    let pods = context.endpoints_in(namespace);
    if policy.pod_selector.is_everything()
        || pods.is_empty()
        || !context.selected(policy).is_empty()
    {
        return;
    }
    let names: Vec<&str> = pods.iter().map(|p| p.key.name.as_str()).collect();
    out.push(finding(
        RuleId::SelectsNoPods,
        policy_ref(policy),
        Some("spec.podSelector".to_owned()),
        format!(
            "spec.podSelector ({}) selects none of the {} pods of namespace {namespace} ({}): \
             the policy protects nothing",
            policy.pod_selector,
            pods.len(),
            list(&names, 3)
        ),
        format!(
            "match labels the pods carry (`kubectl get pods -n {namespace} --show-labels`), or \
             delete the policy"
        ),
    ));
}

fn peer_matches_nothing(
    context: &Context<'_>,
    policy: &Policy,
    direction: Direction,
    rule: &Rule,
    peer: &Peer,
    out: &mut Vec<Finding>,
) {
    let PeerKind::Pods { namespaces, pods } = &peer.kind else {
        return;
    };
    let field = peer_field(direction, rule.index, peer.index);
    if let NamespaceScope::Matching(selector) = namespaces
        && !selector.is_everything()
        && !context
            .snapshot
            .namespaces()
            .any(|ns| selector.matches(&ns.labels))
    {
        out.push(namespace_selector_matches_nothing(
            context, policy, selector, field,
        ));
        return;
    }
    let policy_namespace = &policy.key.namespace;
    let selects_any = context
        .snapshot
        .pod_namespaces_with_labels()
        .filter(|(ns, labels)| namespaces.covers(policy_namespace, ns, labels))
        .any(|(ns, _)| {
            let selected = context.snapshot.pods_selected(ns, pods);
            selected.into_iter().any(Pod::is_policy_endpoint)
        });
    if selects_any {
        return;
    }
    out.push(finding(
        RuleId::PeerSelectsNoPods,
        policy_ref(policy),
        Some(field),
        format!("{peer}: no pod of the cluster matches, so the peer allows nothing today"),
        "match labels the pods carry (`kubectl get pods -A --show-labels`), or remove the peer"
            .to_owned(),
    ));
}

fn namespace_selector_matches_nothing(
    context: &Context<'_>,
    policy: &Policy,
    selector: &Selector,
    field: String,
) -> Finding {
    let keys = selector
        .match_labels
        .keys()
        .chain(
            selector
                .expressions
                .iter()
                .filter_map(|r| match r.operator {
                    Operator::In(_) | Operator::Exists => Some(&r.key),
                    Operator::NotIn(_) | Operator::DoesNotExist => None,
                }),
        );
    let missing: Vec<&String> = keys
        .filter(|key| {
            !context
                .snapshot
                .namespaces()
                .any(|ns| ns.labels.contains_key(*key))
        })
        .collect();
    let why = if missing.is_empty() {
        "no namespace has labels that match".to_owned()
    } else {
        let missing: Vec<String> = missing.iter().map(|k| format!("`{k}`")).collect();
        format!("no namespace carries the label {}", missing.join(" or "))
    };
    let fix = match selector.match_labels.get("name") {
        Some(name)
            if !context
                .snapshot
                .namespaces()
                .any(|ns| ns.labels.contains_key("name")) =>
        {
            format!(
                "select the namespace by the label every namespace carries: `{NAMESPACE_NAME_LABEL}: {name}`"
            )
        }
        _ => "use labels the namespaces carry (`kubectl get namespaces --show-labels`)".to_owned(),
    };
    finding(
        RuleId::NamespaceSelectorMatchesNothing,
        policy_ref(policy),
        Some(format!("{field}.namespaceSelector")),
        format!("namespaceSelector ({selector}) matches no namespace: {why}"),
        fix,
    )
}

/// Named ports of the rule that none of the pods its traffic goes to declares.
fn named_ports(
    context: &Context<'_>,
    policy: &Policy,
    direction: Direction,
    rule: &Rule,
    out: &mut Vec<Finding>,
) {
    let named = rule
        .ports
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, port)| match &port.port {
            Some(PortSpec::Named(name)) => Some((i, name, port.protocol)),
            _ => None,
        });
    let mut destinations: Option<Vec<&Pod>> = None;
    for (index, name, protocol) in named {
        let pods = destinations.get_or_insert_with(|| match direction {
            Direction::Ingress => context.selected(policy),
            Direction::Egress => context
                .snapshot
                .pods()
                .filter(|pod| match &rule.peers {
                    None => pod.is_policy_endpoint(),
                    Some(peers) => peers
                        .iter()
                        .any(|p| p.selects_pod(context.snapshot, &policy.key.namespace, pod)),
                })
                .collect(),
        });
        if pods.is_empty()
            || pods
                .iter()
                .any(|pod| pod.named_port(name, protocol).is_some())
        {
            continue;
        }
        let names: Vec<String> = pods.iter().map(|p| p.key.to_string()).collect();
        let whose = match direction {
            Direction::Ingress => "the pods this policy selects",
            Direction::Egress => "the pods this rule's peers select",
        };
        let other = pods.iter().find_map(|pod| {
            pod.ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| format!(" ({} declares it for {})", pod.key, p.protocol))
        });
        let protocol_upper = protocol.as_str().to_ascii_uppercase();
        out.push(finding(
            RuleId::NamedPortNotDeclared,
            policy_ref(policy),
            Some(port_field(direction, rule.index, index)),
            format!(
                "named port `{name}` ({protocol_upper}) is declared by none of {whose} ({}){}: \
                 the entry matches nothing",
                list(&names, 3),
                other.unwrap_or_default()
            ),
            format!(
                "name a containerPort `{name}` with protocol {protocol_upper} on those pods, or \
                 write the port number"
            ),
        ));
    }
}
