//! Whether one part of a policy allows at least everything another allows, decided from the
//! policies' text alone (what `shadowed-rule` needs): selectors, namespace scopes, peers, ports
//! and rules. Conservative: `true` only when it holds for every cluster, so a `false` may be
//! a containment this module cannot prove (a pod selector against an ipBlock, say), never a
//! wrong claim. The one exception is a namespace selector against the policy's own namespace,
//! judged by that namespace's labels in the snapshot.

use crate::model::{
    Labels, NamespaceScope, Operator, Peer, PeerKind, PortMatch, PortSpec, Requirement, Rule,
    Selector,
};

/// Whether `broad` matches every label set `narrow` matches.
pub(super) fn selector(broad: &Selector, narrow: &Selector) -> bool {
    let narrow_requirements = requirements(narrow);
    requirements(broad)
        .iter()
        .all(|needed| narrow_requirements.iter().any(|have| implies(have, needed)))
}

/// A selector as requirements only (`matchLabels` `k: v` is `k in (v)`).
fn requirements(selector: &Selector) -> Vec<Requirement> {
    let labels = selector
        .match_labels
        .iter()
        .map(|(key, value)| Requirement {
            key: key.clone(),
            operator: Operator::In([value.clone()].into()),
        });
    labels.chain(selector.expressions.iter().cloned()).collect()
}

/// Whether every label set satisfying `have` satisfies `needed`.
fn implies(have: &Requirement, needed: &Requirement) -> bool {
    if have.key != needed.key {
        return false;
    }
    match (&have.operator, &needed.operator) {
        (Operator::In(have), Operator::In(needed)) => have.is_subset(needed),
        (Operator::In(_), Operator::Exists) | (Operator::Exists, Operator::Exists) => true,
        (Operator::In(have), Operator::NotIn(needed)) => have.is_disjoint(needed),
        (Operator::NotIn(have), Operator::NotIn(needed)) => needed.is_subset(have),
        (Operator::DoesNotExist, Operator::NotIn(_) | Operator::DoesNotExist) => true,
        _ => false,
    }
}

/// Whether `broad` covers every namespace `narrow` covers, for peers of a policy in the
/// namespace with `own_labels`.
fn scope(broad: &NamespaceScope, narrow: &NamespaceScope, own_labels: &Labels) -> bool {
    match (broad, narrow) {
        (NamespaceScope::Matching(b), _) if b.is_everything() => true,
        (NamespaceScope::PolicyNamespace, NamespaceScope::PolicyNamespace) => true,
        (NamespaceScope::Matching(b), NamespaceScope::PolicyNamespace) => b.matches(own_labels),
        (NamespaceScope::Matching(b), NamespaceScope::Matching(n)) => selector(b, n),
        (NamespaceScope::PolicyNamespace, NamespaceScope::Matching(_)) => false,
    }
}

/// Whether peer `broad` selects everything peer `narrow` selects.
fn peer(broad: &Peer, narrow: &Peer, own_labels: &Labels) -> bool {
    match (&broad.kind, &narrow.kind) {
        (
            PeerKind::Pods {
                namespaces: broad_namespaces,
                pods: broad_pods,
            },
            PeerKind::Pods {
                namespaces: narrow_namespaces,
                pods: narrow_pods,
            },
        ) => {
            scope(broad_namespaces, narrow_namespaces, own_labels)
                && selector(broad_pods, narrow_pods)
        }
        (
            PeerKind::IpBlock {
                cidr: broad_cidr,
                except: broad_except,
            },
            PeerKind::IpBlock {
                cidr: narrow_cidr,
                except: narrow_except,
            },
        ) => {
            // Every hole of the broad block that overlaps the narrow one must be a hole of the
            // narrow one too.
            broad_cidr.contains(narrow_cidr)
                && broad_except.iter().all(|hole| {
                    let overlaps = hole.contains(narrow_cidr) || narrow_cidr.contains(hole);
                    !overlaps || narrow_except.iter().any(|own| own.contains(hole))
                })
        }
        _ => false,
    }
}

/// Whether port entry `broad` matches every packet `narrow` matches.
fn port(broad: &PortMatch, narrow: &PortMatch) -> bool {
    if broad.protocol != narrow.protocol {
        return false;
    }
    match (&broad.port, &narrow.port) {
        (None, _) => true,
        (
            Some(PortSpec::Range { start, end }),
            Some(PortSpec::Range {
                start: narrow_start,
                end: narrow_end,
            }),
        ) => start <= narrow_start && narrow_end <= end,
        (Some(PortSpec::Named(broad)), Some(PortSpec::Named(narrow))) => broad == narrow,
        _ => false,
    }
}

/// Whether rule `broad` allows everything rule `narrow` allows, for pods of a policy in the
/// namespace with `own_labels`.
pub(super) fn rule(broad: &Rule, narrow: &Rule, own_labels: &Labels) -> bool {
    let peers = match (&broad.peers, &narrow.peers) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(broad), Some(narrow)) => narrow
            .iter()
            .all(|n| broad.iter().any(|b| peer(b, n, own_labels))),
    };
    let ports = match (&broad.ports, &narrow.ports) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(broad), Some(narrow)) => narrow.iter().all(|n| broad.iter().any(|b| port(b, n))),
    };
    peers && ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn requirement(key: &str, operator: Operator) -> Requirement {
        Requirement {
            key: key.to_owned(),
            operator,
        }
    }

    fn set(values: &[&str]) -> std::collections::BTreeSet<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    fn labels_selector(pairs: &[(&str, &str)]) -> Selector {
        Selector {
            match_labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            expressions: Vec::new(),
        }
    }

    #[test]
    fn a_selector_with_fewer_requirements_covers_one_with_more() {
        let web = labels_selector(&[("app", "web")]);
        let web_prod = labels_selector(&[("app", "web"), ("env", "prod")]);
        assert!(selector(&Selector::everything(), &web));
        assert!(selector(&web, &web_prod));
        assert!(!selector(&web_prod, &web));
        assert!(!selector(&web, &Selector::everything()));
        let app_in = Selector {
            match_labels: Default::default(),
            expressions: vec![requirement("app", Operator::In(set(&["web", "api"])))],
        };
        assert!(selector(&app_in, &web));
        assert!(!selector(&web, &app_in));
    }

    #[test]
    fn operators_imply_what_they_must() {
        let r = |op| requirement("k", op);
        assert!(implies(&r(Operator::In(set(&["a"]))), &r(Operator::Exists)));
        assert!(implies(
            &r(Operator::In(set(&["a"]))),
            &r(Operator::NotIn(set(&["b"])))
        ));
        assert!(!implies(
            &r(Operator::In(set(&["a", "b"]))),
            &r(Operator::NotIn(set(&["b"])))
        ));
        assert!(implies(
            &r(Operator::NotIn(set(&["a", "b"]))),
            &r(Operator::NotIn(set(&["b"])))
        ));
        assert!(implies(
            &r(Operator::DoesNotExist),
            &r(Operator::NotIn(set(&["b"])))
        ));
        assert!(!implies(
            &r(Operator::Exists),
            &r(Operator::In(set(&["a"])))
        ));
        assert!(!implies(
            &requirement("x", Operator::Exists),
            &r(Operator::Exists)
        ));
    }

    #[test]
    fn ip_blocks_cover_smaller_blocks_unless_a_hole_reaches_into_them() {
        let block = |cidr: &str, except: &[&str]| Peer {
            index: 0,
            kind: PeerKind::IpBlock {
                cidr: cidr.parse().unwrap(),
                except: except.iter().map(|e| e.parse().unwrap()).collect(),
            },
        };
        let own = Labels::new();
        assert!(peer(
            &block("10.0.0.0/8", &[]),
            &block("10.1.0.0/16", &[]),
            &own
        ));
        assert!(!peer(
            &block("10.1.0.0/16", &[]),
            &block("10.0.0.0/8", &[]),
            &own
        ));
        let holed = block("10.0.0.0/8", &["10.1.2.0/24"]);
        assert!(!peer(&holed, &block("10.1.0.0/16", &[]), &own));
        assert!(peer(
            &holed,
            &block("10.1.0.0/16", &["10.1.0.0/20", "10.1.2.0/24"]),
            &own
        ));
        assert!(peer(&holed, &block("10.2.0.0/16", &[]), &own));
    }

    #[test]
    fn ports_cover_by_protocol_and_range() {
        let entry = |protocol, spec| PortMatch {
            protocol,
            port: spec,
        };
        let range = |start, end| Some(PortSpec::Range { start, end });
        assert!(port(
            &entry(Protocol::Tcp, None),
            &entry(Protocol::Tcp, range(80, 80))
        ));
        assert!(!port(
            &entry(Protocol::Udp, None),
            &entry(Protocol::Tcp, range(80, 80))
        ));
        assert!(port(
            &entry(Protocol::Tcp, range(1, 1024)),
            &entry(Protocol::Tcp, range(80, 443))
        ));
        assert!(!port(
            &entry(Protocol::Tcp, range(80, 80)),
            &entry(Protocol::Tcp, range(80, 81))
        ));
        let named = |name: &str| Some(PortSpec::Named(name.to_owned()));
        assert!(port(
            &entry(Protocol::Tcp, named("http")),
            &entry(Protocol::Tcp, named("http"))
        ));
        assert!(!port(
            &entry(Protocol::Tcp, range(80, 80)),
            &entry(Protocol::Tcp, named("http"))
        ));
    }
}
