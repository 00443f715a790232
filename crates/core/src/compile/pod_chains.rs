//! The chain of one isolated pod and direction (`in_<ns>_<pod>`, `eg_<ns>_<pod>`): traffic to
//! itself, one counted rule per policy rule and peer set, then the default deny (NFLOG and a
//! counted drop) or, for an audited pod, NFLOG under the audit prefix and a counted allow.
//! For an observed pod, the log chains of observe mode ([`log_chain`]): its allowing rules go
//! to its allow-log chain, and a direction no policy isolates dispatches to its open-log chain.
//!
//! Owns the chains' order and verdicts. Does not own what a policy rule matches (`rules`),
//! which pods are isolated or how the dispatch maps reach the chain
//! ([`super::compile_with_interfaces`]).

use std::collections::BTreeMap;

use super::rules::RuleCompiler;
use super::ruleset::{AddrField, Chain, Expr, Rule, Set};
use super::{
    AUDIT_COMMENT, DENY_COMMENT, LogKind, MAX_COMMENT, Options, log_chain_name, pod_chain_name,
    truncate,
};
use crate::model::{Direction, Enforcement, Pod, Policy, Snapshot};

pub(super) fn pod_chain(
    snapshot: &Snapshot,
    pod: &Pod,
    direction: Direction,
    isolating: &[&Policy],
    allow_log_chain: Option<&str>,
    options: &Options,
    sets: &mut BTreeMap<String, Set>,
) -> Chain {
    let (peer_field, allow) = match direction {
        Direction::Ingress => (AddrField::Source, Expr::Accept),
        Direction::Egress => (AddrField::Destination, Expr::Return),
    };
    // Observed: a rule's allow goes through the allow-log chain, which logs and then allows.
    let rule_allow = match allow_log_chain {
        Some(chain) => Expr::Goto(chain.to_owned()),
        None => allow.clone(),
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
                exprs.push(rule_allow.clone());
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
    let (kind, comment, verdict) = match (audited, direction) {
        (false, _) => (LogKind::Denied, DENY_COMMENT, Expr::Drop),
        (true, Direction::Ingress) => (LogKind::Audited, AUDIT_COMMENT, Expr::Accept),
        (true, Direction::Egress) => (LogKind::Audited, AUDIT_COMMENT, Expr::Return),
    };
    [
        log_rule(pod, direction, kind, format!("log {comment}"), options),
        Rule {
            exprs: vec![Expr::Counter, verdict],
            comment: Some(truncate(
                format!("{comment} {direction} {}", pod.key),
                MAX_COMMENT,
            )),
        },
    ]
}

/// An observed pod's log chain for `kind` ([`LogKind::Allowed`] or [`LogKind::NotIsolated`]):
/// the rate-limited NFLOG rule (after the pod's traffic to itself, which is exempt), then for
/// allowed packets the allow (`accept`, or `return` for
/// egress, so the destination's ingress chain still decides). A pod chain's allowing rules
/// `goto` the allow-log chain; the dispatch maps `jump` to the open-log chain of a direction no
/// policy isolates, whose end lets the packet on.
pub(super) fn log_chain(
    pod: &Pod,
    direction: Direction,
    kind: LogKind,
    options: &Options,
) -> Chain {
    let what = match kind {
        LogKind::NotIsolated => "not isolated",
        _ => "allowed",
    };
    let mut rules = Vec::new();
    if kind == LogKind::NotIsolated {
        // Traffic to itself is exempt, as in the pod chain (and `evaluate`): not logged.
        let peer_field = match direction {
            Direction::Ingress => AddrField::Source,
            Direction::Egress => AddrField::Destination,
        };
        rules.extend(pod.ips.iter().map(|ip| Rule {
            exprs: vec![Expr::AddressIs(peer_field, *ip), Expr::Return],
            comment: Some("to itself".into()),
        }));
    }
    rules.push(log_rule(
        pod,
        direction,
        kind,
        format!("log {what}"),
        options,
    ));
    if kind == LogKind::Allowed {
        let verdict = match direction {
            Direction::Ingress => Expr::Accept,
            Direction::Egress => Expr::Return,
        };
        rules.push(Rule {
            exprs: vec![verdict],
            comment: Some(truncate(
                format!("{what} {direction} {}", pod.key),
                MAX_COMMENT,
            )),
        });
    }
    Chain {
        name: log_chain_name(pod, direction, kind),
        hook: None,
        rules,
    }
}

/// The rate-limited NFLOG rule of `kind` for a pod and direction: at most
/// [`Options::log_rate_per_second`] records a second (burst [`Options::log_burst_packets`]),
/// the rest go unlogged, never affecting the verdict (the rule has none).
pub(super) fn log_rule(
    pod: &Pod,
    direction: Direction,
    kind: LogKind,
    comment: String,
    options: &Options,
) -> Rule {
    Rule {
        exprs: vec![
            Expr::Limit {
                rate_per_second: options.log_rate_per_second,
                burst_packets: options.log_burst_packets,
            },
            Expr::Log {
                prefix: kind.log_prefix(direction, pod),
                group: options.nflog_group,
            },
        ],
        comment: Some(comment),
    }
}
