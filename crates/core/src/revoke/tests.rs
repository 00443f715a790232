use std::collections::HashSet;

use serde_json::json;

use super::*;
use crate::model::{Namespace, Pod};
use kube_nftpol_test_support::cluster::labels;

const NODE: &str = "n1";

fn at(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A connection without NAT: the reply comes straight back.
fn direct(client: &str, server: &str) -> Connection {
    via(client, server, server)
}

/// A connection to `asked` (a Service) that DNAT sent to `server`.
fn via(client: &str, asked: &str, server: &str) -> Connection {
    Connection {
        protocol: Protocol::Tcp,
        original: Tuple {
            source: at(client),
            destination: at(asked),
        },
        reply: Tuple {
            source: at(server),
            destination: at(client),
        },
        zone: 0,
    }
}

/// `web` (10.0.1.1 on n1) and `db` (10.0.1.2 on n1) in shop, `batch` (10.0.2.1 on n2) in
/// jobs; db accepts web on 5432 and nothing else.
fn cluster() -> Snapshot {
    let mut s = Snapshot::new();
    for ns in ["shop", "jobs"] {
        s.upsert_namespace(Namespace::new(ns, labels(&[])));
    }
    for (ns, name, node, ip) in [
        ("shop", "web", NODE, "10.0.1.1"),
        ("shop", "db", NODE, "10.0.1.2"),
        ("jobs", "batch", "n2", "10.0.2.1"),
    ] {
        s.upsert_pod(Pod::running(
            ObjectKey::new(ns, name),
            labels(&[("app", name)]),
            node,
            [ip.parse().unwrap()],
        ));
    }
    add_policy(
        &mut s,
        json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{
                    "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                    "ports": [{"protocol": "TCP", "port": 5432}]
                }]
            }
        }),
    );
    s
}

fn add_policy(s: &mut Snapshot, value: serde_json::Value) {
    s.upsert_network_policy(&serde_json::from_value(value).unwrap())
        .unwrap();
}

fn judged(snapshot: &Snapshot, connections: &[Connection]) -> Vec<(Direction, String)> {
    let local = HashSet::from(["192.168.0.10".parse().unwrap()]);
    let node = Node {
        name: NODE,
        local_addresses: &local,
        audit_all: false,
    };
    revocations(snapshot, &node, connections)
        .into_iter()
        .map(|r| (r.direction, r.pod.to_string()))
        .collect()
}

#[test]
fn an_allowed_connection_is_left_alone_and_a_denied_one_is_ended_on_the_denying_side() {
    let s = cluster();
    assert_eq!(judged(&s, &[direct("10.0.1.1:40000", "10.0.1.2:5432")]), []);
    assert_eq!(
        judged(&s, &[direct("10.0.1.1:40000", "10.0.1.2:22")]),
        [(Direction::Ingress, "shop/db".to_owned())]
    );
    // From a pod of another node: db's side is ours.
    assert_eq!(
        judged(&s, &[direct("10.0.2.1:40000", "10.0.1.2:5432")]),
        [(Direction::Ingress, "shop/db".to_owned())]
    );
    // Nothing isolates web: what it accepts stays.
    assert_eq!(judged(&s, &[direct("10.0.2.1:40000", "10.0.1.1:80")]), []);
}

#[test]
fn the_server_is_the_pod_behind_the_service_and_its_port() {
    let s = cluster();
    // Service 10.96.0.5:80 -> db:5432, allowed; the same Service port to db's 22 is not.
    assert_eq!(
        judged(
            &s,
            &[via("10.0.1.1:40000", "10.96.0.5:80", "10.0.1.2:5432")]
        ),
        []
    );
    assert_eq!(
        judged(
            &s,
            &[via("10.0.1.1:40000", "10.96.0.5:5432", "10.0.1.2:22")]
        ),
        [(Direction::Ingress, "shop/db".to_owned())]
    );
}

#[test]
fn only_sides_of_this_node_count() {
    let mut s = cluster();
    // batch (n2) isolated for egress, allowing nothing: n2's agent ends its connections.
    add_policy(
        &mut s,
        json!({
            "metadata": {"name": "no-egress", "namespace": "jobs"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]}
        }),
    );
    assert_eq!(judged(&s, &[direct("10.0.2.1:40000", "10.0.1.1:80")]), []);
}

#[test]
fn both_local_sides_denying_end_the_connection_once_per_side() {
    let mut s = cluster();
    add_policy(
        &mut s,
        json!({
            "metadata": {"name": "no-egress", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"]}
        }),
    );
    assert_eq!(
        judged(&s, &[direct("10.0.1.1:40000", "10.0.1.2:22")]),
        [
            (Direction::Egress, "shop/web".to_owned()),
            (Direction::Ingress, "shop/db".to_owned())
        ]
    );
    // Egress denied, ingress allowed: one.
    assert_eq!(
        judged(&s, &[direct("10.0.1.1:40000", "10.0.1.2:5432")]),
        [(Direction::Egress, "shop/web".to_owned())]
    );
}

#[test]
fn audited_namespaces_and_the_nodes_own_connections_are_never_ended() {
    let mut s = cluster();
    let mut shop = Namespace::new("shop", labels(&[]));
    shop.enforcement = Enforcement::Audit;
    s.upsert_namespace(shop);
    assert_eq!(judged(&s, &[direct("10.0.1.1:40000", "10.0.1.2:22")]), []);

    let s = cluster();
    // The kubelet's probe from the node's address.
    assert_eq!(
        judged(&s, &[direct("192.168.0.10:40000", "10.0.1.2:22")]),
        []
    );
    let local = HashSet::new();
    let all_audited = Node {
        name: NODE,
        local_addresses: &local,
        audit_all: true,
    };
    assert!(revocations(&s, &all_audited, &[direct("10.0.1.1:1", "10.0.1.2:22")]).is_empty());
}

#[test]
fn connections_of_one_flow_are_judged_once_and_each_ended() {
    let s = cluster();
    let connections: Vec<Connection> = (40000..40100)
        .map(|port| direct(&format!("10.0.1.1:{port}"), "10.0.1.2:22"))
        .chain([direct("10.0.1.1:50000", "10.0.1.2:5432")])
        .collect();
    let ended = revocations(
        &s,
        &Node {
            name: NODE,
            local_addresses: &HashSet::new(),
            audit_all: false,
        },
        &connections,
    );
    assert_eq!(ended.len(), 100);
    assert!(ended.iter().all(|r| r.connection.server().port() == 22));
    // In the order given.
    assert_eq!(ended[0].connection.client().port(), 40000);
    assert_eq!(ended[99].connection.client().port(), 40099);
}

#[test]
fn external_clients_are_judged_by_address() {
    let s = cluster();
    assert_eq!(
        judged(&s, &[direct("203.0.113.7:40000", "10.0.1.2:5432")]),
        [(Direction::Ingress, "shop/db".to_owned())]
    );
}

#[test]
fn the_revoked_headers_are_the_clients_packets_before_dnat_and_the_servers_as_they_come() {
    let c = via("10.0.1.1:40000", "10.96.0.5:80", "10.0.1.2:5432");
    let element = |source: &str, destination: &str, from: u16, to: u16| {
        SetElement::Connection(
            source.parse().unwrap(),
            destination.parse().unwrap(),
            Protocol::Tcp,
            from,
            to,
        )
    };
    assert_eq!(
        c.revoked_headers(),
        [
            // The client's packets: to the Service, the server's port after DNAT.
            element("10.0.1.1", "10.96.0.5", 40000, 5432),
            // The server's, in an entry the client's packet made.
            element("10.0.1.1", "10.96.0.5", 5432, 40000),
            // The server's, as they arrive.
            element("10.0.1.2", "10.0.1.1", 5432, 40000),
            // The client's, in an entry the server's packet made.
            element("10.0.1.2", "10.0.1.1", 40000, 5432),
        ]
    );
    assert_eq!(c.family(), Family::V4);
    assert_eq!(direct("[fd00::1]:1", "[fd00::2]:2").family(), Family::V6);
}
