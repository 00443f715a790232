//! Tests of [`suggest`] and its rendering on small hand-made flows and snapshots. The closed
//! loop on the evaluator (suggestions applied, every denied flow allowed and nothing else) is
//! `tests/hints.rs`.

use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort};
use serde_json::json;

use super::*;
use crate::manifest;
use crate::model::{Namespace, Pod, Policy};
use kube_nftpol_test_support::cluster::labels;

fn flow_pod(key: &str, pairs: &[(&str, &str)], owner: Option<(&str, &str)>) -> FlowPod {
    let (namespace, name) = key.split_once('/').unwrap();
    FlowPod {
        key: ObjectKey::new(namespace, name),
        labels: labels(pairs),
        owner: owner.map(|(kind, name)| Owner {
            kind: kind.into(),
            name: name.into(),
        }),
        unknown: false,
    }
}

/// The shop's pods as the drop log shows them.
fn frontend(instance: &str) -> FlowPod {
    flow_pod(
        &format!("shop/frontend-7d4f9-{instance}"),
        &[("app", "frontend"), ("pod-template-hash", "7d4f9")],
        Some(("ReplicaSet", "frontend-7d4f9")),
    )
}

fn backend(instance: &str) -> FlowPod {
    flow_pod(
        &format!("shop/backend-5c8b6-{instance}"),
        &[("app", "backend"), ("pod-template-hash", "5c8b6")],
        Some(("ReplicaSet", "backend-5c8b6")),
    )
}

fn db(index: u8) -> FlowPod {
    flow_pod(
        &format!("shop/db-{index}"),
        &[
            ("app", "db"),
            ("controller-revision-hash", "db-6d9"),
            ("statefulset.kubernetes.io/pod-name", &format!("db-{index}")),
        ],
        Some(("StatefulSet", "db")),
    )
}

fn payments() -> FlowPod {
    flow_pod(
        "payments/api-0",
        &[("app", "payments")],
        Some(("StatefulSet", "api")),
    )
}

fn coredns() -> FlowPod {
    flow_pod(
        "kube-system/coredns-6f6b7-xm4tp",
        &[("k8s-app", "kube-dns"), ("pod-template-hash", "6f6b7")],
        Some(("ReplicaSet", "coredns-6f6b7")),
    )
}

fn denied(
    direction: Direction,
    pod: FlowPod,
    peer: FlowPeer,
    protocol: &str,
    port: u16,
) -> FlowToAllow {
    FlowToAllow {
        direction,
        pod,
        peer,
        protocol: match protocol {
            "tcp" => IpProtocol::Tcp,
            "udp" => IpProtocol::Udp,
            "sctp" => IpProtocol::Sctp,
            "icmp" => IpProtocol::Icmp,
            other => panic!("{other}"),
        },
        port: Some(port),
        drops: 1,
        tier: None,
        cluster_policy: None,
    }
}

fn egress(pod: FlowPod, peer: FlowPod, port: u16) -> FlowToAllow {
    denied(Direction::Egress, pod, FlowPeer::Pod(peer), "tcp", port)
}

fn ingress(pod: FlowPod, peer: FlowPod, port: u16) -> FlowToAllow {
    denied(Direction::Ingress, pod, FlowPeer::Pod(peer), "tcp", port)
}

fn external(ip: &str) -> FlowPeer {
    FlowPeer::External(ip.parse().unwrap())
}

fn offline(flows: &[FlowToAllow]) -> Suggestions {
    suggest(flows, &Options::default())
}

/// The one suggestion, as JSON for compact assertions.
fn only(suggestions: &Suggestions) -> serde_json::Value {
    assert_eq!(suggestions.suggestions.len(), 1, "{suggestions:#?}");
    serde_json::to_value(&suggestions.suggestions[0].policy).unwrap()
}

fn rules(policy: &serde_json::Value, direction: &str) -> serde_json::Value {
    policy["spec"][direction].clone()
}

#[test]
fn one_policy_per_workload_and_direction_in_the_pods_namespace() {
    let flows = [
        egress(frontend("a"), backend("x"), 9090),
        egress(frontend("b"), backend("y"), 9090),
        ingress(backend("x"), frontend("a"), 9090),
    ];
    let suggestions = offline(&flows);
    let names: Vec<(&str, &str)> = suggestions
        .suggestions
        .iter()
        .map(|s| {
            (
                s.policy.metadata.namespace.as_deref().unwrap(),
                s.policy.metadata.name.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("shop", "allow-backend-ingress-hint"),
            ("shop", "allow-frontend-egress-hint")
        ]
    );
    assert_eq!(suggestions.denied_flows, 3);
    assert!(suggestions.issues.is_empty(), "{:?}", suggestions.issues);
}

#[test]
fn the_policy_selects_the_workload_by_stable_labels_and_names_only_its_direction() {
    let policy = only(&offline(&[egress(frontend("a"), backend("x"), 9090)]));
    assert_eq!(
        policy,
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": "allow-frontend-egress-hint",
                "namespace": "shop",
                "labels": {"kube-nftpol.io/hint": "true"},
                "annotations": {"kube-nftpol.io/hint-denied-flows": "1"},
            },
            "spec": {
                "podSelector": {"matchLabels": {"app": "frontend"}},
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [{"podSelector": {"matchLabels": {"app": "backend"}}}],
                    "ports": [{"protocol": "TCP", "port": 9090}],
                }],
            },
        })
    );
}

#[test]
fn per_instance_labels_never_reach_a_selector() {
    let suggestions = offline(&[
        ingress(db(0), backend("x"), 5432),
        ingress(db(1), backend("y"), 5432),
    ]);
    let policy = only(&suggestions);
    assert_eq!(policy["metadata"]["name"], "allow-db-ingress-hint");
    assert_eq!(
        policy["spec"]["podSelector"],
        json!({"matchLabels": {"app": "db"}})
    );
    assert_eq!(
        rules(&policy, "ingress")[0]["from"],
        json!([{"podSelector": {"matchLabels": {"app": "backend"}}}])
    );
    assert_eq!(suggestions.suggestions[0].denied_flows, 2);
}

#[test]
fn ports_of_one_peer_merge_into_one_rule() {
    let policy = only(&offline(&[
        egress(frontend("a"), backend("x"), 9090),
        egress(frontend("a"), backend("x"), 8443),
        denied(
            Direction::Egress,
            frontend("a"),
            FlowPeer::Pod(backend("y")),
            "udp",
            9090,
        ),
    ]));
    assert_eq!(
        rules(&policy, "egress"),
        json!([{
            "to": [{"podSelector": {"matchLabels": {"app": "backend"}}}],
            "ports": [
                {"protocol": "TCP", "port": 8443},
                {"protocol": "TCP", "port": 9090},
                {"protocol": "UDP", "port": 9090},
            ],
        }])
    );
}

#[test]
fn peers_with_identical_ports_share_a_rule_and_others_get_their_own() {
    let policy = only(&offline(&[
        ingress(backend("x"), frontend("a"), 9090),
        ingress(backend("x"), payments(), 9090),
        ingress(backend("x"), db(0), 9090),
        ingress(backend("x"), db(0), 9091),
    ]));
    assert_eq!(
        rules(&policy, "ingress"),
        json!([
            {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "payments"}},
                     "podSelector": {"matchLabels": {"app": "payments"}}},
                    {"podSelector": {"matchLabels": {"app": "frontend"}}},
                ],
                "ports": [{"protocol": "TCP", "port": 9090}],
            },
            {
                "from": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                "ports": [{"protocol": "TCP", "port": 9090}, {"protocol": "TCP", "port": 9091}],
            },
        ])
    );
}

#[test]
fn external_peers_are_single_addresses_in_rules_of_their_own_and_flagged() {
    let suggestions = offline(&[
        egress(backend("x"), db(0), 443),
        denied(
            Direction::Egress,
            backend("x"),
            external("203.0.113.7"),
            "tcp",
            443,
        ),
        denied(
            Direction::Egress,
            backend("y"),
            external("2001:db8::7"),
            "tcp",
            443,
        ),
        denied(
            Direction::Egress,
            backend("x"),
            external("198.51.100.1"),
            "udp",
            123,
        ),
    ]);
    let policy = only(&suggestions);
    assert_eq!(
        rules(&policy, "egress"),
        json!([
            {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
             "ports": [{"protocol": "TCP", "port": 443}]},
            {"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}, {"ipBlock": {"cidr": "2001:db8::7/128"}}],
             "ports": [{"protocol": "TCP", "port": 443}]},
            {"to": [{"ipBlock": {"cidr": "198.51.100.1/32"}}],
             "ports": [{"protocol": "UDP", "port": 123}]},
        ])
    );
    assert_eq!(
        policy["metadata"]["annotations"]["kube-nftpol.io/hint-external"],
        "true"
    );
    let suggestion = &suggestions.suggestions[0];
    assert_eq!(suggestion.external.len(), 3);
    assert!(
        suggestion
            .notes
            .iter()
            .any(|n| n.contains("3 addresses outside the cluster")),
        "{:?}",
        suggestion.notes
    );
}

#[test]
fn denied_dns_gets_the_kube_dns_rule_on_udp_and_tcp() {
    let suggestions = offline(&[
        denied(
            Direction::Egress,
            payments(),
            FlowPeer::Pod(coredns()),
            "udp",
            53,
        ),
        egress(payments(), backend("x"), 9090),
    ]);
    let policy = only(&suggestions);
    assert_eq!(
        rules(&policy, "egress")[0],
        json!({
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        })
    );
    assert_eq!(rules(&policy, "egress").as_array().unwrap().len(), 2);
    let suggestion = &suggestions.suggestions[0];
    assert!(suggestion.dns);
    assert_eq!(suggestion.denied_flows, 2);
    assert!(
        suggestion
            .notes
            .iter()
            .any(|n| n.contains("both UDP and TCP"))
    );
}

#[test]
fn ingress_to_kube_dns_is_an_ordinary_peer() {
    let coredns_workload_flows = [ingress(coredns(), payments(), 53)];
    let policy = only(&offline(&coredns_workload_flows));
    assert_eq!(policy["metadata"]["name"], "allow-coredns-ingress-hint");
    assert_eq!(
        policy["spec"]["podSelector"],
        json!({"matchLabels": {"k8s-app": "kube-dns"}})
    );
}

#[test]
fn flows_nothing_can_allow_are_issues_not_policies() {
    let mut no_port = egress(frontend("a"), backend("x"), 1);
    no_port.port = None;
    let mut unknown = backend("x");
    unknown.labels.clear();
    unknown.unknown = true;
    let suggestions = offline(&[
        denied(
            Direction::Egress,
            frontend("a"),
            external("203.0.113.1"),
            "icmp",
            0,
        ),
        no_port,
        ingress(unknown, frontend("a"), 9090),
        denied(
            Direction::Egress,
            frontend("a"),
            external("::ffff:10.0.0.1"),
            "tcp",
            80,
        ),
        ingress(flow_pod("shop/bare", &[], None), frontend("a"), 80),
    ]);
    assert!(suggestions.suggestions.is_empty(), "{suggestions:#?}");
    let kinds: Vec<IssueKind> = suggestions.issues.iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        [
            IssueKind::UnknownPod,
            IssueKind::UnsupportedProtocol,
            IssueKind::NoPort,
            IssueKind::UnsupportedAddress,
            IssueKind::NoSelector,
        ]
    );
    let messages: Vec<String> = suggestions.issues.iter().map(ToString::to_string).collect();
    assert!(
        messages[1].contains("icmp with 203.0.113.1 was denied"),
        "{messages:?}"
    );
    assert!(
        messages[4].starts_with("Pod shop/bare ingress: not suggested: its pods have no label"),
        "{messages:?}"
    );
}

#[test]
fn the_namespace_filter_keeps_only_that_namespaces_pods() {
    let flows = [
        egress(frontend("a"), backend("x"), 9090),
        egress(payments(), backend("x"), 9090),
    ];
    let options = Options {
        namespace: Some("payments"),
        ..Options::default()
    };
    let suggestions = suggest(&flows, &options);
    assert_eq!(suggestions.denied_flows, 1);
    assert_eq!(only(&suggestions)["metadata"]["namespace"], "payments");
}

#[test]
fn repeated_flows_count_once_with_all_their_drops() {
    let mut repeated = egress(frontend("a"), backend("x"), 9090);
    repeated.drops = 5;
    let suggestions = offline(&[repeated.clone(), repeated]);
    assert_eq!(suggestions.denied_flows, 1);
    assert_eq!(suggestions.suggestions[0].denied_flows, 1);
    assert_eq!(suggestions.suggestions[0].logged_drops, 10);
}

#[test]
fn workloads_of_different_kinds_with_one_name_get_the_kind_in_the_policy_name() {
    let deployment = flow_pod(
        "shop/db-5c8b6-x",
        &[("app", "db-cache"), ("pod-template-hash", "5c8b6")],
        Some(("ReplicaSet", "db-5c8b6")),
    );
    let suggestions = offline(&[
        ingress(db(0), frontend("a"), 5432),
        ingress(deployment, frontend("a"), 6379),
    ]);
    let names: Vec<&str> = suggestions
        .suggestions
        .iter()
        .map(|s| s.policy.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "allow-deployment-db-ingress-hint",
            "allow-statefulset-db-ingress-hint"
        ]
    );
}

#[test]
fn output_does_not_depend_on_the_order_of_the_flows() {
    let mut flows = vec![
        egress(frontend("a"), backend("x"), 9090),
        ingress(backend("x"), frontend("a"), 9090),
        ingress(backend("y"), payments(), 9090),
        denied(
            Direction::Egress,
            backend("x"),
            external("203.0.113.7"),
            "tcp",
            443,
        ),
        denied(
            Direction::Egress,
            payments(),
            FlowPeer::Pod(coredns()),
            "udp",
            53,
        ),
        ingress(db(1), backend("x"), 5432),
    ];
    let expected = render::to_yaml(&offline(&flows)).unwrap();
    flows.reverse();
    assert_eq!(render::to_yaml(&offline(&flows)).unwrap(), expected);
    flows.rotate_left(2);
    assert_eq!(render::to_yaml(&offline(&flows)).unwrap(), expected);
}

// --- With a snapshot ---

fn snapshot_pod(flow_pod: &FlowPod, ip: &str) -> Pod {
    let mut pod = Pod::running(
        flow_pod.key.clone(),
        flow_pod.labels.clone(),
        "node-1",
        [ip.parse().unwrap()],
    );
    pod.owner = flow_pod.owner.clone();
    pod
}

/// shop: frontend (2 pods), backend (2 pods), db (2 pods), all isolated both ways by
/// default-deny; payments/api-0 not isolated; kube-dns.
fn shop() -> Snapshot {
    let mut snapshot = Snapshot::new();
    snapshot.upsert_namespace(Namespace::new("shop", Labels::new()));
    for (pod, ip) in [
        (frontend("a"), "10.0.0.1"),
        (frontend("b"), "10.0.0.2"),
        (backend("x"), "10.0.0.3"),
        (backend("y"), "10.0.0.4"),
        (db(0), "10.0.0.5"),
        (db(1), "10.0.0.6"),
        (payments(), "10.0.1.1"),
        (coredns(), "10.0.2.1"),
    ] {
        snapshot.upsert_pod(snapshot_pod(&pod, ip));
    }
    let deny: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "default-deny", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }))
    .unwrap();
    snapshot.upsert_network_policy(&deny).unwrap();
    snapshot
}

fn checked(flows: &[FlowToAllow], snapshot: &Snapshot) -> Suggestions {
    suggest(
        flows,
        &Options {
            snapshot: Some(snapshot),
            namespace: None,
            observed: None,
        },
    )
}

#[test]
fn the_snapshot_labels_win_over_the_drop_logs() {
    let snapshot = shop();
    let mut stale = frontend("a");
    stale.labels = labels(&[("app", "old-frontend")]);
    let policy = only(&checked(&[egress(stale, backend("x"), 9090)], &snapshot));
    assert_eq!(
        policy["spec"]["podSelector"],
        json!({"matchLabels": {"app": "frontend"}})
    );
}

#[test]
fn flows_of_a_namespace_deleted_since_are_issues_not_policies() {
    let snapshot = shop();
    let gone = flow_pod("e2e-1234/server", &[("pod-name", "server")], None);
    let suggestions = checked(
        &[
            ingress(gone.clone(), frontend("a"), 80),
            egress(frontend("a"), backend("x"), 9090),
        ],
        &snapshot,
    );
    assert_eq!(suggestions.suggestions.len(), 1);
    assert_eq!(
        suggestions.suggestions[0]
            .policy
            .metadata
            .namespace
            .as_deref(),
        Some("shop")
    );
    assert_eq!(suggestions.issues.len(), 1);
    assert_eq!(suggestions.issues[0].kind, IssueKind::NamespaceGone);
    assert_eq!(suggestions.issues[0].workload.namespace, "e2e-1234");

    // A namespace being deleted (Terminating) refuses new objects too.
    let mut terminating = shop();
    let mut shop_ns = Namespace::new("shop", Labels::new());
    shop_ns.terminating = true;
    terminating.upsert_namespace(shop_ns);
    let suggestions = checked(&[egress(frontend("a"), backend("x"), 9090)], &terminating);
    assert!(suggestions.suggestions.is_empty());
    assert_eq!(suggestions.issues[0].kind, IssueKind::NamespaceGone);
}

#[test]
fn flows_the_snapshot_now_allows_are_left_out() {
    let mut snapshot = shop();
    let allow: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "frontend-to-backend", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "frontend"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "backend"}}}],
                             "ports": [{"port": 9090}]}]},
    }))
    .unwrap();
    snapshot.upsert_network_policy(&allow).unwrap();
    let suggestions = checked(
        &[
            egress(frontend("a"), backend("x"), 9090),
            egress(frontend("a"), backend("x"), 9091),
        ],
        &snapshot,
    );
    assert_eq!(suggestions.denied_flows, 2);
    assert_eq!(suggestions.no_longer_denied, 1);
    let policy = only(&suggestions);
    assert_eq!(
        rules(&policy, "egress")[0]["ports"],
        json!([{"protocol": "TCP", "port": 9091}])
    );
}

#[test]
fn a_workload_that_is_no_longer_isolated_gets_nothing() {
    // payments/api-0 is isolated by no policy in the snapshot: its old drops are stale.
    let snapshot = shop();
    let suggestions = checked(&[egress(payments(), backend("x"), 9090)], &snapshot);
    assert_eq!(suggestions.no_longer_denied, 1);
    assert!(suggestions.suggestions.is_empty());
}

#[test]
fn a_selector_that_would_isolate_more_pods_is_an_issue() {
    // Pods of the workload that no policy isolates yet (a second deployment of the same app
    // in a namespace isolated by label).
    let mut snapshot = Snapshot::new();
    let a = frontend("a");
    let mut b = frontend("b");
    b.labels.insert("canary".into(), "true".into());
    snapshot.upsert_pod(snapshot_pod(&a, "10.0.0.1"));
    snapshot.upsert_pod(snapshot_pod(&b, "10.0.0.2"));
    snapshot.upsert_pod(snapshot_pod(&backend("x"), "10.0.0.3"));
    let deny: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "deny-stable", "namespace": "shop"},
        "spec": {"podSelector": {"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]},
                 "policyTypes": ["Egress"]},
    }))
    .unwrap();
    snapshot.upsert_network_policy(&deny).unwrap();
    let suggestions = checked(&[egress(a, backend("x"), 9090)], &snapshot);
    assert!(suggestions.suggestions.is_empty(), "{suggestions:#?}");
    assert_eq!(suggestions.issues.len(), 1);
    assert_eq!(suggestions.issues[0].kind, IssueKind::WouldIsolate);
    assert!(
        suggestions.issues[0].message.contains(
            "shop/frontend-7d4f9-b (selected by app=frontend) is not isolated for egress"
        ),
        "{}",
        suggestions.issues[0].message
    );
}

#[test]
fn a_peer_that_cannot_be_told_apart_is_left_out_and_reported() {
    let mut snapshot = shop();
    // A second workload with the backend's labels.
    let twin = flow_pod(
        "shop/backend-copy-0",
        &[("app", "backend")],
        Some(("StatefulSet", "backend-copy")),
    );
    snapshot.upsert_pod(snapshot_pod(&twin, "10.0.0.9"));
    let suggestions = checked(
        &[
            egress(frontend("a"), backend("x"), 9090),
            egress(frontend("a"), db(0), 5432),
        ],
        &snapshot,
    );
    let policy = only(&suggestions);
    assert_eq!(
        rules(&policy, "egress"),
        json!([{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                "ports": [{"protocol": "TCP", "port": 5432}]}])
    );
    assert_eq!(suggestions.suggestions[0].denied_flows, 1);
    assert_eq!(suggestions.issues.len(), 1);
    assert_eq!(suggestions.issues[0].kind, IssueKind::NoPeerSelector);
    assert!(
        suggestions.issues[0].message.contains("peer Deployment shop/backend left out: its labels app=backend also select shop/backend-copy-0"),
        "{}",
        suggestions.issues[0].message
    );
}

fn with_policy(mut snapshot: Snapshot, value: serde_json::Value) -> Snapshot {
    let policy: k8s_openapi::api::networking::v1::NetworkPolicy =
        serde_json::from_value(value).unwrap();
    snapshot.upsert_network_policy(&policy).unwrap();
    snapshot
}

#[test]
fn an_earlier_hint_of_the_same_name_keeps_its_rules_in_the_new_one() {
    let earlier = json!({
        "metadata": {"name": "allow-frontend-egress-hint", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "frontend"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "backend"}}}],
                             "ports": [{"protocol": "TCP", "port": 9090}]}]},
    });
    let snapshot = with_policy(shop(), earlier.clone());
    // The log still shows the old denial (now allowed, left out) and a new one.
    let suggestions = checked(
        &[
            egress(frontend("a"), backend("x"), 9090),
            egress(frontend("a"), db(0), 5432),
        ],
        &snapshot,
    );
    assert_eq!(suggestions.no_longer_denied, 1);
    let policy = only(&suggestions);
    assert_eq!(
        rules(&policy, "egress"),
        json!([
            earlier["spec"]["egress"][0],
            {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
             "ports": [{"protocol": "TCP", "port": 5432}]},
        ])
    );
    assert!(
        suggestions.suggestions[0].notes.contains(
            &"replaces the existing shop/allow-frontend-egress-hint and keeps its 1 rule"
                .to_owned()
        ),
        "{:?}",
        suggestions.suggestions[0].notes
    );
}

#[test]
fn a_policy_of_the_same_name_for_other_pods_is_never_replaced() {
    let snapshot = with_policy(
        shop(),
        json!({
            "metadata": {"name": "allow-frontend-egress-hint", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Egress"],
                     "egress": [{}]},
        }),
    );
    let suggestions = checked(&[egress(frontend("a"), backend("x"), 9090)], &snapshot);
    assert!(suggestions.suggestions.is_empty());
    assert_eq!(suggestions.issues.len(), 1);
    assert_eq!(suggestions.issues[0].kind, IssueKind::NameTaken);
    assert_eq!(
        suggestions.issues[0].message,
        "not suggested: policy shop/allow-frontend-egress-hint exists and selects pods by app=db, \
         not by the suggested labels: applying would replace it (rename or delete it first)"
    );
}

#[test]
fn an_address_a_policy_excludes_on_purpose_is_not_suggested() {
    let snapshot = with_policy(
        shop(),
        json!({
            "metadata": {"name": "block-cloud-metadata", "namespace": "shop"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]}]},
        }),
    );
    let suggestions = checked(
        &[
            denied(
                Direction::Egress,
                frontend("a"),
                external("169.254.169.254"),
                "tcp",
                80,
            ),
            egress(frontend("a"), backend("x"), 9090),
        ],
        &snapshot,
    );
    // Everything else is allowed by the same rule, so only the metadata address was denied.
    assert_eq!(suggestions.no_longer_denied, 1);
    assert!(suggestions.suggestions.is_empty());
    assert_eq!(suggestions.issues.len(), 1);
    assert_eq!(suggestions.issues[0].kind, IssueKind::ExcludedOnPurpose);
    assert_eq!(
        suggestions.issues[0].message,
        "169.254.169.254 is left out: shop/block-cloud-metadata egress[0] (ipBlock 0.0.0.0/0 \
         except 169.254.169.254/32) excludes it on purpose"
    );
}

#[test]
fn a_policy_whose_every_peer_is_left_out_is_not_suggested() {
    let mut snapshot = shop();
    let twin = flow_pod(
        "shop/backend-copy-0",
        &[("app", "backend")],
        Some(("StatefulSet", "backend-copy")),
    );
    snapshot.upsert_pod(snapshot_pod(&twin, "10.0.0.9"));
    let suggestions = checked(&[egress(frontend("a"), backend("x"), 9090)], &snapshot);
    assert!(suggestions.suggestions.is_empty());
    let messages: Vec<&str> = suggestions
        .issues
        .iter()
        .map(|i| i.message.as_str())
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    // Sorted by kind: the workload's issue, then the peer's.
    assert_eq!(messages[0], "not suggested: every peer was left out");
    assert!(
        messages[1].starts_with("peer Deployment shop/backend left out"),
        "{messages:?}"
    );
}

// --- Rendering ---

/// Every suggested policy, loaded back through the manifest loader and validated.
fn loaded_back(text: &str, origin: &str) -> Vec<Policy> {
    let loaded = manifest::load_str(text, origin).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert!(
        loaded.invalid_policies.is_empty(),
        "{:?}",
        loaded.invalid_policies
    );
    loaded.snapshot.policies().cloned().collect()
}

fn sample() -> Suggestions {
    offline(&[
        egress(frontend("a"), backend("x"), 9090),
        ingress(backend("x"), frontend("a"), 9090),
        ingress(backend("y"), payments(), 9090),
        denied(
            Direction::Egress,
            backend("x"),
            external("203.0.113.7"),
            "tcp",
            443,
        ),
        denied(
            Direction::Egress,
            backend("x"),
            FlowPeer::Pod(coredns()),
            "udp",
            53,
        ),
        ingress(db(1), backend("x"), 5432),
        denied(Direction::Egress, db(0), external("203.0.113.1"), "icmp", 0),
    ])
}

fn expected_policies(suggestions: &Suggestions) -> Vec<Policy> {
    let mut policies: Vec<Policy> = suggestions
        .suggestions
        .iter()
        .map(|s| Policy::from_k8s(&s.policy).unwrap())
        .collect();
    policies.sort_by(|a, b| a.key.cmp(&b.key));
    policies
}

#[test]
fn yaml_output_loads_back_as_the_same_valid_policies() {
    let suggestions = sample();
    assert_eq!(suggestions.suggestions.len(), 4);
    let text = render::to_yaml(&suggestions).unwrap();
    assert_eq!(
        loaded_back(&text, "hints.yaml"),
        expected_policies(&suggestions)
    );
    assert_eq!(text.matches("\n---\n").count(), 4, "{text}");
}

#[test]
fn yaml_output_explains_itself_in_comments() {
    let text = render::to_yaml(&sample()).unwrap();
    assert!(
        text.starts_with(
            "# kube-nftpol: 4 suggested NetworkPolicies from 7 denied flows.\n\
             # Each allows what was denied, for every pod of the workload: review before applying.\n\
             # Not suggested:\n\
             #   StatefulSet shop/db egress: icmp with 203.0.113.1 was denied: NetworkPolicy can only name TCP, UDP and SCTP ports\n\
             ---\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "---\n# Deployment shop/backend, egress: from 2 denied flows (2 logged drops)\n\
             # note: the DNS rule allows both UDP and TCP on the denied port: resolvers switch to TCP for long answers\n\
             # note: allows 1 address outside the cluster by address (ipBlock): check it before applying\n\
             apiVersion: \"networking.k8s.io/v1\"\n"
        ),
        "{text}"
    );
}

#[test]
fn yaml_without_suggestions_is_only_comments() {
    let text = render::to_yaml(&offline(&[])).unwrap();
    assert_eq!(
        text,
        "# kube-nftpol: 0 suggested NetworkPolicies from 0 denied flows.\n"
    );
}

#[test]
fn agents_that_did_not_answer_make_the_output_say_it_is_incomplete() {
    let mut suggestions = sample();
    let complete = render::to_yaml(&suggestions).unwrap();
    assert!(!complete.contains("INCOMPLETE"), "{complete}");
    let json: serde_json::Value =
        serde_json::from_str(&render::to_json(&suggestions).unwrap()).unwrap();
    assert!(json.get("missing_agents").is_none());

    suggestions.missing_agents = vec!["kube-nftpol-x7k2p (node worker-2)".to_owned()];
    let text = render::to_yaml(&suggestions).unwrap();
    assert!(
        text.contains(
            "# INCOMPLETE: these agents did not answer, so their nodes' flows are missing and the \
             policies may not allow everything their workloads need:\n\
             #   kube-nftpol-x7k2p (node worker-2)\n"
        ),
        "{text}"
    );
    // Still the same policies.
    assert_eq!(
        loaded_back(&text, "hints.yaml"),
        expected_policies(&suggestions)
    );
    let json: serde_json::Value =
        serde_json::from_str(&render::to_json(&suggestions).unwrap()).unwrap();
    assert_eq!(
        json["missing_agents"],
        serde_json::json!(["kube-nftpol-x7k2p (node worker-2)"])
    );
}

#[test]
fn json_output_is_the_report_with_applicable_policies() {
    let suggestions = sample();
    let report: serde_json::Value =
        serde_json::from_str(&render::to_json(&suggestions).unwrap()).unwrap();
    assert_eq!(report["denied_flows"], 7);
    assert_eq!(report["no_longer_denied"], 0);
    assert_eq!(report["issues"][0]["kind"], "unsupported_protocol");
    assert_eq!(report["issues"][0]["workload"]["kind"], "StatefulSet");
    // Sorted by workload, then ingress before egress.
    assert_eq!(report["suggestions"][0]["workload"]["name"], "backend");
    assert_eq!(report["suggestions"][0]["direction"], "ingress");
    assert_eq!(report["suggestions"][1]["direction"], "egress");
    assert_eq!(report["suggestions"][1]["external"], json!(["203.0.113.7"]));
    assert_eq!(report["suggestions"][1]["dns"], true);
    let list = json!({"apiVersion": "v1", "kind": "List",
                      "items": report["suggestions"].as_array().unwrap().iter()
                          .map(|s| s["policy"].clone()).collect::<Vec<_>>()});
    assert_eq!(
        loaded_back(&list.to_string(), "hints.json"),
        expected_policies(&suggestions)
    );
}

#[test]
fn hostile_names_stay_inside_their_strings_and_comments() {
    let evil = flow_pod(
        "shop/x\n---\nkind: Pod #-0",
        &[("app", "yes"), ("on", "53")],
        Some(("StatefulSet", "x\n---\nkind: Pod #")),
    );
    let mut peer = frontend("a");
    peer.key.name = "evil\r\napiVersion: v1\u{2028}".into();
    let suggestions = offline(&[ingress(evil.clone(), peer.clone(), 80)]);
    let text = render::to_yaml(&suggestions).unwrap();
    assert_eq!(text.matches("\n---\n").count(), 1, "{text}");
    assert!(
        text.lines().all(|l| !l.starts_with("---") || l == "---"),
        "{text}"
    );
    assert_eq!(
        only(&suggestions)["metadata"]["name"],
        "allow-x-kind-pod-ingress-hint"
    );
    assert_eq!(
        loaded_back(&text, "hints.yaml"),
        expected_policies(&suggestions)
    );

    // A hostile namespace would end up in a namespaceSelector: the policy is refused, and the
    // issue stays in comments.
    peer.key.namespace = "evil\n---\napiVersion: v1".into();
    let suggestions = offline(&[ingress(evil, peer, 80)]);
    assert!(suggestions.suggestions.is_empty());
    let text = render::to_yaml(&suggestions).unwrap();
    assert!(text.lines().all(|l| l.starts_with('#')), "{text}");
}

#[test]
fn a_policy_that_would_be_invalid_is_an_issue() {
    let evil = flow_pod("shop/x", &[("app", "not a label value")], None);
    let suggestions = offline(&[ingress(evil, frontend("a"), 80)]);
    assert!(suggestions.suggestions.is_empty());
    assert_eq!(suggestions.issues.len(), 1);
    assert_eq!(suggestions.issues[0].kind, IssueKind::Invalid);
    assert!(
        suggestions.issues[0].message.contains(
            "spec.podSelector.matchLabels[app]: label value \"not a label value\" is invalid"
        ),
        "{}",
        suggestions.issues[0].message
    );
}

#[test]
fn peers_of_rules_are_kubernetes_peers() {
    // The typed objects carry no empty lists or selectors that would widen a rule.
    for suggestion in &sample().suggestions {
        let spec = suggestion.policy.spec.as_ref().unwrap();
        let rules: Vec<(&Vec<NetworkPolicyPeer>, &Vec<NetworkPolicyPort>)> = spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_ref().unwrap(), r.ports.as_ref().unwrap()))
            .chain(
                spec.egress
                    .iter()
                    .flatten()
                    .map(|r| (r.to.as_ref().unwrap(), r.ports.as_ref().unwrap())),
            )
            .collect();
        assert!(!rules.is_empty());
        for (peers, ports) in rules {
            assert!(!peers.is_empty() && !ports.is_empty());
            for peer in peers {
                let selects_pods = peer
                    .pod_selector
                    .as_ref()
                    .is_some_and(|s| !s.match_labels.as_ref().unwrap().is_empty());
                assert!(selects_pods ^ peer.ip_block.is_some(), "{peer:?}");
            }
            for port in ports {
                assert!(port.port.is_some() && port.end_port.is_none());
            }
        }
    }
}

#[test]
fn a_flow_an_admin_tier_deny_drops_is_an_issue_and_never_a_suggestion() {
    let mut denied_by_admin = egress(frontend("a"), backend("x"), 9090);
    denied_by_admin.tier = Some(Tier::Admin);
    denied_by_admin.cluster_policy = Some(ClusterPolicyRule {
        name: "tenants-apart".into(),
        priority: 10,
        rule: 1,
        rule_name: Some("deny-other-tenants".into()),
    });
    let mut denied_by_baseline = ingress(backend("x"), frontend("a"), 9090);
    denied_by_baseline.tier = Some(Tier::Baseline);
    let suggestions = offline(&[denied_by_admin, denied_by_baseline]);
    assert!(suggestions.suggestions.is_empty(), "{suggestions:#?}");
    let kinds: Vec<IssueKind> = suggestions.issues.iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        [
            IssueKind::DeniedByAdminTier,
            IssueKind::DeniedByBaselineTier
        ]
    );
    assert!(
        suggestions.issues[0]
            .message
            .contains("ClusterNetworkPolicy tenants-apart egress[1] (Admin tier, priority 10)"),
        "{}",
        suggestions.issues[0].message
    );
    assert!(
        suggestions.issues[0]
            .message
            .contains("no NetworkPolicy can allow it")
    );
    // The same flow without a tier (a NetworkPolicy's default deny) is suggested as before.
    assert_eq!(
        offline(&[egress(frontend("a"), backend("x"), 9090)])
            .suggestions
            .len(),
        1
    );
}

#[test]
fn with_a_snapshot_the_tier_that_denies_the_flow_today_decides() {
    use crate::policy::cluster::api::ClusterNetworkPolicy;
    let mut snapshot = Snapshot::new();
    snapshot.upsert_namespace(Namespace::new("shop", Labels::new()));
    for (pod, ip) in [(frontend("a"), "10.0.0.1"), (backend("x"), "10.0.0.2")] {
        let mut model = Pod::running(
            pod.key.clone(),
            pod.labels.clone(),
            "n1",
            [ip.parse().unwrap()],
        );
        model.owner = pod.owner.clone();
        snapshot.upsert_pod(model);
    }
    let admin: ClusterNetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "no-backend"},
        "spec": {"tier": "Admin", "priority": 3, "subject": {"namespaces": {}},
                 "egress": [{"name": "backend", "action": "Deny",
                             "to": [{"pods": {"podSelector": {"matchLabels": {"app": "backend"}}}}]}]}
    }))
    .unwrap();
    snapshot.upsert_cluster_network_policy(&admin).unwrap();
    // The line says nothing of a tier (an older agent); the snapshot knows better.
    let flows = [egress(frontend("a"), backend("x"), 9090)];
    let options = Options {
        snapshot: Some(&snapshot),
        ..Options::default()
    };
    let suggestions = suggest(&flows, &options);
    assert!(suggestions.suggestions.is_empty());
    assert_eq!(suggestions.issues[0].kind, IssueKind::DeniedByAdminTier);
    assert!(
        suggestions.issues[0].message.contains(
            "ClusterNetworkPolicy no-backend egress[0] \"backend\" (Admin tier, priority 3)"
        ),
        "{}",
        suggestions.issues[0].message
    );
    // Once the Admin policy is gone, the flow is allowed (not isolated): nothing to suggest.
    snapshot.remove_cluster_policy("no-backend");
    let options = Options {
        snapshot: Some(&snapshot),
        ..Options::default()
    };
    let suggestions = suggest(&flows, &options);
    assert!(suggestions.issues.is_empty() && suggestions.suggestions.is_empty());
    assert_eq!(suggestions.no_longer_denied, 1);
}
