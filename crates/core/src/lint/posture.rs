//! The cluster's posture, namespace by namespace: `missing-default-deny-ingress`,
//! `missing-default-deny-egress` (no policy with `podSelector: {}` isolates the direction) and
//! `unprotected-pod` (no policy selects the pod at all, one finding per workload). Namespaces
//! in the config's `exempt-namespaces` are left out.

use std::collections::BTreeMap;

use super::context::{Context, finding, labels_text, list};
use super::{Finding, RuleId};
use crate::model::{Direction, ObjectKind, ObjectRef, Pod};

pub(super) fn check(context: &Context<'_>, out: &mut Vec<Finding>) {
    for namespace in context.snapshot.namespace_names() {
        if context.config.is_exempt(namespace) {
            continue;
        }
        for (direction, rule) in [
            (Direction::Ingress, RuleId::MissingDefaultDenyIngress),
            (Direction::Egress, RuleId::MissingDefaultDenyEgress),
        ] {
            let default_deny = context
                .snapshot
                .policies_in(namespace)
                .any(|p| p.pod_selector.is_everything() && p.rules(direction).is_some());
            if !default_deny {
                out.push(missing_default_deny(namespace, direction, rule));
            }
        }
        unprotected(context, namespace, out);
    }
}

fn missing_default_deny(namespace: &str, direction: Direction, rule: RuleId) -> Finding {
    let (exposure, kind) = match direction {
        Direction::Ingress => (
            "accepts connections from every pod of the cluster and from outside it",
            "Ingress",
        ),
        Direction::Egress => ("can connect anywhere", "Egress"),
    };
    finding(
        rule,
        ObjectRef::namespace(namespace),
        None,
        format!(
            "no policy selects every pod of namespace {namespace} for {direction}: a pod no \
             other policy isolates {exposure}"
        ),
        format!(
            "add a default deny: a NetworkPolicy in {namespace} with `podSelector: {{}}` and \
             `policyTypes: [{kind}]` and no {direction} rules, then allow what is needed"
        ),
    )
}

/// One finding per workload (pods of the same owner, or a pod without one) that no policy
/// selects.
fn unprotected(context: &Context<'_>, namespace: &str, out: &mut Vec<Finding>) {
    let mut workloads: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in context.endpoints_in(namespace) {
        let selected = context
            .snapshot
            .policies_in(namespace)
            .any(|policy| policy.selects(pod));
        if !selected {
            let workload = match &pod.owner {
                Some(owner) => format!("{} {}", owner.kind, owner.name),
                None => format!("pod {}", pod.key.name),
            };
            workloads.entry(workload).or_default().push(pod);
        }
    }
    for (workload, pods) in workloads {
        let [first, ..] = pods.as_slice() else {
            continue;
        };
        let names: Vec<&str> = pods.iter().map(|p| p.key.name.as_str()).collect();
        let who = if pods.len() == 1 {
            format!("pod {namespace}/{}", first.key.name)
        } else {
            format!(
                "the {} pods of {workload} ({})",
                pods.len(),
                list(&names, 3)
            )
        };
        let labels = if first.labels.is_empty() {
            "(it has no labels)".to_owned()
        } else {
            labels_text(&first.labels)
        };
        out.push(finding(
            RuleId::UnprotectedPod,
            ObjectRef::namespaced(ObjectKind::Pod, &first.key),
            Some("metadata.labels".to_owned()),
            if pods.len() == 1 {
                format!(
                    "{who} is selected by no NetworkPolicy: it accepts and opens any connection"
                )
            } else {
                format!(
                    "{who} are selected by no NetworkPolicy: they accept and open any connection"
                )
            },
            format!(
                "add a default deny to namespace {namespace} (`podSelector: {{}}`), or a policy \
                 whose podSelector matches the labels {labels}"
            ),
        ));
    }
}
