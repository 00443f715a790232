//! `egress-without-dns` and `dns-udp-only`: pods isolated for egress must reach the cluster's
//! DNS resolver (the config's `dns`) on UDP, and on TCP for answers too large for a datagram.
//! Judged with the evaluator on each egress-isolating policy's pods, or its witness
//! ([`super::probe`]), against each resolver pod: the Service spreads lookups over all of them.

use std::collections::BTreeSet;

use super::context::{Context, finding, labels_text, list, policy_ref};
use super::probe::Subjects;
use super::{Finding, RuleId};
use crate::model::{NAMESPACE_NAME_LABEL, ObjectKey, Policy, Protocol};
use crate::policy::{DirectionVerdict, Endpoint, RuleRef};

pub(super) fn check(context: &Context<'_>, out: &mut Vec<Finding>) {
    if !context.enabled(RuleId::EgressWithoutDns) && !context.enabled(RuleId::DnsUdpOnly) {
        return;
    }
    let probes = context.probes();
    let port = context.config.dns.port;
    // Rules that allow DNS on UDP to a subject that TCP does not reach, reported once each.
    let mut udp_only: BTreeSet<(ObjectKey, usize)> = BTreeSet::new();
    for policy in context.valid_policies() {
        if policy.egress.is_none() {
            continue;
        }
        let subjects = probes.subjects(policy);
        let mut without_udp = BTreeSet::new();
        let mut isolated_by = BTreeSet::new();
        for subject in subjects.keys() {
            for resolver in probes.resolvers() {
                let to = |protocol| {
                    let destination = Endpoint::Pod(resolver.clone());
                    probes.egress(subject, destination, protocol, port)
                };
                match to(Protocol::Udp) {
                    Some(DirectionVerdict::Denied {
                        isolated_by: by, ..
                    }) => {
                        without_udp.extend(subjects.members_of(subject));
                        isolated_by.extend(by);
                    }
                    Some(DirectionVerdict::Allowed { rule, .. }) => {
                        if let Some(DirectionVerdict::Denied { .. }) = to(Protocol::Tcp) {
                            udp_only.insert((rule.policy.clone(), rule.index));
                        }
                    }
                    _ => {}
                }
            }
        }
        if !without_udp.is_empty() {
            let without_udp: Vec<&ObjectKey> = without_udp.into_iter().collect();
            let isolated_by: Vec<ObjectKey> = isolated_by.into_iter().collect();
            out.push(without_dns(
                context,
                policy,
                subjects,
                &without_udp,
                &isolated_by,
            ));
        }
    }
    for (policy, index) in udp_only {
        if let Some(policy) = context.snapshot.policy(&policy) {
            out.push(dns_udp_only(context, policy, index));
        }
    }
}

/// `pods k8s-app=kube-dns in kube-system on UDP 53`.
fn resolver_text(context: &Context<'_>, protocol: &str) -> String {
    let dns = &context.config.dns;
    format!(
        "the cluster's DNS resolver (pods {} in {}) on {protocol} {}",
        labels_text(&dns.pod_labels),
        dns.namespace,
        dns.port
    )
}

fn without_dns(
    context: &Context<'_>,
    policy: &Policy,
    subjects: &Subjects,
    denied: &[&ObjectKey],
    isolated_by: &[ObjectKey],
) -> Finding {
    let who = match subjects {
        Subjects::Pods(_) => format!("pods it selects ({})", list(denied, 3)),
        Subjects::Witness(_) | Subjects::Nobody => {
            "a pod it selects (none in the input; judged for one carrying the labels its \
             podSelector requires)"
                .to_owned()
        }
    };
    let field = match policy.egress.as_deref() {
        Some([_, ..]) => "spec.egress",
        _ => "spec.policyTypes",
    };
    let dns = &context.config.dns;
    let pod_labels: Vec<String> = dns
        .pod_labels
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    finding(
        RuleId::EgressWithoutDns,
        policy_ref(policy),
        Some(field.to_owned()),
        format!(
            "this policy isolates egress, and {who} cannot reach {}: no egress rule of the \
             policies that isolate them ({}) allows it, so name lookups fail",
            resolver_text(context, "UDP"),
            list(isolated_by, 5)
        ),
        format!(
            "allow DNS in an egress rule of a policy selecting these pods: `to: [{{namespaceSelector: \
             {{matchLabels: {{{NAMESPACE_NAME_LABEL}: {}}}}}, podSelector: {{matchLabels: {{{}}}}}}}]` \
             with `ports: [{{protocol: UDP, port: {port}}}, {{protocol: TCP, port: {port}}}]`",
            dns.namespace,
            pod_labels.join(", "),
            port = dns.port
        ),
    )
}

fn dns_udp_only(context: &Context<'_>, policy: &Policy, index: usize) -> Finding {
    let rule = RuleRef {
        policy: policy.key.clone(),
        direction: crate::model::Direction::Egress,
        index,
    };
    let port = context.config.dns.port;
    finding(
        RuleId::DnsUdpOnly,
        policy_ref(policy),
        Some(format!("spec.egress[{index}].ports")),
        format!(
            "{rule} allows {} but pods it lets through cannot reach it on TCP {port}: lookups \
             whose answers do not fit a UDP datagram time out",
            resolver_text(context, "UDP"),
        ),
        format!("add `{{protocol: TCP, port: {port}}}` beside the UDP port"),
    )
}
