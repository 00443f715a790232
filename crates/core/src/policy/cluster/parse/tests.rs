use serde_json::{Value, json};

use super::super::api::ClusterNetworkPolicy;
use crate::model::{
    ClusterAction, ClusterPeer, ClusterPolicy, ClusterPort, Protocol, Selector, Subject, Tier,
};

fn parse(spec: Value) -> ClusterPolicy {
    let object: ClusterNetworkPolicy =
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap();
    ClusterPolicy::from_api(&object).unwrap()
}

/// A valid Admin policy with one rule of each action, to break one field at a time.
fn valid() -> Value {
    json!({
        "tier": "Admin",
        "priority": 5,
        "subject": {"namespaces": {"matchLabels": {"team": "a"}}},
        "egress": [
            {"name": "accept-dns", "action": "Accept",
             "to": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "dns"}}}}],
             "protocols": [{"udp": {"destinationPort": {"number": 53}}}]},
            {"action": "Pass", "to": [{"namespaces": {"matchLabels": {"team": "a"}}}]},
            {"action": "Deny", "to": [{"networks": ["169.254.169.254/32"]}]},
        ],
        "ingress": [
            {"action": "Accept", "from": [{"namespaces": {}}],
             "protocols": [{"tcp": {"destinationPort": {"range": {"start": 8000, "end": 8080}}}},
                           {"destinationNamedPort": "web"}]},
        ],
    })
}

fn with(path: &[&str], value: Value) -> Value {
    let mut spec = valid();
    let mut at = &mut spec;
    for key in &path[..path.len() - 1] {
        at = match key.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[*key],
        };
    }
    let last = path[path.len() - 1];
    match last.parse::<usize>() {
        Ok(i) => at[i] = value,
        Err(_) => at[last] = value,
    }
    spec
}

fn fields(policy: &ClusterPolicy) -> Vec<&str> {
    policy.errors.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn a_valid_policy_keeps_its_tier_priority_subject_rules_and_ports() {
    let policy = parse(valid());
    assert!(policy.errors.is_empty(), "{:?}", policy.errors);
    assert_eq!((policy.tier, policy.priority), (Tier::Admin, 5));
    assert!(matches!(&policy.subject, Subject::Namespaces(s) if s.match_labels["team"] == "a"));
    let actions: Vec<ClusterAction> = policy.egress.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            ClusterAction::Accept,
            ClusterAction::Pass,
            ClusterAction::Deny
        ]
    );
    assert_eq!(policy.egress[0].name.as_deref(), Some("accept-dns"));
    assert_eq!(
        policy.egress[0].ports,
        Some(vec![ClusterPort::Range {
            protocol: Protocol::Udp,
            start: 53,
            end: 53
        }])
    );
    assert_eq!(
        policy.egress[2].peers,
        [ClusterPeer::Networks(vec![
            "169.254.169.254/32".parse().unwrap()
        ])]
    );
    assert_eq!(
        policy.ingress[0].ports,
        Some(vec![
            ClusterPort::Range {
                protocol: Protocol::Tcp,
                start: 8000,
                end: 8080
            },
            ClusterPort::Named("web".into())
        ])
    );
    assert!(matches!(&policy.ingress[0].peers[0], ClusterPeer::Namespaces(s) if s.is_everything()));
}

#[test]
fn each_invalid_field_is_one_error_naming_it() {
    let cases: Vec<(Value, &str)> = vec![
        (with(&["tier"], json!("admin")), "spec.tier"),
        (with(&["priority"], json!(1001)), "spec.priority"),
        (with(&["priority"], json!(-1)), "spec.priority"),
        (with(&["subject"], json!({})), "spec.subject"),
        (
            with(
                &["subject"],
                json!({"namespaces": {}, "pods": {"podSelector": {}}}),
            ),
            "spec.subject",
        ),
        (
            with(&["subject"], json!({"pods": {"namespaceSelector": {}}})),
            "spec.subject.pods.podSelector",
        ),
        (
            with(
                &["subject", "namespaces"],
                json!({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]}),
            ),
            "spec.subject.namespaces.matchExpressions[0].operator",
        ),
        (
            with(&["egress", "1", "action"], json!("Allow")),
            "spec.egress[1].action",
        ),
        (with(&["egress", "1", "to"], json!([])), "spec.egress[1].to"),
        (
            with(&["egress", "1", "to", "0"], json!({})),
            "spec.egress[1].to[0]",
        ),
        (
            with(&["egress", "1", "to", "0"], json!({"futurePeer": {"x": 1}})),
            "spec.egress[1].to[0]",
        ),
        (
            with(
                &["ingress", "0", "from", "0"],
                json!({"networks": ["10.0.0.0/8"]}),
            ),
            "spec.ingress[0].from[0]",
        ),
        (
            with(
                &["egress", "2", "to", "0", "networks", "0"],
                json!("10.0.0.0/33"),
            ),
            "spec.egress[2].to[0].networks[0]",
        ),
        (
            with(&["egress", "2", "to", "0", "networks"], json!([])),
            "spec.egress[2].to[0].networks",
        ),
        (
            with(&["egress", "0", "protocols", "0"], json!({"udp": {}})),
            "spec.egress[0].protocols[0].udp.destinationPort",
        ),
        (
            with(
                &["egress", "0", "protocols", "0"],
                json!({"udp": {"destinationPort": {"number": 0}}}),
            ),
            "spec.egress[0].protocols[0].udp.destinationPort.number",
        ),
        (
            with(
                &["egress", "0", "protocols", "0"],
                json!({"tcp": {"destinationPort": {"range": {"start": 90, "end": 90}}}}),
            ),
            "spec.egress[0].protocols[0].tcp.destinationPort.range",
        ),
        (
            with(
                &["egress", "0", "protocols", "0"],
                json!({"tcp": {"destinationPort": {"number": 80, "range": {"start": 1, "end": 2}}}}),
            ),
            "spec.egress[0].protocols[0].tcp.destinationPort",
        ),
        (
            with(
                &["egress", "0", "protocols", "0"],
                json!({"tcp": {"destinationPort": {"number": 80}}, "udp": {"destinationPort": {"number": 80}}}),
            ),
            "spec.egress[0].protocols[0]",
        ),
        (
            with(&["egress", "0", "protocols"], json!([])),
            "spec.egress[0].protocols",
        ),
        (
            with(
                &["ingress", "0", "protocols", "1"],
                json!({"destinationNamedPort": "Web"}),
            ),
            "spec.ingress[0].protocols[1].destinationNamedPort",
        ),
        (
            with(
                &["egress", "2", "protocols"],
                json!([{"destinationNamedPort": "web"}]),
            ),
            "spec.egress[2].protocols",
        ),
        (
            with(
                &["egress", "1", "to", "0"],
                json!({"domainNames": ["example.com"]}),
            ),
            "spec.egress[1].to[0].domainNames",
        ),
        (
            with(
                &["egress", "0", "to", "0"],
                json!({"domainNames": ["*example.com"]}),
            ),
            "spec.egress[0].to[0].domainNames[0]",
        ),
        (
            with(&["egress", "0", "name"], json!("x".repeat(101))),
            "spec.egress[0].name",
        ),
        (
            with(&["egress", "0", "from"], json!([{"namespaces": {}}])),
            "spec.egress[0].from",
        ),
        (
            with(
                &["egress"],
                json!(vec![
                    json!({"action": "Deny", "to": [{"namespaces": {}}]});
                    26
                ]),
            ),
            "spec.egress",
        ),
        (
            with(
                &["egress", "1", "to"],
                json!(vec![json!({"namespaces": {}}); 26]),
            ),
            "spec.egress[1].to",
        ),
    ];
    for (spec, field) in cases {
        let policy = parse(spec.clone());
        assert_eq!(fields(&policy), [field], "{spec}");
    }
}

#[test]
fn a_missing_spec_tier_priority_or_subject_is_an_error() {
    let object: ClusterNetworkPolicy =
        serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
    let policy = ClusterPolicy::from_api(&object).unwrap();
    assert_eq!(fields(&policy), ["spec"]);
    let policy = parse(json!({}));
    assert_eq!(
        fields(&policy),
        ["spec.tier", "spec.priority", "spec.subject"]
    );
    let nameless: ClusterNetworkPolicy = serde_json::from_value(json!({"spec": {}})).unwrap();
    assert!(ClusterPolicy::from_api(&nameless).is_none());
}

#[test]
fn an_invalid_policy_never_accepts_or_passes_and_its_broken_deny_denies_everything() {
    // One broken Deny rule (an unknown peer): the whole policy fails closed.
    let policy = parse(with(&["egress", "2", "to", "0"], json!({"futurePeer": {}})));
    assert!(policy.is_invalid());
    // The Accept rule is gone, the Pass denies what it matched, the broken Deny denies all.
    let kept: Vec<(usize, ClusterAction, &Vec<ClusterPeer>)> = policy
        .egress
        .iter()
        .map(|r| (r.index, r.action, &r.peers))
        .collect();
    assert_eq!(kept.len(), 2);
    assert_eq!((kept[0].0, kept[0].1), (1, ClusterAction::Deny));
    assert!(matches!(kept[0].2[..], [ClusterPeer::Namespaces(_)]));
    assert_eq!((kept[1].0, kept[1].1), (2, ClusterAction::Deny));
    assert_eq!(kept[1].2, &vec![ClusterPeer::Any]);
    assert_eq!(policy.egress[1].ports, None);
    assert!(policy.ingress.is_empty(), "the ingress Accept is gone too");
    assert_eq!((policy.tier, policy.priority), (Tier::Admin, 5));
}

#[test]
fn an_invalid_subject_tier_or_priority_fails_closed_to_every_pod_the_admin_tier_and_zero() {
    let mut spec = with(&["subject"], json!({}));
    spec["tier"] = json!("Platinum");
    spec["priority"] = json!(5000);
    let policy = parse(spec);
    assert_eq!(
        fields(&policy),
        ["spec.tier", "spec.priority", "spec.subject"]
    );
    assert_eq!(
        (policy.tier, policy.priority, &policy.subject),
        (Tier::Admin, 0, &Subject::Namespaces(Selector::everything()))
    );
    assert!(
        policy
            .egress
            .iter()
            .chain(&policy.ingress)
            .all(|r| r.action == ClusterAction::Deny)
    );
    // A broken Accept rule alone: matches nothing, as the API says; the rest fails closed.
    let policy = parse(with(&["egress", "0", "to", "0"], json!({})));
    assert_eq!(policy.egress.len(), 2);
    assert!(policy.egress.iter().all(|r| r.index != 0));
}

#[test]
fn domain_names_are_reported_and_match_nothing_in_an_accept_rule() {
    let policy = parse(with(
        &["egress", "0", "to"],
        json!([{"domainNames": ["*.example.com", "example.org."]}, {"namespaces": {}}]),
    ));
    assert!(policy.errors.is_empty(), "{:?}", policy.errors);
    assert_eq!(policy.unsupported.len(), 1);
    assert_eq!(
        policy.unsupported[0].field,
        "spec.egress[0].to[0].domainNames"
    );
    assert!(matches!(
        &policy.egress[0].peers[0],
        ClusterPeer::DomainNames(names) if names.len() == 2
    ));
}

#[test]
fn baseline_policies_and_pods_subjects_parse() {
    let mut spec = valid();
    spec["tier"] = json!("Baseline");
    spec["priority"] = json!(0);
    spec["subject"] = json!({"pods": {"podSelector": {"matchLabels": {"app": "web"}}}});
    let policy = parse(spec);
    assert!(policy.errors.is_empty(), "{:?}", policy.errors);
    assert_eq!((policy.tier, policy.priority), (Tier::Baseline, 0));
    assert!(matches!(
        &policy.subject,
        Subject::Pods { namespaces, pods } if namespaces.is_everything() && pods.match_labels["app"] == "web"
    ));
}
