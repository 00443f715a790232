//! The cluster the benchmarks run at scale, as plain data: by default 10,000 pods in 500
//! namespaces and 1,000 NetworkPolicies. Shared by `benches/compile.rs` (which builds a model
//! snapshot from it) and the node simulator's programming benchmark
//! (`integration/bench/programming.rs`, which writes it into a real API server).
//!
//! Namespace `ns-N` (label `team: team-(N % 50)`) has pods `app-A-I` (`app: app-0..4`, named
//! ports `http` 8080 and `metrics` 9090) placed in order on nodes `node-0`, `node-1`, ...,
//! [`PODS_PER_NODE`] each, and two policies: a default deny (ingress and egress) with a DNS
//! egress rule to `ns-0`, and an allow policy with pod, namespace and ipBlock peers, numbered,
//! ranged and named ports. In every fifth namespace the allow policy also admits pods labelled
//! [`MONITORING_LABEL`] in namespace [`MONITORING_NAMESPACE`] (a scraper reaching 100
//! namespaces): one pod relabelled there changes the peers of 100 policies.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// Namespaces of the full-size cluster.
pub const NAMESPACES: usize = 500;
/// Pods in every namespace.
pub const PODS_PER_NAMESPACE: usize = 20;
/// Pods on each node (Kubernetes' default pod limit per node).
pub const PODS_PER_NODE: usize = 110;
/// The named container ports of every pod.
pub const POD_PORTS: [(&str, u16); 2] = [("http", 8080), ("metrics", 9090)];
/// The namespace whose labelled pods every fifth allow policy admits.
pub const MONITORING_NAMESPACE: &str = "monitoring";
/// The pod label those policies select in [`MONITORING_NAMESPACE`].
pub const MONITORING_LABEL: (&str, &str) = ("role", "monitoring");

/// One generated pod.
#[derive(Debug, Clone)]
pub struct ScalePod {
    /// `ns-N`.
    pub namespace: String,
    /// `app-A-I`.
    pub name: String,
    /// `app` and `pod-template-hash`.
    pub labels: BTreeMap<String, String>,
    /// `node-K`.
    pub node: String,
    /// Its one IPv4 address.
    pub ip: Ipv4Addr,
}

/// The cluster's size and address range.
#[derive(Debug, Clone, Copy)]
pub struct ScaleCluster {
    /// How many namespaces (20 pods and 2 policies each).
    pub namespaces: usize,
    /// The first pod's IP; the others follow it.
    pub first_ip: Ipv4Addr,
}

impl ScaleCluster {
    /// The full-size cluster, pods from `first_ip` on.
    pub fn full(first_ip: Ipv4Addr) -> Self {
        Self {
            namespaces: NAMESPACES,
            first_ip,
        }
    }

    /// The name of namespace `n`.
    pub fn namespace_name(n: usize) -> String {
        format!("ns-{n}")
    }

    /// The labels of namespace `n` (without the name label).
    pub fn namespace_labels(n: usize) -> BTreeMap<String, String> {
        BTreeMap::from([("team".to_owned(), format!("team-{}", n % 50))])
    }

    /// Every pod, namespace by namespace.
    pub fn pods(&self) -> impl Iterator<Item = ScalePod> + '_ {
        let first = u32::from(self.first_ip);
        (0..self.namespaces).flat_map(move |n| {
            (0..PODS_PER_NAMESPACE).map(move |i| {
                let index = n * PODS_PER_NAMESPACE + i;
                let app = format!("app-{}", i % 5);
                ScalePod {
                    namespace: Self::namespace_name(n),
                    name: format!("{app}-{i}"),
                    labels: BTreeMap::from([
                        ("app".to_owned(), app),
                        ("pod-template-hash".to_owned(), format!("h{i}")),
                    ]),
                    node: format!("node-{}", index / PODS_PER_NODE),
                    ip: Ipv4Addr::from(first + index as u32),
                }
            })
        })
    }

    /// The two policies of namespace `n`, as Kubernetes NetworkPolicy JSON.
    pub fn policies(n: usize) -> [Value; 2] {
        let ns = Self::namespace_name(n);
        let deny = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": ns},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                     "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns-0"}}}],
                                 "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]}
        });
        let mut ingress = vec![
            json!({"from": [{"podSelector": {"matchLabels": {"app": "app-3"}}},
                            {"namespaceSelector": {"matchLabels": {"team": format!("team-{}", (n + 1) % 50)}}}],
                   "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]}),
            json!({"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}]}),
        ];
        if n.is_multiple_of(5) {
            let (key, value) = MONITORING_LABEL;
            ingress.push(json!({
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}},
                          "podSelector": {"matchLabels": {key: value}}}],
                "ports": [{"port": "http"}]
            }));
        }
        let allow = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "allow-app", "namespace": ns},
            "spec": {
                "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["app-0", "app-1", "app-2"]}]},
                "ingress": ingress,
                "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}]
            }
        });
        [deny, allow]
    }
}
