//! Which flow counter a counted rule of the table feeds, from its chain name and comment as
//! the compiler writes them ([`crate::compile`]):
//!
//! - `in_<ns>_<pod>` / `eg_<ns>_<pod>`, comment `<ns>/<policy> <direction>[<rule>]`: a policy
//!   rule, [`FlowKey::Allowed`];
//! - comment `default deny <direction> <ns>/<pod>`: the default deny of an enforced pod, and
//!   `audit <direction> <ns>/<pod>`: that of an audited pod, [`FlowKey::Denied`];
//! - `admin-in_<ns>_<pod>`, `admin-eg_...`, `base-in_...`, `base-eg_...` (the tier chains),
//!   comment `cnp <tier> <action> <direction>[<rule>] <policy>`: a ClusterNetworkPolicy rule,
//!   [`FlowKey::Cluster`] (a name cut at 128 bytes is completed from the snapshot when one
//!   ClusterNetworkPolicy starts with what is left);
//! - anything else (base chains, anti-spoofing, `starting_pods`, `revoked`, the deny chains of
//!   the tiers, a rule someone else added): no flow counter.
//!
//! Namespaces are DNS labels (no `_`, at most 63 bytes), so the chain name and the first 85
//! bytes of every comment always hold the namespace whole, and must agree. A policy name long
//! enough for the comment to be cut at nftables' 128 bytes is completed from the snapshot when
//! one policy of the namespace starts with what is left. Names that are not DNS names (a rule
//! someone else added, with any text in its comment) count nothing: label values stay names.
//! Pure.

use super::{AllowedLabels, ClusterLabels, DeniedLabels};
use crate::compile::{AUDIT_COMMENT, DENY_COMMENT};
use crate::metrics::LabelValue;
use crate::model::{ClusterAction, Direction, Enforcement, Snapshot, Tier};

/// The metric series a rule's counter adds to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlowKey {
    /// `kube_nftpol_flows_allowed_total`.
    Allowed(AllowedLabels),
    /// `kube_nftpol_flows_denied_total`.
    Denied(DeniedLabels),
    /// `kube_nftpol_flows_cluster_policy_total`.
    Cluster(ClusterLabels),
}

/// The series of the rule in `chain` with `comment`; `None` for rules that count no flow.
/// `snapshot` completes policy names cut short in comments.
pub fn attribute(chain: &str, comment: &str, snapshot: Option<&Snapshot>) -> Option<FlowKey> {
    if let Some(direction) = tier_chain(chain) {
        return cluster_rule(direction, comment, snapshot);
    }
    let (direction, namespace) = pod_chain(chain)?;
    let denied = |mode| {
        Some(FlowKey::Denied(DeniedLabels {
            namespace: namespace.to_owned(),
            direction: LabelValue(direction),
            mode: LabelValue(mode),
        }))
    };
    // `default deny <direction> <ns>/<pod>`, `audit <direction> <ns>/<pod>`.
    let pod_tail = |rest: &str| {
        rest.strip_prefix(direction.as_str())
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|r| r.strip_prefix(namespace))
            .is_some_and(|r| r.starts_with('/'))
    };
    if let Some(rest) = after_word(comment, DENY_COMMENT) {
        return if pod_tail(rest) {
            denied(Enforcement::Enforce)
        } else {
            None
        };
    }
    if let Some(rest) = after_word(comment, AUDIT_COMMENT) {
        return if pod_tail(rest) {
            denied(Enforcement::Audit)
        } else {
            None
        };
    }
    // `<ns>/<policy> <direction>[<rule>]`, possibly cut anywhere after the namespace.
    let rest = comment.strip_prefix(namespace)?.strip_prefix('/')?;
    let policy = match rest.split_once(' ') {
        Some((policy, tail)) => {
            let written = tail.split('[').next().unwrap_or_default();
            if policy.is_empty() || !direction.as_str().starts_with(written) {
                return None;
            }
            policy.to_owned()
        }
        None if rest.is_empty() => return None,
        None => complete_policy_name(snapshot, namespace, rest),
    };
    if !is_dns_name(&policy) {
        return None;
    }
    Some(FlowKey::Allowed(AllowedLabels {
        namespace: namespace.to_owned(),
        policy,
        direction: LabelValue(direction),
    }))
}

/// The direction of a tier chain (`admin-in_...`, `base-eg_...`).
fn tier_chain(chain: &str) -> Option<Direction> {
    let (kind, _) = chain.split_once('_')?;
    match kind {
        "admin-in" | "base-in" => Some(Direction::Ingress),
        "admin-eg" | "base-eg" => Some(Direction::Egress),
        _ => None,
    }
}

/// `cnp <tier> <action> <direction>[<rule>] <policy>` in a tier chain of `direction`.
fn cluster_rule(
    direction: Direction,
    comment: &str,
    snapshot: Option<&Snapshot>,
) -> Option<FlowKey> {
    let mut words = comment.strip_prefix("cnp ")?.splitn(4, ' ');
    let tier = Tier::from_k8s(words.next()?)?;
    let action = ClusterAction::from_k8s(words.next()?)?;
    let (written, _rule) = words.next()?.split_once('[')?;
    if written != direction.as_str() {
        return None;
    }
    let name = words.next().filter(|n| !n.is_empty())?;
    let policy = match snapshot {
        Some(snapshot) if snapshot.cluster_policy(name).is_none() => {
            let mut candidates = snapshot
                .cluster_policies()
                .filter(|p| p.name.starts_with(name));
            match (candidates.next(), candidates.next()) {
                (Some(only), None) => only.name.clone(),
                _ => name.to_owned(),
            }
        }
        _ => name.to_owned(),
    };
    if !is_dns_name(&policy) {
        return None;
    }
    Some(FlowKey::Cluster(ClusterLabels {
        policy,
        tier: LabelValue(tier),
        action: LabelValue(action),
        direction: LabelValue(direction),
    }))
}

/// `in_<ns>_<pod>` and `eg_<ns>_<pod>` (long names end in a hash, the namespace stays whole).
fn pod_chain(chain: &str) -> Option<(Direction, &str)> {
    let (direction, rest) = if let Some(rest) = chain.strip_prefix("in_") {
        (Direction::Ingress, rest)
    } else {
        (Direction::Egress, chain.strip_prefix("eg_")?)
    };
    let (namespace, _pod) = rest.split_once('_')?;
    is_dns_name(namespace).then_some((direction, namespace))
}

/// Lowercase letters, digits, `-` and `.`: what namespace and policy names are made of.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// What follows `word ` at the start of `text`.
fn after_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    text.strip_prefix(word)?.strip_prefix(' ')
}

/// The one policy of `namespace` whose name starts with `cut`; `cut` itself when none or
/// several do (the series then carries the name as the comment has it).
fn complete_policy_name(snapshot: Option<&Snapshot>, namespace: &str, cut: &str) -> String {
    let mut candidates = snapshot
        .into_iter()
        .flat_map(|s| s.policies_in(namespace))
        .filter(|p| p.key.name.starts_with(cut));
    match (candidates.next(), candidates.next()) {
        (Some(only), None) => only.key.name.clone(),
        _ => cut.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::compile::{self, Options};
    use crate::model::{Labels, Namespace, ObjectKey, Pod};

    fn allowed(namespace: &str, policy: &str, direction: Direction) -> Option<FlowKey> {
        Some(FlowKey::Allowed(AllowedLabels {
            namespace: namespace.into(),
            policy: policy.into(),
            direction: LabelValue(direction),
        }))
    }

    fn denied(namespace: &str, direction: Direction, mode: Enforcement) -> Option<FlowKey> {
        Some(FlowKey::Denied(DeniedLabels {
            namespace: namespace.into(),
            direction: LabelValue(direction),
            mode: LabelValue(mode),
        }))
    }

    #[test]
    fn policy_rules_and_default_denies_map_to_their_series() {
        use Direction::{Egress, Ingress};
        use Enforcement::{Audit, Enforce};
        let cases = [
            (
                "in_x_a",
                "x/a-from-y ingress[0]",
                allowed("x", "a-from-y", Ingress),
            ),
            (
                "eg_z_b",
                "z/b-to-x egress[2]",
                allowed("z", "b-to-x", Egress),
            ),
            (
                "in_x_a",
                "default deny ingress x/a",
                denied("x", Ingress, Enforce),
            ),
            (
                "eg_x_a.b",
                "default deny egress x/a.b",
                denied("x", Egress, Enforce),
            ),
            ("in_x_a", "audit ingress x/a", denied("x", Ingress, Audit)),
            ("eg_x_a", "audit egress x/a", denied("x", Egress, Audit)),
            // A namespace called `audit` or `default` is no default deny.
            (
                "in_audit_a",
                "audit/p ingress[0]",
                allowed("audit", "p", Ingress),
            ),
            (
                "in_default_a",
                "default/p ingress[0]",
                allowed("default", "p", Ingress),
            ),
        ];
        for (chain, comment, expected) in cases {
            assert_eq!(
                attribute(chain, comment, None),
                expected,
                "{chain} {comment}"
            );
        }
    }

    #[test]
    fn rules_that_count_no_flow_or_disagree_with_their_chain_map_to_nothing() {
        for (chain, comment) in [
            ("prerouting", "spoofed source address"),
            ("to_veth1a2b", "pod address behind another interface"),
            (
                "starting_pods",
                "pod without a reported IP while an isolated pod starts",
            ),
            ("input", "x/p ingress[0]"),
            ("in_x_a", "to itself"),
            ("in_x_a", "log default deny"),
            ("in_x_a", ""),
            // Another namespace or direction than the chain's: not a rule of ours.
            ("in_x_a", "y/p ingress[0]"),
            ("in_x_a", "x/p egress[0]"),
            ("in_x_a", "default deny egress x/a"),
            ("in_x_a", "audit ingress y/a"),
            ("in_xy_a", "x/p ingress[0]"),
            ("in_x_a", "x/ ingress[0]"),
            ("in_x_a", "x/"),
            ("in__a", "/p ingress[0]"),
            // Not names: never a label value.
            ("in_x_a", "x/p\"q ingress[0]"),
            ("in_x_a", "x/P ingress[0]"),
            ("in_x\"y_a", "x\"y/p ingress[0]"),
            ("in_X_a", "default deny ingress X/a"),
        ] {
            assert_eq!(attribute(chain, comment, None), None, "{chain} {comment}");
        }
    }

    #[test]
    fn a_policy_name_cut_in_the_comment_is_completed_from_the_snapshot() {
        let long = format!("allow-{}", "p".repeat(200));
        let mut snapshot = Snapshot::new();
        for name in [long.as_str(), "other"] {
            let policy = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "x"},
                "spec": {"podSelector": {}, "ingress": [{}]}
            }))
            .unwrap();
            snapshot.upsert_network_policy(&policy).unwrap();
        }
        let comment = format!("x/{}", &long[..120]);
        assert_eq!(
            attribute("in_x_a", &comment, Some(&snapshot)),
            allowed("x", &long, Direction::Ingress)
        );
        // Without the policy in the snapshot, the series keeps the name as written.
        assert_eq!(
            attribute("in_x_a", &comment, None),
            allowed("x", &long[..120], Direction::Ingress)
        );
        // Cut inside the direction: the name is whole.
        assert_eq!(
            attribute("in_x_a", "x/other ingr", None),
            allowed("x", "other", Direction::Ingress)
        );
    }

    /// Every counted rule the compiler writes in a pod chain maps to a series, and the series
    /// name the policies and namespaces the rules come from: the attribution reads exactly
    /// what the compiler writes, long names included.
    #[test]
    fn every_counted_pod_chain_rule_of_a_compiled_ruleset_is_attributed() {
        let long_ns = "n".repeat(63);
        let long_policy = format!("allow-{}", "p".repeat(240));
        let long_pod = format!("pod-{}", "q".repeat(240));
        let mut snapshot = Snapshot::new();
        let mut audited = Namespace::new("audited", Labels::new());
        audited.enforcement = Enforcement::Audit;
        snapshot.upsert_namespace(audited);
        let pods = [
            ("x", "a", "10.0.0.1"),
            ("audited", "b", "10.0.0.2"),
            (long_ns.as_str(), long_pod.as_str(), "10.0.0.3"),
        ];
        for (ns, name, ip) in pods {
            snapshot.upsert_pod(Pod::running(
                ObjectKey::new(ns, name),
                Labels::new(),
                "n1",
                [ip.parse().unwrap()],
            ));
            for policy in ["deny", long_policy.as_str()] {
                let policy = serde_json::from_value(json!({
                    "metadata": {"name": policy, "namespace": ns},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                             "ingress": [{"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}]}],
                             "egress": [{"to": [{"podSelector": {}}]}]}
                }))
                .unwrap();
                snapshot.upsert_network_policy(&policy).unwrap();
            }
        }
        let ruleset = compile::compile(&snapshot, "n1", &Options::default());
        let mut keys = std::collections::BTreeSet::new();
        // The revoked chain's counters count answered packets of ended connections, no flow.
        let pod_chains = ruleset
            .chains
            .iter()
            .filter(|c| c.hook.is_none() && c.name != compile::REVOKED_CHAIN);
        for chain in pod_chains {
            for rule in chain
                .rules
                .iter()
                .filter(|r| r.exprs.contains(&compile::Expr::Counter))
            {
                let comment = rule.comment.as_deref().unwrap_or_default();
                let key = attribute(&chain.name, comment, Some(&snapshot));
                assert!(key.is_some(), "{} {comment}", chain.name);
                keys.extend(key);
            }
        }
        let mut expected = std::collections::BTreeSet::new();
        for (ns, ..) in pods {
            let mode = snapshot.enforcement(ns);
            for direction in [Direction::Ingress, Direction::Egress] {
                expected.extend(denied(ns, direction, mode));
                for policy in ["deny", long_policy.as_str()] {
                    expected.extend(allowed(ns, policy, direction));
                }
            }
        }
        assert_eq!(keys, expected);
    }
}

#[cfg(test)]
mod cluster_tests {
    use serde_json::json;

    use super::*;
    use crate::compile::{self, Options};
    use crate::policy::cluster::api::ClusterNetworkPolicy;

    fn cluster(
        policy: &str,
        tier: Tier,
        action: ClusterAction,
        direction: Direction,
    ) -> Option<FlowKey> {
        Some(FlowKey::Cluster(ClusterLabels {
            policy: policy.into(),
            tier: LabelValue(tier),
            action: LabelValue(action),
            direction: LabelValue(direction),
        }))
    }

    #[test]
    fn tier_rules_map_to_their_policy_tier_action_and_direction() {
        use ClusterAction::{Accept, Deny, Pass};
        use Direction::{Egress, Ingress};
        let cases = [
            (
                "admin-eg_x_a",
                "cnp Admin Deny egress[1] no-imds",
                cluster("no-imds", Tier::Admin, Deny, Egress),
            ),
            (
                "admin-in_x_a",
                "cnp Admin Pass ingress[0] p",
                cluster("p", Tier::Admin, Pass, Ingress),
            ),
            (
                "base-in_x_a",
                "cnp Baseline Accept ingress[3] dns",
                cluster("dns", Tier::Baseline, Accept, Ingress),
            ),
            // What counts no flow: the chain's own rules, and comments that disagree with it.
            ("admin-eg_x_a", "to itself", None),
            ("admin-eg_x_a", "on to the next tier", None),
            ("admin-eg_x_a", "cnp Admin Deny ingress[1] p", None),
            ("admin-eg_x_a", "cnp Admin Allow egress[1] p", None),
            ("admin-eg_x_a", "cnp Gold Deny egress[1] p", None),
            ("admin-eg_x_a", "cnp Admin Deny egress[1] P\"q", None),
            ("admin-deny-eg_x_a", "admin deny egress x/a", None),
            ("in_x_a", "cnp Admin Deny ingress[1] p", None),
        ];
        for (chain, comment, expected) in cases {
            assert_eq!(
                attribute(chain, comment, None),
                expected,
                "{chain} {comment}"
            );
        }
    }

    #[test]
    fn every_counted_rule_of_a_tier_chain_the_compiler_writes_has_its_series() {
        let mut snapshot = crate::model::Snapshot::new();
        snapshot.upsert_pod(crate::model::Pod::running(
            crate::model::ObjectKey::new("x", "a"),
            Default::default(),
            "n1",
            ["10.0.0.1".parse().unwrap()],
        ));
        let long = format!("guard-{}", "g".repeat(200));
        let object: ClusterNetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": long},
            "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
                     "egress": [{"action": "Deny", "to": [{"networks": ["10.9.0.0/16"]}]},
                                {"action": "Pass", "to": [{"namespaces": {}}]}]}
        }))
        .unwrap();
        snapshot.upsert_cluster_network_policy(&object).unwrap();
        let ruleset = compile::compile(&snapshot, "n1", &Options::default());
        let chain = ruleset.chain("admin-eg_x_a").expect("the tier chain");
        let counted: Vec<Option<FlowKey>> = chain
            .rules
            .iter()
            .filter(|r| r.exprs.contains(&compile::Expr::Counter))
            .map(|r| {
                attribute(
                    &chain.name,
                    r.comment.as_deref().unwrap_or_default(),
                    Some(&snapshot),
                )
            })
            .collect();
        assert_eq!(
            counted.len(),
            3,
            "Deny (an IPv4 network), Pass (IPv4 and IPv6 sets): {counted:?}"
        );
        assert!(
            counted
                .iter()
                .all(|k| matches!(k, Some(FlowKey::Cluster(l)) if l.policy == long)),
            "{counted:?}"
        );
    }
}
