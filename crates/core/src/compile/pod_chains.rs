//! The chain of one isolated pod and direction (`in_<ns>_<pod>`, `eg_<ns>_<pod>`): traffic to
//! itself, one counted rule per policy rule and peer set, then the default deny (NFLOG and a
//! counted drop) or, for an audited pod, NFLOG under the audit prefix and a counted allow.
//!
//! Owns the chain's order and verdicts. Does not own what a policy rule matches (`rules`),
//! which pods are isolated or how the dispatch maps reach the chain
//! ([`super::compile_with_interfaces`]).

use std::collections::BTreeMap;

use super::rules::RuleCompiler;
use super::ruleset::{AddrField, Chain, Expr, Rule, Set};
use super::{
    AUDIT_COMMENT, AUDIT_LOG_PREFIX, DENY_COMMENT, LOG_PREFIX, MAX_COMMENT, MAX_LOG_PREFIX,
    Options, pod_chain_name, truncate,
};
use crate::model::{Direction, Enforcement, Pod, Policy, Snapshot};

pub(super) fn pod_chain(
    snapshot: &Snapshot,
    pod: &Pod,
    direction: Direction,
    isolating: &[&Policy],
    options: &Options,
    sets: &mut BTreeMap<String, Set>,
) -> Chain {
    let (peer_field, allow) = match direction {
        Direction::Ingress => (AddrField::Source, Expr::Accept),
        Direction::Egress => (AddrField::Destination, Expr::Return),
    };
    let mut rules: Vec<Rule> = pod
        .ips
        .iter()
        .map(|ip| Rule {
            exprs: vec![Expr::AddressIs(peer_field, *ip), allow.clone()],
            comment: Some("to itself".into()),
        })
        .collect();

    for policy in isolating {
        for rule in policy.rules(direction).unwrap_or_default() {
            let comment = truncate(
                format!("{} {}[{}]", policy.key, direction, rule.index),
                MAX_COMMENT,
            );
            let compiled = RuleCompiler {
                snapshot,
                policy,
                rule,
                direction,
                target: pod,
                sets: &mut *sets,
                peers: None,
            };
            for exprs in compiled.matchers() {
                let mut exprs = exprs;
                exprs.push(Expr::Counter);
                exprs.push(allow.clone());
                rules.push(Rule {
                    exprs,
                    comment: Some(comment.clone()),
                });
            }
        }
    }

    let audited =
        options.audit_all || snapshot.enforcement(&pod.key.namespace) == Enforcement::Audit;
    rules.extend(default_deny(pod, direction, audited, options));
    Chain {
        name: pod_chain_name(pod, direction),
        hook: None,
        rules,
    }
}

/// The end of a pod chain, for packets no policy rule allowed: a rate-limited NFLOG rule and a
/// counted drop; for an audited pod, an NFLOG rule with the audit prefix and a counted accept
/// instead (`return` for egress, so the destination's ingress chain still decides, as for an
/// allowed packet).
fn default_deny(pod: &Pod, direction: Direction, audited: bool, options: &Options) -> [Rule; 2] {
    let (log_prefix, comment, verdict) = match (audited, direction) {
        (false, _) => (LOG_PREFIX, DENY_COMMENT, Expr::Drop),
        (true, Direction::Ingress) => (AUDIT_LOG_PREFIX, AUDIT_COMMENT, Expr::Accept),
        (true, Direction::Egress) => (AUDIT_LOG_PREFIX, AUDIT_COMMENT, Expr::Return),
    };
    let prefix = truncate(
        format!(
            "{log_prefix}{}:{}/{}",
            direction, pod.key.namespace, pod.key.name
        ),
        MAX_LOG_PREFIX,
    );
    [
        Rule {
            exprs: vec![
                Expr::Limit {
                    rate_per_second: options.log_rate_per_second,
                    burst_packets: options.log_burst_packets,
                },
                Expr::Log {
                    prefix,
                    group: options.nflog_group,
                },
            ],
            comment: Some(format!("log {comment}")),
        },
        Rule {
            exprs: vec![Expr::Counter, verdict],
            comment: Some(truncate(
                format!("{comment} {direction} {}", pod.key),
                MAX_COMMENT,
            )),
        },
    ]
}
