//! Invalid policies: each is reported with an error naming the policy's field, isolates the
//! directions it declares, and allows nothing (fail closed).

use kube_nftpol_test_support as support;

use kube_nftpol_core::compile::{self, Options};
use kube_nftpol_core::evaluate;
use kube_nftpol_core::model::{ObjectKey, Policy, Protocol, Snapshot};
use kube_nftpol_core::policy::{DirectionVerdict, Endpoint, Flow, MissReason};
use serde_json::{Value, json};
use support::cluster::{pod, policy, snapshot};

/// Validates `spec` as policy ns/p and returns it.
fn parse(spec: Value) -> Policy {
    Policy::from_k8s(&policy(
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}),
    ))
    .expect("named policy")
}

/// The single error's field, asserting there is exactly one.
fn error_field(spec: Value) -> String {
    let p = parse(spec);
    assert_eq!(p.errors.len(), 1, "expected one error, got {:?}", p.errors);
    p.errors[0].field.clone()
}

fn cluster(spec: Value) -> Snapshot {
    snapshot(
        &[("ns", &[]), ("other", &[])],
        vec![
            pod("ns", "a", &[("app", "a")], "node-1", &["10.0.0.1"]),
            pod("ns", "b", &[("app", "b")], "node-1", &["10.0.0.2"]),
            pod("other", "c", &[("app", "c")], "node-1", &["10.0.1.1"]),
        ],
        vec![json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec})],
    )
}

fn allowed(s: &Snapshot, from: &str, to: &str, port: u16) -> bool {
    let ep = |t: &str| {
        let (ns, n) = t.split_once('/').unwrap();
        Endpoint::Pod(ObjectKey::new(ns, n))
    };
    let f = Flow {
        source: ep(from),
        destination: ep(to),
        protocol: Protocol::Tcp,
        port,
    };
    evaluate(s, &f).unwrap().allowed
}

#[test]
fn a_bad_cidr_names_the_field() {
    let field = error_field(
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
    );
    assert_eq!(field, "spec.ingress[0].from[0].ipBlock.cidr");
    let field = error_field(
        json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.1"}}]}]}),
    );
    assert_eq!(field, "spec.egress[0].to[0].ipBlock.cidr");
}

/// Go (and so the Kubernetes API server before 1.33) reads `::ffff:10.0.0.0/104` as the IPv4
/// CIDR 10.0.0.0/8; other engines read it as IPv6. It is rejected, fail-closed.
#[test]
fn an_ipv4_mapped_ipv6_cidr_is_an_error() {
    let field = error_field(
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "::ffff:10.0.0.0/104"}}]}]}),
    );
    assert_eq!(field, "spec.ingress[0].from[0].ipBlock.cidr");
    let s = cluster(
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "::ffff:10.0.0.0/104"}}]}]}),
    );
    assert!(!allowed(&s, "ns/b", "ns/a", 80), "fail closed");
    let p = parse(
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "::ffff:0:0/64"}}]}]}),
    );
    assert!(
        p.errors.is_empty(),
        "a wider IPv6 CIDR is plain IPv6: {:?}",
        p.errors
    );
}

#[test]
fn an_except_outside_its_cidr_is_an_error() {
    let field = error_field(
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]}),
    );
    assert_eq!(field, "spec.ingress[0].from[0].ipBlock.except[0]");
    let field = error_field(
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/8"]}}]}]}),
    );
    assert_eq!(
        field, "spec.ingress[0].from[0].ipBlock.except[0]",
        "other family"
    );
}

#[test]
fn a_bad_selector_operator_is_an_error() {
    let field = error_field(
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["a"]}]}}]}]}),
    );
    assert_eq!(
        field,
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].operator"
    );
}

#[test]
fn end_port_below_port_is_an_error() {
    let field = error_field(
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
    );
    assert_eq!(field, "spec.ingress[0].ports[0].endPort");
}

#[test]
fn end_port_with_a_named_port_is_an_error() {
    let field = error_field(
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}),
    );
    assert_eq!(field, "spec.ingress[0].ports[0].endPort");
}

#[test]
fn end_port_without_port_is_an_error() {
    let field = error_field(json!({"podSelector": {}, "ingress": [{"ports": [{"endPort": 80}]}]}));
    assert_eq!(field, "spec.ingress[0].ports[0].endPort");
}

#[test]
fn ports_outside_the_valid_range_are_errors() {
    for bad in [json!(0), json!(65536), json!(-1)] {
        let field =
            error_field(json!({"podSelector": {}, "ingress": [{"ports": [{"port": bad}]}]}));
        assert_eq!(field, "spec.ingress[0].ports[0].port");
    }
    let field = error_field(
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 70000}]}]}),
    );
    assert_eq!(field, "spec.ingress[0].ports[0].endPort");
    let field =
        error_field(json!({"podSelector": {}, "ingress": [{"ports": [{"port": "not_a_name"}]}]}));
    assert_eq!(field, "spec.ingress[0].ports[0].port");
}

#[test]
fn unknown_protocols_and_policy_types_are_errors() {
    let field = error_field(
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}),
    );
    assert_eq!(field, "spec.ingress[0].ports[0].protocol");
    let p = parse(json!({"podSelector": {}, "policyTypes": ["Ingres"], "ingress": [{}]}));
    assert_eq!(p.errors[0].field, "spec.policyTypes[0]");
    assert!(
        p.ingress.is_some() && p.egress.is_some(),
        "an unknown type isolates both directions"
    );
}

#[test]
fn malformed_peers_are_errors() {
    let field = error_field(json!({"podSelector": {}, "ingress": [{"from": [{}]}]}));
    assert_eq!(field, "spec.ingress[0].from[0]");
    let field = error_field(
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}),
    );
    assert_eq!(field, "spec.ingress[0].from[0]");
}

#[test]
fn error_messages_say_what_is_wrong() {
    let p = parse(
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
    );
    let text = p.errors[0].to_string();
    assert!(
        text.starts_with("spec.ingress[0].from[0].ipBlock.cidr: "),
        "{text}"
    );
    assert!(text.contains("10.0.0.0/33"), "{text}");
}

#[test]
fn an_invalid_policy_keeps_its_pods_isolated_and_allows_nothing_it_meant_to() {
    // Rule 0 would allow everything from app=b; rule 1 has a bad CIDR.
    let s = cluster(json!({
        "podSelector": {"matchLabels": {"app": "a"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]},
            {"from": [{"ipBlock": {"cidr": "300.0.0.0/8"}}]}
        ]
    }));
    let p = s.policy(&ObjectKey::new("ns", "p")).unwrap();
    assert!(p.is_invalid());
    assert_eq!(p.ingress.as_deref(), Some(&[][..]), "no rule survives");
    assert!(p.egress.is_none(), "only declared directions are isolated");
    assert!(
        !allowed(&s, "ns/b", "ns/a", 80),
        "the valid-looking rule is not half-installed"
    );
    assert!(
        allowed(&s, "ns/a", "other/c", 80),
        "egress was not declared"
    );
    assert!(
        allowed(&s, "ns/a", "ns/b", 80),
        "pods it does not select are untouched"
    );

    let v = evaluate(
        &s,
        &Flow {
            source: Endpoint::Pod(ObjectKey::new("ns", "b")),
            destination: Endpoint::Pod(ObjectKey::new("ns", "a")),
            protocol: Protocol::Tcp,
            port: 80,
        },
    )
    .unwrap();
    let DirectionVerdict::Denied { misses, .. } = &v.ingress else {
        panic!("{v:?}")
    };
    let MissReason::Invalid { errors } = &misses[0].reason else {
        panic!("{misses:?}")
    };
    assert_eq!(errors[0].field, "spec.ingress[1].from[0].ipBlock.cidr");

    // The compiled ruleset has the pod's chain with no allow rule, only the default deny.
    let ruleset = compile::compile(&s, "node-1", &Options::default());
    let chain = ruleset.chain("in_ns_a").expect("ns/a stays isolated");
    assert!(
        chain
            .rules
            .iter()
            .all(|r| r.comment.as_deref().is_none_or(|c| !c.starts_with("ns/p")))
    );
}

#[test]
fn an_invalid_pod_selector_isolates_every_pod_of_the_namespace() {
    let s = cluster(json!({
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]},
        "ingress": [{}]
    }));
    assert!(!allowed(&s, "other/c", "ns/a", 80));
    assert!(!allowed(&s, "other/c", "ns/b", 80));
    assert!(
        allowed(&s, "ns/a", "other/c", 80),
        "other namespaces are untouched"
    );
}

#[test]
fn a_huge_policy_is_accepted_without_trouble() {
    // 10,000 ipBlocks and label values at the length limit.
    let blocks: Vec<Value> = (0..10_000u32)
        .map(|i| json!({"ipBlock": {"cidr": format!("10.{}.{}.0/24", i / 256, i % 256)}}))
        .collect();
    let long = "v".repeat(63);
    let s = cluster(json!({
        "podSelector": {
            "matchLabels": {"app": "a"},
            "matchExpressions": [{"key": "long", "operator": "NotIn", "values": [long]}]
        },
        "ingress": [{"from": blocks}]
    }));
    assert!(s.policies().all(|p| p.errors.is_empty()));
    let ruleset = compile::compile(&s, "node-1", &Options::default());
    assert!(ruleset.chain("in_ns_a").is_some());
    let set = ruleset.set("np_ns_p_in0_cidr4").expect("ipBlock set");
    assert_eq!(
        set.elements.len(),
        1,
        "10,000 adjacent /24s merge into one range"
    );
}
