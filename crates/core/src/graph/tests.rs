//! Tests of the graph on hand-made flow lines: both ends of a connection are one flow, the
//! edges are exactly the distinct flows between workloads whatever the lines' order, the
//! groups, the idle workloads, the preview, and what each renderer writes for each kind of
//! edge. The CLI's output on `deploy/examples` is checked against golden files and Graphviz by
//! `tests/graph.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

use super::*;
use crate::flow_line::{AllowedBy, ClusterPolicyRule, FlowLine, Peer, PodInfo};
use crate::hints::WorkloadFlow;
use crate::model::{Direction, Labels, Namespace, Owner, Pod, Snapshot, Tier};
use kube_nftpol_test_support::cluster::labels;

/// A pod of Deployment `app` in `namespace`, as flow lines name it, and its address.
fn pod(namespace: &str, app: &str, instance: &str) -> (PodInfo, IpAddr) {
    let info = PodInfo {
        namespace: namespace.into(),
        name: format!("{app}-5c8b6-{instance}"),
        labels: labels(&[("app", app), ("pod-template-hash", "5c8b6")]),
        owner: Some(Owner {
            kind: "ReplicaSet".into(),
            name: format!("{app}-5c8b6"),
        }),
        unknown: false,
    };
    // A stable address per pod, from its name.
    let n = info
        .name
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    let ns = namespace.len() as u8;
    (info, IpAddr::from([10, ns, 0, n]))
}

fn line(
    action: Action,
    direction: Direction,
    (pod, pod_ip): (PodInfo, IpAddr),
    peer: Result<(PodInfo, IpAddr), &str>,
    port: u16,
) -> FlowLine {
    let (peer, peer_ip) = match peer {
        Ok((info, ip)) => (Peer::Pod(info), ip),
        Err(ip) => {
            let ip: IpAddr = ip.parse().unwrap();
            (Peer::External { ip }, ip)
        }
    };
    let (source, destination) = match direction {
        Direction::Egress => (pod_ip, peer_ip),
        Direction::Ingress => (peer_ip, pod_ip),
    };
    FlowLine {
        ts: "2026-12-06T23:03:43.585Z".into(),
        action,
        direction,
        pod,
        peer,
        protocol: IpProtocol::Tcp,
        port: Some(port),
        source_port: Some(40000),
        source: Some(source),
        destination: Some(destination),
        policies: if action == Action::Allow {
            Vec::new()
        } else {
            vec!["shop/default-deny".into()]
        },
        allowed_by: None,
        tier: None,
        cluster_policy: None,
        count: 1,
        first_ts: None,
        last_ts: None,
    }
}

/// A pod's end of a line: the pod and its address.
type End = (PodInfo, IpAddr);

fn egress(action: Action, pod: End, peer: Result<End, &str>, port: u16) -> FlowLine {
    line(action, Direction::Egress, pod, peer, port)
}

fn ingress(action: Action, pod: End, peer: Result<End, &str>, port: u16) -> FlowLine {
    line(action, Direction::Ingress, pod, peer, port)
}

fn web(i: &str) -> (PodInfo, IpAddr) {
    pod("shop", "web", i)
}

fn api(i: &str) -> (PodInfo, IpAddr) {
    pod("shop", "api", i)
}

fn db(i: &str) -> (PodInfo, IpAddr) {
    pod("data", "db", i)
}

/// web -> api:8080 from two pods (one logged at both ends), api -> db:5432 denied at db's
/// ingress after api's egress allowed it, api -> an external address audited.
fn lines() -> Vec<FlowLine> {
    let mut allowed_by_rule = ingress(Action::Allow, api("a"), Ok(web("a")), 8080);
    allowed_by_rule.allowed_by = Some(AllowedBy {
        policy: "shop/api-ingress".into(),
        rule: 0,
    });
    allowed_by_rule.policies = vec!["shop/api-ingress".into()];
    allowed_by_rule.count = 3;
    vec![
        egress(Action::Allow, web("a"), Ok(api("a")), 8080),
        allowed_by_rule,
        egress(Action::Allow, web("b"), Ok(api("a")), 8080),
        egress(Action::Allow, api("a"), Ok(db("a")), 5432),
        ingress(Action::Deny, db("a"), Ok(api("a")), 5432),
        egress(Action::Audit, api("a"), Err("203.0.113.7"), 443),
    ]
}

fn edge(graph: &Graph, port: u16) -> &Edge {
    graph.edges.iter().find(|e| e.port == Some(port)).unwrap()
}

#[test]
fn both_ends_of_a_connection_are_one_flow_and_the_worst_verdict_wins() {
    let graph = build(&lines(), None);
    let to_api = edge(&graph, 8080);
    assert_eq!(to_api.flows, 2, "{to_api:#?}");
    assert_eq!(to_api.verdict, Action::Allow);
    // web-a -> api-a: 1 line at the sender, a summary of 3 at the receiver: 3 connections.
    assert_eq!(to_api.connections, 4);
    assert_eq!(
        to_api.pods[0].sides,
        [
            "egress: not isolated",
            "ingress: allowed by shop/api-ingress ingress[0]"
        ]
    );
    let to_db = edge(&graph, 5432);
    assert_eq!((to_db.flows, to_db.verdict), (1, Action::Deny));
    assert_eq!(to_db.verdicts, BTreeMap::from([(Action::Deny, 1)]));
    assert_eq!(
        to_db.pods[0].sides,
        [
            "egress: not isolated",
            "ingress: denied (policies: shop/default-deny)"
        ]
    );
    assert_eq!(edge(&graph, 443).verdict, Action::Audit);
}

#[test]
fn a_side_decided_by_a_cluster_network_policy_names_its_tier_and_rule() {
    let mut denied = egress(Action::Deny, web("a"), Err("169.254.169.254"), 80);
    denied.policies.clear();
    denied.tier = Some(Tier::Admin);
    denied.cluster_policy = Some(ClusterPolicyRule {
        name: "no-cloud-metadata".into(),
        priority: 5,
        rule: 1,
        rule_name: Some("imds".into()),
    });
    let mut accepted = ingress(Action::Allow, api("a"), Ok(web("a")), 8080);
    accepted.tier = Some(Tier::Baseline);
    accepted.cluster_policy = Some(ClusterPolicyRule {
        name: "tenants".into(),
        priority: 10,
        rule: 0,
        rule_name: None,
    });
    let graph = build(&[denied, accepted], None);
    assert_eq!(
        edge(&graph, 80).pods[0].sides,
        ["egress: denied by Admin ClusterNetworkPolicy no-cloud-metadata egress[1]"]
    );
    assert_eq!(
        edge(&graph, 8080).pods[0].sides,
        ["ingress: allowed by Baseline ClusterNetworkPolicy tenants ingress[0]"]
    );
}

#[test]
fn edges_are_the_flows_between_workloads_that_suggest_exclude_names() {
    let lines = lines();
    let graph = build(&lines, None);
    let ids: BTreeSet<String> = lines.iter().map(|l| WorkloadFlow::of(l).id()).collect();
    let edges: BTreeSet<String> = graph.edges.iter().map(|e| e.id.clone()).collect();
    assert_eq!(edges, ids);
    assert_eq!(graph.edges.len(), 3);
    for edge in &graph.edges {
        assert!(graph.nodes.iter().any(|n| n.id == edge.source), "{edge:?}");
        assert!(
            graph.nodes.iter().any(|n| n.id == edge.destination),
            "{edge:?}"
        );
        assert_eq!(edge.flows, edge.pods.len());
    }
    assert_eq!(
        graph.edge(&edge(&graph, 8080).id).map(|e| e.text.as_str()),
        Some("Deployment shop/web -> Deployment shop/api tcp/8080")
    );
}

/// A small pseudo-random generator, so the test needs no crate and always sees the same lines.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

#[test]
fn many_random_lines_give_one_edge_per_distinct_flow_in_any_order() {
    let mut rng = Lcg(19);
    let apps = ["web", "api", "db", "cache"];
    let mut lines = Vec::new();
    for _ in 0..400 {
        let end = |rng: &mut Lcg| {
            let ns = ["shop", "data"][rng.next(2)];
            pod(ns, apps[rng.next(apps.len())], ["a", "b", "c"][rng.next(3)])
        };
        let peer = if rng.next(5) == 0 {
            Err(["203.0.113.1", "2001:db8::1"][rng.next(2)])
        } else {
            Ok(end(&mut rng))
        };
        let mut line = line(
            [Action::Allow, Action::Deny, Action::Audit][rng.next(3)],
            [Direction::Egress, Direction::Ingress][rng.next(2)],
            end(&mut rng),
            peer,
            [53, 80, 443][rng.next(3)],
        );
        line.count = rng.next(4) as u64 + 1;
        lines.push(line);
    }
    let graph = build(&lines, None);
    let flows: BTreeSet<WorkloadFlow> = lines.iter().map(WorkloadFlow::of).collect();
    assert_eq!(graph.edges.len(), flows.len());
    for (edge, flow) in graph.edges.iter().zip(&flows) {
        assert_eq!(edge.id, flow.id());
        let pairs: BTreeSet<(String, String)> = lines
            .iter()
            .filter(|l| WorkloadFlow::of(l) == *flow)
            .map(|l| {
                let (pod, peer) = (
                    format!("{}/{}", l.pod.namespace, l.pod.name),
                    l.peer.to_string(),
                );
                match l.direction {
                    Direction::Egress => (pod, peer),
                    Direction::Ingress => (peer, pod),
                }
            })
            .collect();
        assert_eq!(edge.flows, pairs.len(), "{}", edge.text);
    }
    let mut reversed = lines.clone();
    reversed.reverse();
    let other = build(&reversed, None);
    assert_eq!(to_dot(&graph), to_dot(&other));
    assert_eq!(to_mermaid(&graph), to_mermaid(&other));
    assert_eq!(to_json(&graph).unwrap(), to_json(&other).unwrap());
}

#[test]
fn namespaces_are_groups_by_name_and_addresses_come_last() {
    let graph = build(&lines(), None);
    let groups: Vec<(GroupKind, &str, bool)> = graph
        .groups
        .iter()
        .map(|g| (g.kind, g.name.as_str(), g.observed))
        .collect();
    // shop has lines of observe mode (allowed ones), so it is observed; data only a denial.
    assert_eq!(
        groups,
        [
            (GroupKind::Namespace, "data", false),
            (GroupKind::Namespace, "shop", true),
            (GroupKind::External, "external", false),
        ]
    );
    let names: Vec<(&str, &str)> = graph
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.kind.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("db", "Deployment"),
            ("api", "Deployment"),
            ("web", "Deployment"),
            ("203.0.113.7", "")
        ]
    );
    // Identifiers are the same whatever else the graph holds.
    let alone = build(&lines()[..1], None);
    assert_eq!(alone.nodes[0].id, graph.nodes[1].id);
}

/// shop observed with web, api and an idle worker; data not observed, with db.
fn cluster() -> Snapshot {
    let mut snapshot = Snapshot::new();
    let mut shop = Namespace::new("shop", Labels::new());
    shop.observe = true;
    snapshot.upsert_namespace(shop);
    for (info, ip) in [
        web("a"),
        web("b"),
        api("a"),
        pod("shop", "worker", "a"),
        db("a"),
    ] {
        let mut pod = Pod::running(
            crate::model::ObjectKey::new(info.namespace, info.name),
            info.labels,
            "node-1",
            [ip],
        );
        pod.owner = info.owner;
        snapshot.upsert_pod(pod);
    }
    snapshot
}

#[test]
fn observed_workloads_without_flows_are_idle_nodes() {
    let snapshot = cluster();
    let graph = build(&lines(), Some(&snapshot));
    let worker = graph.nodes.iter().find(|n| n.idle).unwrap();
    assert_eq!(worker.name, "worker");
    assert_eq!(graph.nodes.iter().filter(|n| n.idle).count(), 1);
    assert!(to_dot(&graph).contains("style=\"rounded,dashed\""));
    let mermaid = to_mermaid(&graph);
    let worker = &graph.nodes.iter().find(|n| n.idle).unwrap().id;
    assert!(
        mermaid.contains(&format!("class {worker} idle")),
        "{mermaid}"
    );
}

fn policy(value: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(value).unwrap()
}

#[test]
fn a_preview_marks_what_a_candidate_would_deny_allow_and_keep() {
    let today = cluster();
    let mut candidate = today.clone();
    // api may only be reached from web, on 8080; db accepts api on 5432; and api's egress is
    // isolated to db only, so the audited external flow would be denied.
    for value in [
        json!({"metadata": {"name": "api-ingress", "namespace": "shop"},
               "spec": {"podSelector": {"matchLabels": {"app": "api"}},
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                     "ports": [{"port": 8080}]}]}}),
        json!({"metadata": {"name": "api-egress", "namespace": "shop"},
               "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Egress"],
                        "egress": [{"to": [{"namespaceSelector": {}}]}]}}),
        json!({"metadata": {"name": "deny", "namespace": "data"},
               "spec": {"podSelector": {}}}),
    ] {
        candidate.upsert_network_policy(&policy(value)).unwrap();
    }
    // Today db denies api (the line says so); the cluster has no policy, so evaluate allows
    // it: today is the cluster's word.
    let mut graph = build(&lines(), Some(&today));
    graph.preview(&today, &candidate);
    let changes: Vec<(Option<u16>, Option<Change>)> =
        graph.edges.iter().map(|e| (e.port, e.preview)).collect();
    assert_eq!(
        changes,
        [
            (Some(5432), Some(Change::NewlyDenied)),
            (Some(443), Some(Change::NewlyDenied)),
            (Some(8080), Some(Change::Kept)),
        ]
    );
    assert_eq!(
        graph.preview,
        Some(PreviewSummary {
            newly_denied: 2,
            kept: 1,
            ..PreviewSummary::default()
        })
    );
    // And back: the candidate as today, the empty cluster as the candidate.
    graph.preview(&candidate, &today);
    assert_eq!(edge(&graph, 5432).preview, Some(Change::NewlyAllowed));
    assert_eq!(edge(&graph, 8080).preview, Some(Change::Kept));
    let dot = to_dot(&graph);
    assert!(dot.contains("would be allowed\""), "{dot}");
    assert!(to_mermaid(&graph).contains("==>|"));
}

#[test]
fn a_flow_without_a_port_or_an_address_is_not_previewed() {
    let mut icmp = egress(Action::Deny, web("a"), Err("203.0.113.9"), 0);
    icmp.protocol = IpProtocol::Icmp;
    icmp.port = None;
    let mut unplaced = egress(Action::Allow, web("a"), Ok(api("z")), 9000);
    unplaced.destination = None;
    let lines = [icmp, unplaced];
    let today = cluster_of(&lines);
    let mut graph = build(&lines, None);
    graph.preview(&today, &today);
    for edge in &graph.edges {
        assert_eq!(edge.preview, Some(Change::Unknown), "{}", edge.text);
        assert!(style::label(edge).contains(&"not previewed".to_owned()));
    }
    assert_eq!(edge(&graph, 9000).pods[0].destination.ip, None);
    let icmp = graph.edges.iter().find(|e| e.port.is_none()).unwrap();
    assert_eq!(icmp.protocol, IpProtocol::Icmp);
    assert_eq!(style::label(icmp)[0], "icmp (1 flow)");
}

#[test]
fn the_cluster_of_the_lines_has_their_pods_labels_and_addresses() {
    let lines = lines();
    let snapshot = cluster_of(&lines);
    let keys: Vec<String> = snapshot.pods().map(|p| p.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "data/db-5c8b6-a",
            "shop/api-5c8b6-a",
            "shop/web-5c8b6-a",
            "shop/web-5c8b6-b"
        ]
    );
    let pod = snapshot
        .pods()
        .find(|p| p.key.name == "api-5c8b6-a")
        .unwrap();
    assert_eq!(pod.ips, [api("a").1]);
    assert_eq!(pod.labels.get("app").map(String::as_str), Some("api"));
    assert!(snapshot.policies().next().is_none());
    // Without a policy everything is allowed: a candidate's preview shows only its own effect.
    let mut graph = build(&lines, None);
    graph.preview(&snapshot, &snapshot);
    assert!(graph.edges.iter().all(|e| e.preview == Some(Change::Kept)));
}

#[test]
fn each_verdict_has_its_own_line_in_every_format() {
    let graph = build(&lines(), None);
    let dot = to_dot(&graph);
    let statement = |port: u16| {
        let id = &edge(&graph, port).id;
        dot.lines()
            .find(|l| l.contains(&format!("flow-{id}")))
            .unwrap()
            .to_owned()
    };
    assert!(statement(8080).contains(&format!("color=\"{}\"", style::ALLOW)));
    assert!(!statement(8080).contains("arrowhead"));
    assert!(statement(5432).contains("arrowhead=tee"));
    assert!(statement(5432).contains(&format!("color=\"{}\"", style::DENY)));
    assert!(statement(443).contains("style=dashed"));
    assert!(statement(8080).contains("label=\"tcp/8080 (2 flows)\""));
    let mermaid = to_mermaid(&graph);
    for arrow in [" -->|", " --x|", " -.->|"] {
        assert_eq!(mermaid.matches(arrow).count(), 1, "{arrow} in {mermaid}");
    }
    assert_eq!(mermaid.matches("linkStyle ").count(), 3);
    let json: serde_json::Value = serde_json::from_str(&to_json(&graph).unwrap()).unwrap();
    assert_eq!(json["edges"].as_array().unwrap().len(), 3);
    assert_eq!(json["edges"][0]["verdict"], "deny");
    assert!(json.get("preview").is_none());
}
