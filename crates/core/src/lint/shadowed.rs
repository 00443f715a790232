//! `shadowed-rule`: a rule that another policy already allows in full. The other policy must
//! be in the same namespace, valid, isolate the same direction, select every pod this one
//! selects, and have a rule that covers this rule's peers and ports ([`super::cover`]); then
//! this rule has no effect while that policy exists.

use super::context::{Context, finding, policy_ref, rule_field};
use super::cover;
use super::{Finding, RuleId};
use crate::model::Direction;

pub(super) fn check(context: &Context<'_>, out: &mut Vec<Finding>) {
    if !context.enabled(RuleId::ShadowedRule) {
        return;
    }
    for policy in context.valid_policies() {
        let namespace = &policy.key.namespace;
        let own_labels = context.snapshot.namespace_labels(namespace);
        let broader: Vec<_> = context
            .snapshot
            .policies_in(namespace)
            .filter(|other| other.key != policy.key && !other.is_invalid())
            .filter(|other| cover::selector(&other.pod_selector, &policy.pod_selector))
            .collect();
        for direction in [Direction::Ingress, Direction::Egress] {
            for rule in policy.rules(direction).unwrap_or_default() {
                let covering = broader.iter().find_map(|other| {
                    let rules = other.rules(direction).unwrap_or_default();
                    let by = rules.iter().find(|r| cover::rule(r, rule, &own_labels))?;
                    Some((other, by.index))
                });
                let Some((other, index)) = covering else {
                    continue;
                };
                out.push(finding(
                    RuleId::ShadowedRule,
                    policy_ref(policy),
                    Some(rule_field(direction, rule.index)),
                    format!(
                        "{} {direction}[{index}] already allows everything this rule allows, for \
                         every pod this policy selects: the rule has no effect while that policy \
                         exists",
                        other.key
                    ),
                    format!(
                        "delete this rule, or narrow {} if it allows more than intended",
                        other.key
                    ),
                ));
            }
        }
    }
}
