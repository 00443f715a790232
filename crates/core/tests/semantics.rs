//! NetworkPolicy semantics through `evaluate`: one test per trap of the API (the list in
//! `docs/ruleset.md`, "What the policies mean"), IPv6, pod lifecycle and the always-allowed
//! cases.

use kube_nftpol_test_support as support;

use kube_nftpol_core::evaluate;
use kube_nftpol_core::model::{ObjectKey, PodPhase, Protocol, Snapshot};
use kube_nftpol_core::policy::{DirectionVerdict, Endpoint, Flow, MissReason, Verdict};
use serde_json::json;
use support::cluster::{pod, snapshot, with_ports};

fn flow(from: &str, to: &str, protocol: Protocol, port: u16) -> Flow {
    let endpoint = |s: &str| match s.split_once('/') {
        Some((ns, name)) => Endpoint::Pod(ObjectKey::new(ns, name)),
        None => Endpoint::Ip(s.parse().expect("ip")),
    };
    Flow {
        source: endpoint(from),
        destination: endpoint(to),
        protocol,
        port,
    }
}

fn verdict(s: &Snapshot, from: &str, to: &str, protocol: Protocol, port: u16) -> Verdict {
    evaluate(s, &flow(from, to, protocol, port)).expect("endpoints exist")
}

fn allowed(s: &Snapshot, from: &str, to: &str, port: u16) -> bool {
    verdict(s, from, to, Protocol::Tcp, port).allowed
}

fn allowed_proto(s: &Snapshot, from: &str, to: &str, protocol: Protocol, port: u16) -> bool {
    verdict(s, from, to, protocol, port).allowed
}

/// Namespaces x (team=a) and y (team=b), pods x/a, x/b, y/a, y/b with `pod=<name>` labels, all
/// on node-1, plus the given policies.
fn xy(policies: Vec<serde_json::Value>) -> Snapshot {
    snapshot(
        &[("x", &[("team", "a")]), ("y", &[("team", "b")])],
        vec![
            with_ports(
                pod(
                    "x",
                    "a",
                    &[("pod", "a")],
                    "node-1",
                    &["10.0.1.1", "fd00::1:1"],
                ),
                &["http:80/TCP", "dns:53/UDP"],
            ),
            with_ports(
                pod(
                    "x",
                    "b",
                    &[("pod", "b")],
                    "node-1",
                    &["10.0.1.2", "fd00::1:2"],
                ),
                &["http:8080/TCP"],
            ),
            with_ports(
                pod(
                    "y",
                    "a",
                    &[("pod", "a")],
                    "node-1",
                    &["10.0.2.1", "fd00::2:1"],
                ),
                &["http:81/TCP"],
            ),
            pod(
                "y",
                "b",
                &[("pod", "b")],
                "node-2",
                &["10.0.2.2", "fd00::2:2"],
            ),
        ],
        policies,
    )
}

fn np(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"metadata": {"name": name, "namespace": ns}, "spec": spec})
}

#[test]
fn missing_policy_types_default_to_ingress_only() {
    let s = xy(vec![np("x", "p", json!({"podSelector": {}}))]);
    assert!(!allowed(&s, "y/a", "x/a", 80), "ingress is isolated");
    assert!(allowed(&s, "x/a", "y/a", 80), "egress stays open");
}

#[test]
fn missing_policy_types_include_egress_when_egress_rules_exist() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}),
    )]);
    assert!(
        !allowed(&s, "x/a", "y/a", 80),
        "egress is isolated by defaulting"
    );
    assert!(allowed_proto(&s, "x/a", "y/a", Protocol::Udp, 53));
    assert!(!allowed(&s, "y/a", "x/a", 80), "ingress is isolated too");
}

#[test]
fn an_empty_egress_list_without_policy_types_denies_ingress_and_leaves_egress_open() {
    let s = xy(vec![np("x", "p", json!({"podSelector": {}, "egress": []}))]);
    assert!(!allowed(&s, "y/a", "x/a", 80));
    assert!(allowed(&s, "x/a", "y/a", 80));
}

#[test]
fn a_section_not_listed_in_policy_types_is_ignored() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({
            "podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{}],
            "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]
        }),
    )]);
    assert!(
        allowed(&s, "x/a", "y/a", 80),
        "egress rules do not isolate when Egress is not listed"
    );
}

#[test]
fn missing_from_and_empty_from_mean_every_source_including_external() {
    for rule in [json!({}), json!({"from": []})] {
        let s = xy(vec![np(
            "x",
            "p",
            json!({"podSelector": {}, "ingress": [rule]}),
        )]);
        assert!(allowed(&s, "y/a", "x/a", 80));
        assert!(
            allowed(&s, "203.0.113.9", "x/a", 80),
            "external sources too"
        );
        assert!(
            allowed_proto(&s, "y/a", "x/a", Protocol::Sctp, 9),
            "and every protocol"
        );
    }
}

#[test]
fn an_empty_ingress_list_denies_all_ingress() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": []}),
    )]);
    assert!(!allowed(&s, "y/a", "x/a", 80));
    let v = verdict(&s, "y/a", "x/a", Protocol::Tcp, 80);
    let DirectionVerdict::Denied {
        misses,
        isolated_by,
        ..
    } = &v.ingress
    else {
        panic!("{v:?}")
    };
    assert_eq!(isolated_by, &[ObjectKey::new("x", "p")]);
    assert_eq!(misses[0].reason, MissReason::NoRules);
}

#[test]
fn a_port_entry_without_protocol_or_port_means_every_tcp_port_only() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{}]}]}),
    )]);
    assert!(allowed(&s, "y/a", "x/a", 1));
    assert!(allowed(&s, "y/a", "x/a", 65535));
    assert!(
        !allowed_proto(&s, "y/a", "x/a", Protocol::Udp, 53),
        "protocol defaults to TCP"
    );
    let v = verdict(&s, "y/a", "x/a", Protocol::Udp, 53);
    let DirectionVerdict::Denied { misses, .. } = &v.ingress else {
        panic!()
    };
    assert!(matches!(misses[0].reason, MissReason::Protocol { .. }));
}

#[test]
fn selectors_within_a_peer_are_anded() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {"matchLabels": {"pod": "a"}}}
        ]}]}),
    )]);
    assert!(allowed(&s, "y/a", "x/b", 80));
    assert!(
        !allowed(&s, "y/b", "x/b", 80),
        "namespace matches, pod does not"
    );
    assert!(
        !allowed(&s, "x/a", "x/b", 80),
        "pod matches, namespace does not"
    );
}

#[test]
fn peers_are_ored() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"team": "b"}}},
            {"podSelector": {"matchLabels": {"pod": "a"}}}
        ]}]}),
    )]);
    assert!(allowed(&s, "y/b", "x/b", 80), "first peer");
    assert!(allowed(&s, "x/a", "x/b", 80), "second peer");
    assert!(!allowed(&s, "203.0.113.9", "x/b", 80));
}

#[test]
fn a_pod_selector_peer_alone_covers_only_the_policy_namespace() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
    )]);
    assert!(allowed(&s, "x/a", "x/b", 80));
    assert!(
        !allowed(&s, "y/a", "x/b", 80),
        "y/a has the label but lives elsewhere"
    );
    let v = verdict(&s, "y/a", "x/b", Protocol::Tcp, 80);
    let DirectionVerdict::Denied { misses, .. } = &v.ingress else {
        panic!()
    };
    assert!(matches!(misses[0].reason, MissReason::Peer { .. }));
}

#[test]
fn an_empty_namespace_selector_covers_all_pods_but_not_external_addresses() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    )]);
    assert!(allowed(&s, "y/b", "x/a", 80));
    assert!(allowed(&s, "x/b", "x/a", 80));
    assert!(!allowed(&s, "203.0.113.9", "x/a", 80));
}

#[test]
fn namespaces_are_selected_by_name_through_the_metadata_name_label() {
    // The snapshot adds kubernetes.io/metadata.name even though xy() did not set it.
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["y"]}]}}
        ]}]}),
    )]);
    assert!(allowed(&s, "y/a", "x/a", 80));
    assert!(!allowed(&s, "x/b", "x/a", 80));
}

#[test]
fn except_removes_addresses_from_its_own_ip_block_only() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.2.0/24"]}},
            {"podSelector": {}, "namespaceSelector": {"matchLabels": {"team": "b"}}}
        ]}]}),
    )]);
    assert!(
        allowed(&s, "y/a", "x/a", 80),
        "excepted by the block, allowed by the other peer"
    );
    assert!(
        !allowed(&s, "10.0.2.200", "x/a", 80),
        "excepted and not a pod"
    );
    assert!(allowed(&s, "10.0.3.5", "x/a", 80));
    // And across policies: another policy allowing the excepted range wins.
    let s = xy(vec![
        np(
            "x",
            "p",
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.2.0/24"]}}]}]}),
        ),
        np(
            "x",
            "q",
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.2.200/32"}}]}]}),
        ),
    ]);
    assert!(allowed(&s, "10.0.2.200", "x/a", 80));
}

#[test]
fn cidr_host_bits_are_masked() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.2.77/24"}}]}]}),
    )]);
    assert!(s.policies().all(|p| p.errors.is_empty()));
    assert!(allowed(&s, "10.0.2.1", "x/a", 80));
    assert!(!allowed(&s, "10.0.3.1", "x/a", 80));
}

#[test]
fn ipv4_and_ipv6_blocks_never_cross_match() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "::ffff:0:0/96"}}]}]}),
    )]);
    assert!(
        !allowed(&s, "10.9.9.9", "x/a", 80),
        "an IPv4-mapped IPv6 block does not match IPv4"
    );
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}),
    )]);
    assert!(!allowed(&s, "2001:db8::1", "x/a", 80));
    assert!(allowed(&s, "192.0.2.1", "x/a", 80));
}

#[test]
fn ipv6_peers_and_blocks_work() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "fd00::2:0/112", "except": ["fd00::2:2/128"]}}]}]}),
    )]);
    assert!(
        allowed(&s, "fd00::2:1", "x/a", 80),
        "y/a by its IPv6 address"
    );
    assert!(!allowed(&s, "fd00::2:2", "x/a", 80), "y/b is excepted");
    assert!(
        allowed(&s, "y/a", "x/a", 80),
        "pods match an ipBlock by their addresses"
    );
}

#[test]
fn an_egress_ip_block_matches_pod_addresses() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.2.2/32"}}]}]}),
    )]);
    assert!(allowed(&s, "x/a", "y/b", 80));
    assert!(!allowed(&s, "x/a", "y/a", 80));
}

#[test]
fn named_ports_resolve_on_the_destination_pod_for_ingress() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
    )]);
    assert!(allowed(&s, "y/a", "x/a", 80), "x/a names 80 http");
    assert!(!allowed(&s, "y/a", "x/a", 8080));
    assert!(allowed(&s, "y/a", "x/b", 8080), "x/b names 8080 http");
    assert!(!allowed(&s, "y/a", "x/b", 80));
}

#[test]
fn named_ports_resolve_on_each_destination_pod_for_egress() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]}),
    )]);
    assert!(allowed(&s, "x/a", "y/a", 81), "y/a names 81 http");
    assert!(!allowed(&s, "x/a", "y/a", 80));
    assert!(!allowed(&s, "x/a", "y/b", 80), "y/b has no http port");
    assert!(
        !allowed(&s, "x/a", "203.0.113.1", 80),
        "external addresses have no named ports"
    );
}

#[test]
fn a_named_port_needs_the_same_protocol() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "dns", "protocol": "TCP"}]}]}),
    )]);
    assert!(!allowed(&s, "y/a", "x/a", 53), "x/a names dns only on UDP");
    assert!(
        !allowed_proto(&s, "y/a", "x/a", Protocol::Udp, 53),
        "the rule asks for TCP"
    );
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]}),
    )]);
    assert!(allowed_proto(&s, "y/a", "x/a", Protocol::Udp, 53));
}

#[test]
fn an_unresolved_named_port_matches_nothing_and_still_isolates() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "nope"}]}]}),
    )]);
    assert!(!allowed(&s, "y/a", "x/a", 80));
    let v = verdict(&s, "y/a", "x/a", Protocol::Tcp, 80);
    let DirectionVerdict::Denied { misses, .. } = &v.ingress else {
        panic!()
    };
    assert!(matches!(misses[0].reason, MissReason::Port { .. }));
}

#[test]
fn end_port_is_an_inclusive_range() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 8000, "endPort": 8010}]}]}),
    )]);
    assert!(!allowed(&s, "y/a", "x/a", 7999));
    assert!(allowed(&s, "y/a", "x/a", 8000));
    assert!(allowed(&s, "y/a", "x/a", 8010));
    assert!(!allowed(&s, "y/a", "x/a", 8011));
}

#[test]
fn protocols_must_match_exactly() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "UDP"}]}]}),
    )]);
    assert!(
        !allowed(&s, "y/a", "x/a", 80),
        "a UDP rule never lets TCP through"
    );
    assert!(allowed_proto(&s, "y/a", "x/a", Protocol::Udp, 80));
}

#[test]
fn a_pod_selected_by_an_sctp_rule_stays_isolated_for_tcp() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}]}),
    )]);
    assert!(!allowed(&s, "y/a", "x/a", 80));
    assert!(allowed_proto(&s, "y/a", "x/a", Protocol::Sctp, 80));
    assert!(allowed(&s, "y/a", "x/b", 80), "x/b is not selected");
}

#[test]
fn replies_need_no_rule_so_deny_egress_keeps_inbound_connections_working() {
    // Only the initiating direction is evaluated; conntrack carries the replies.
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    )]);
    assert!(
        allowed(&s, "y/a", "x/a", 80),
        "x/a cannot initiate, but can be reached"
    );
    assert!(!allowed(&s, "x/a", "y/a", 80));
}

#[test]
fn policies_are_additive() {
    let s = xy(vec![
        np("x", "deny", json!({"podSelector": {}, "ingress": []})),
        np(
            "x",
            "allow-80",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 80}]}]}),
        ),
    ]);
    assert!(allowed(&s, "y/a", "x/a", 80));
    assert!(!allowed(&s, "y/a", "x/a", 81));
    assert!(!allowed(&s, "y/a", "x/b", 80));
    let v = verdict(&s, "y/a", "x/a", Protocol::Tcp, 80);
    let DirectionVerdict::Allowed {
        isolated_by, rule, ..
    } = &v.ingress
    else {
        panic!()
    };
    assert_eq!(isolated_by.len(), 2);
    assert_eq!(rule.policy, ObjectKey::new("x", "allow-80"));
}

#[test]
fn terminating_pods_stay_policed_and_stay_peers() {
    let mut s = xy(vec![
        np("x", "deny", json!({"podSelector": {}, "ingress": []})),
        np(
            "y",
            "from-a",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
        ),
    ]);
    let mut a = s.pod(&ObjectKey::new("x", "a")).unwrap().clone();
    a.terminating = true;
    s.upsert_pod(a);
    assert!(!allowed(&s, "y/a", "x/a", 80), "still isolated");
    assert!(allowed(&s, "x/a", "y/b", 80), "still a peer");
}

#[test]
fn finished_pods_are_ignored_and_their_reused_ip_belongs_to_the_new_pod() {
    let mut s = xy(vec![np(
        "x",
        "deny",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )]);
    let mut old = s.pod(&ObjectKey::new("x", "b")).unwrap().clone();
    old.phase = PodPhase::Finished;
    s.upsert_pod(old);
    // A new pod in y reuses x/b's IPv4 address.
    s.upsert_pod(pod(
        "y",
        "reuser",
        &[("pod", "other")],
        "node-1",
        &["10.0.1.2"],
    ));
    assert!(
        !allowed(&s, "10.0.1.2", "x/a", 80),
        "the new owner of 10.0.1.2 has no access"
    );
    assert!(!allowed(&s, "x/b", "x/a", 80), "a finished pod is no peer");
}

#[test]
fn host_network_pods_are_node_traffic_and_never_peers() {
    let mut s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    )]);
    let mut host = pod("kube-system", "agent", &[], "node-1", &["172.18.0.2"]);
    host.host_network = true;
    s.upsert_pod(host);
    let mut remote = pod("kube-system", "agent-2", &[], "node-2", &["172.18.0.3"]);
    remote.host_network = true;
    s.upsert_pod(remote);
    let v = verdict(&s, "kube-system/agent", "x/a", Protocol::Tcp, 80);
    assert!(v.allowed, "from the pod's own node");
    assert!(matches!(v.ingress, DirectionVerdict::Exempt { .. }));
    assert!(
        !allowed(&s, "kube-system/agent-2", "x/a", 80),
        "another node is not a pod peer"
    );
    assert!(!allowed(&s, "172.18.0.3", "x/a", 80));
}

#[test]
fn a_pod_may_always_talk_to_itself() {
    let s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )]);
    assert!(allowed(&s, "x/a", "x/a", 80));
    assert!(allowed(&s, "10.0.1.1", "x/a", 80), "by address too");
    assert!(!allowed(&s, "x/a", "x/b", 80));
}

#[test]
fn label_changes_take_effect() {
    let mut s = xy(vec![np(
        "x",
        "p",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "c"}}}]}]}),
    )]);
    assert!(!allowed(&s, "y/a", "x/a", 80));
    s.upsert_namespace(kube_nftpol_core::model::Namespace::new(
        "y",
        support::cluster::labels(&[("team", "c")]),
    ));
    assert!(allowed(&s, "y/a", "x/a", 80));
}

#[test]
fn the_verdict_explains_which_policies_isolate_and_which_rule_allowed() {
    let s = xy(vec![np(
        "x",
        "web",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}], "ports": [{"port": 443}]}
        ]}),
    )]);
    let v = verdict(&s, "y/a", "x/a", Protocol::Tcp, 80);
    assert!(!v.allowed);
    assert!(matches!(v.egress, DirectionVerdict::NotIsolated { .. }));
    let DirectionVerdict::Denied { misses, .. } = &v.ingress else {
        panic!()
    };
    assert_eq!(misses.len(), 2);
    assert!(
        matches!(misses[0].reason, MissReason::Peer { .. }),
        "rule 0: wrong peer"
    );
    assert!(
        matches!(misses[1].reason, MissReason::Port { .. }),
        "rule 1: right peer, wrong port"
    );
    let v = verdict(&s, "y/a", "x/a", Protocol::Tcp, 443);
    let DirectionVerdict::Allowed { rule, .. } = &v.ingress else {
        panic!()
    };
    assert_eq!(rule.index, 1);
}
