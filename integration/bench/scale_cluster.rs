//! The cluster-scale benchmark cluster, shared by `benches/compile.rs` (the compiler alone) and
//! the dataplane benchmark (`integration/bench/dataplane.rs`, the agent on a simulated node):
//! 10,000 pods in 500 namespaces and 1,000 NetworkPolicies, as the Kubernetes objects a
//! manifest directory or the API would hold.
//!
//! Namespace `ns-N` (label `team: team-<N mod 50>`) has pods `app-<I mod 5>-<I>` for I in
//! 0..20, labelled `app` and `pod-template-hash`, with container ports `http` 8080 and
//! `metrics` 9090, spread over nodes in order: pod number K runs on `node-<K / 110>` (110 is
//! Kubernetes' default pod limit per node) with IP `10.244.0.2 + K`, so the cluster spans
//! 10.244.0.2 to 10.244.39.17. Each namespace has two policies: `default-deny` (both
//! directions, egress to DNS in `ns-0` only) and `allow-app` (pods app-0..2 take `http` and
//! 9000-9100 from app-3 and from the next team's namespaces, anything from 10.0.0.0/8 but
//! 10.244.0.0/16, and reach any pod of their namespace on `http`).
//!
//! It owns only the objects; converting or loading them and what runs them belong to the
//! benchmarks.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// Namespaces in the cluster.
pub const NAMESPACES: usize = 500;
/// Pods per namespace.
pub const PODS_PER_NAMESPACE: usize = 20;
/// Pods per node (the nodes fill up in pod order).
pub const PODS_PER_NODE: usize = 110;

/// The IP of pod number `index` (0-based, in creation order).
pub fn pod_ip(index: usize) -> Ipv4Addr {
    let offset = u32::try_from(index).unwrap_or(u32::MAX).saturating_add(2);
    Ipv4Addr::from(0x0af4_0000u32.saturating_add(offset))
}

/// The node pod number `index` runs on.
pub fn node_of(index: usize) -> String {
    format!("node-{}", index / PODS_PER_NODE)
}

/// Every Namespace, Pod and NetworkPolicy of the cluster, one at a time (a consumer that
/// converts them as they come never holds all 11,500 JSON objects at once).
pub fn objects() -> impl Iterator<Item = Value> {
    (0..NAMESPACES).flat_map(|n| {
        let ns = format!("ns-{n}");
        let namespace = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"team": format!("team-{}", n % 50)}},
        });
        let pods = (0..PODS_PER_NAMESPACE).map({
            let ns = ns.clone();
            move |i| pod(&ns, i, n * PODS_PER_NAMESPACE + i)
        });
        std::iter::once(namespace)
            .chain(pods)
            .chain(policies(&ns, n))
    })
}

/// Pod `i` of namespace `ns`, the `index`th of the cluster.
fn pod(ns: &str, i: usize, index: usize) -> Value {
    let app = format!("app-{}", i % 5);
    let ip = pod_ip(index).to_string();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": format!("{app}-{i}"),
                     "labels": {"app": app, "pod-template-hash": format!("h{i}")}},
        "spec": {
            "nodeName": node_of(index),
            "containers": [{"name": "app", "image": "app", "ports": [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
            ]}],
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

fn policies(ns: &str, n: usize) -> [Value; 2] {
    let deny = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny", "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                 "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns-0"}}}],
                             "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]}
    });
    let allow = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-app", "namespace": ns},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["app-0", "app-1", "app-2"]}]},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "app-3"}}},
                          {"namespaceSelector": {"matchLabels": {"team": format!("team-{}", (n + 1) % 50)}}}],
                 "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]},
                {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}]}
            ],
            "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}]
        }
    });
    [deny, allow]
}
