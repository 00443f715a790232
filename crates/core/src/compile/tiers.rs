//! The ClusterNetworkPolicy tiers of one pod and direction: which chains a packet walks, and
//! the chain of each tier.
//!
//! Per pod and direction, the dispatch maps (`ingress4`, `egress4`, ...) point at the pod's
//! first chain, and every step after it is a `goto`, so a `return` anywhere goes back to the
//! base chain after the dispatch (egress: on to the ingress dispatch) and the end of the last
//! chain is the end of the walk:
//!
//! ```text
//! admin-eg_<ns>_<pod>   Admin tier: its policies by priority then name, their rules in order
//!   Accept -> return (ingress: accept); Deny -> goto admin-deny-eg_<ns>_<pod>;
//!   Pass, or no rule matched -> goto the next tier
//! eg_<ns>_<pod>         the NetworkPolicies, when they isolate the pod (final: allow or drop)
//! base-eg_<ns>_<pod>    Baseline tier, as the Admin tier; Pass and no match -> allowed
//! ```
//!
//! A tier with no policy for the pod has no chain and is skipped; a pod with no tier chain and
//! no isolating NetworkPolicy has no dispatch entry at all (unchanged from a cluster without
//! ClusterNetworkPolicies). The deny chains (`admin-deny-eg_<ns>_<pod>`, `base-deny-...`)
//! hold the rate-limited NFLOG rule under `knp:adeny:` / `knp:bdeny:` and a counted drop; for
//! an audited pod, `knp:aaudit:` / `knp:baudit:` and the allow instead. For an observed pod an
//! Accept goes through the pod's allow-log chain and the default allow through its open-log
//! chain, as for NetworkPolicies.
//!
//! Owns the tier chains, the deny chains and the order of a tier's rules. Does not own what
//! one rule matches (`cluster_rules`), the NetworkPolicy chain and the log chains
//! (`pod_chains`), nor the dispatch maps ([`super::compile_with_interfaces`]).

use std::collections::BTreeMap;

use super::cluster_rules::ClusterRuleCompiler;
use super::pod_chains::log_rule;
use super::ruleset::{AddrField, Chain, Expr, Rule, Set};
use super::{LogKind, MAX_COMMENT, Options, names, truncate};
use crate::model::{ClusterAction, ClusterPolicy, Direction, Pod, Snapshot, Tier};

/// Where a packet goes when a tier does not decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// `goto` this chain (the next tier, or the open-log chain of an observed pod).
    Chain(String),
    /// Nothing left: allowed (`return`).
    Allow,
}

impl Next {
    fn verdict(&self) -> Expr {
        match self {
            Self::Chain(chain) => Expr::Goto(chain.clone()),
            Self::Allow => Expr::Return,
        }
    }
}

/// The name of a tier chain of a pod (`admin-in_<ns>_<pod>`, `base-eg_<ns>_<pod>`).
pub fn tier_chain_name(pod: &Pod, direction: Direction, tier: Tier) -> String {
    let kind = match (tier, direction) {
        (Tier::Admin, Direction::Ingress) => "admin-in",
        (Tier::Admin, Direction::Egress) => "admin-eg",
        (Tier::Baseline, Direction::Ingress) => "base-in",
        (Tier::Baseline, Direction::Egress) => "base-eg",
    };
    names::object_name(kind, &[&pod.key.namespace, &pod.key.name], "")
}

/// The name of a tier's deny chain of a pod (`admin-deny-in_<ns>_<pod>`, ...).
pub fn deny_chain_name(pod: &Pod, direction: Direction, tier: Tier) -> String {
    let kind = match (tier, direction) {
        (Tier::Admin, Direction::Ingress) => "admin-deny-in",
        (Tier::Admin, Direction::Egress) => "admin-deny-eg",
        (Tier::Baseline, Direction::Ingress) => "base-deny-in",
        (Tier::Baseline, Direction::Egress) => "base-deny-eg",
    };
    names::object_name(kind, &[&pod.key.namespace, &pod.key.name], "")
}

/// The comment of a tier chain's rule, what the flow metrics attribute its counter by:
/// `cnp <tier> <action> <direction>[<rule>] <policy>` (the name last, where nftables' 128
/// bytes may cut it).
pub fn rule_comment(
    policy: &ClusterPolicy,
    direction: Direction,
    index: usize,
    action: ClusterAction,
) -> String {
    truncate(
        format!(
            "cnp {} {} {direction}[{index}] {}",
            policy.tier, action, policy.name
        ),
        MAX_COMMENT,
    )
}

/// What a pod's tier chain needs besides the policies.
pub(super) struct TierContext<'a> {
    pub(super) snapshot: &'a Snapshot,
    pub(super) pod: &'a Pod,
    pub(super) direction: Direction,
    pub(super) options: &'a Options,
    /// Where an Accept goes for an observed pod: its allow-log chain.
    pub(super) allow_log: Option<&'a str>,
    /// Whether the pod's namespace is audited.
    pub(super) audited: bool,
}

/// The chain of `tier` for the pod and direction, over `policies` (those of the tier that
/// apply to it, in the tier's order), with its deny chain when a rule denies; `next` is
/// where Pass and the end of the chain go.
pub(super) fn tier_chain(
    context: &TierContext<'_>,
    tier: Tier,
    policies: &[&ClusterPolicy],
    next: &Next,
    sets: &mut BTreeMap<String, Set>,
) -> Vec<Chain> {
    let TierContext {
        snapshot,
        pod,
        direction,
        ..
    } = *context;
    let (peer_field, allow) = match direction {
        Direction::Ingress => (AddrField::Source, Expr::Accept),
        Direction::Egress => (AddrField::Destination, Expr::Return),
    };
    let accept = match context.allow_log {
        Some(chain) => Expr::Goto(chain.to_owned()),
        None => allow.clone(),
    };
    let deny_chain = deny_chain_name(pod, direction, tier);
    // A pod's traffic to itself is exempt, as in its NetworkPolicy chain (and `evaluate`).
    let mut rules: Vec<Rule> = pod
        .ips
        .iter()
        .map(|ip| Rule {
            exprs: vec![Expr::AddressIs(peer_field, *ip), allow.clone()],
            comment: Some("to itself".into()),
        })
        .collect();
    let mut denies = false;
    for policy in policies {
        for rule in policy.rules(direction) {
            let verdict = match rule.action {
                ClusterAction::Accept => accept.clone(),
                ClusterAction::Deny => Expr::Goto(deny_chain.clone()),
                ClusterAction::Pass => next.verdict(),
            };
            let comment = rule_comment(policy, direction, rule.index, rule.action);
            let compiled = ClusterRuleCompiler {
                snapshot,
                policy,
                rule,
                direction,
                target: pod,
                sets: &mut *sets,
            };
            for mut exprs in compiled.matchers() {
                exprs.push(Expr::Counter);
                exprs.push(verdict.clone());
                denies |= rule.action == ClusterAction::Deny;
                rules.push(Rule {
                    exprs,
                    comment: Some(comment.clone()),
                });
            }
        }
    }
    rules.push(Rule {
        exprs: vec![next.verdict()],
        comment: Some(match tier {
            Tier::Admin => "on to the next tier".into(),
            Tier::Baseline => "no baseline rule matched".into(),
        }),
    });
    let mut chains = vec![Chain {
        name: tier_chain_name(pod, direction, tier),
        hook: None,
        rules,
    }];
    if denies {
        chains.push(deny_chain_of(context, tier, deny_chain));
    }
    chains
}

/// A tier's deny chain: the rate-limited NFLOG rule and a counted drop; for an audited pod
/// the audit prefix and the allow (`return` for egress, so the destination's ingress still
/// decides).
fn deny_chain_of(context: &TierContext<'_>, tier: Tier, name: String) -> Chain {
    let TierContext {
        pod,
        direction,
        options,
        audited,
        ..
    } = *context;
    let (kind, what, verdict) = match (audited, direction) {
        (false, _) => (LogKind::TierDenied(tier), "deny", Expr::Drop),
        (true, Direction::Ingress) => (LogKind::TierAudited(tier), "audit", Expr::Accept),
        (true, Direction::Egress) => (LogKind::TierAudited(tier), "audit", Expr::Return),
    };
    let tier_word = match tier {
        Tier::Admin => "admin",
        Tier::Baseline => "baseline",
    };
    Chain {
        name,
        hook: None,
        rules: vec![
            log_rule(
                pod,
                direction,
                kind,
                format!("log {tier_word} {what}"),
                options,
            ),
            Rule {
                exprs: vec![Expr::Counter, verdict],
                comment: Some(truncate(
                    format!("{tier_word} {what} {direction} {}", pod.key),
                    MAX_COMMENT,
                )),
            },
        ],
    }
}
