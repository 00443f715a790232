//! The one cluster the benchmarks run at scale, as Kubernetes objects: by default 10,000 pods
//! in 500 namespaces and 1,000 NetworkPolicies. The compiler benchmark (`benches/compile.rs`)
//! and the dataplane benchmark load [`ScaleCluster::plain`]; the programming benchmark writes
//! [`ScaleCluster::with_monitoring`] into a real API server.
//!
//! Namespace `ns-N` (label `team: team-(N % 50)`) has pods `app-A-I` for I in 0..20
//! (`app: app-(I % 5)`, `pod-template-hash: hI`, named ports `http` 8080 and `metrics` 9090)
//! placed in order on nodes `node-0`, `node-1`, ..., [`PODS_PER_NODE`] each, with IPs counting
//! up from `first_ip`, and two policies: `default-deny` (ingress and egress) with a DNS egress
//! rule to `ns-0`, and `allow-app` (pods app-0..2 take `http` and 9000-9100 from app-3 and from
//! the next team's namespaces, anything from 10.0.0.0/8 but 10.244.0.0/16, and reach any pod
//! of their namespace on `http`). With `monitoring`, every fifth `allow-app` also admits pods
//! labelled [`MONITORING_LABEL`] in namespace [`MONITORING_NAMESPACE`] (a scraper reaching 100
//! namespaces): one pod relabelled there changes the peers of 100 policies.
//!
//! [`ScaleCluster::cluster_policies`] adds ClusterNetworkPolicies in both tiers for the
//! benchmarks of the tiers: a tenth of each tier applies to every namespace (guardrails), the
//! rest to one team's namespaces each.
//!
//! It owns only the objects; converting or loading them and what runs them belong to the
//! benchmarks.

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
/// The namespace whose labelled pods every fifth allow policy admits (with `monitoring`).
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

/// The cluster's size, address range and extra rules.
#[derive(Debug, Clone, Copy)]
pub struct ScaleCluster {
    /// How many namespaces (20 pods and 2 policies each).
    pub namespaces: usize,
    /// The first pod's IP; the others follow it.
    pub first_ip: Ipv4Addr,
    /// Whether every fifth allow policy admits the monitoring scraper.
    pub monitoring: bool,
}

impl ScaleCluster {
    /// The full-size cluster of the compiler and dataplane benchmarks: pods from 10.244.0.2
    /// (to 10.244.39.17), no monitoring rules.
    pub fn plain() -> Self {
        Self {
            namespaces: NAMESPACES,
            first_ip: Ipv4Addr::new(10, 244, 0, 2),
            monitoring: false,
        }
    }

    /// The programming benchmark's cluster: `namespaces` namespaces, pods from `first_ip`,
    /// with the monitoring rules.
    pub fn with_monitoring(namespaces: usize, first_ip: Ipv4Addr) -> Self {
        Self {
            namespaces,
            first_ip,
            monitoring: true,
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
    pub fn pods(self) -> impl Iterator<Item = ScalePod> {
        (0..self.namespaces).flat_map(move |n| self.pods_of(n))
    }

    /// The pods of namespace `n`.
    fn pods_of(self, n: usize) -> impl Iterator<Item = ScalePod> {
        let first = u32::from(self.first_ip);
        (0..PODS_PER_NAMESPACE).map(move |i| {
            let index = n * PODS_PER_NAMESPACE + i;
            let app = format!("app-{}", i % 5);
            let offset = u32::try_from(index).unwrap_or(u32::MAX);
            ScalePod {
                namespace: Self::namespace_name(n),
                name: format!("{app}-{i}"),
                labels: BTreeMap::from([
                    ("app".to_owned(), app),
                    ("pod-template-hash".to_owned(), format!("h{i}")),
                ]),
                node: format!("node-{}", index / PODS_PER_NODE),
                ip: Ipv4Addr::from(first.saturating_add(offset)),
            }
        })
    }

    /// Every Namespace, Pod and NetworkPolicy of the cluster as Kubernetes JSON, one at a time
    /// (a consumer that converts them as they come never holds all 11,500 objects at once).
    pub fn objects(self) -> impl Iterator<Item = Value> {
        (0..self.namespaces).flat_map(move |n| {
            let namespace = json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": Self::namespace_name(n), "labels": Self::namespace_labels(n)},
            });
            std::iter::once(namespace)
                .chain(self.pods_of(n).map(|pod| pod.object()))
                .chain(self.policies(n))
        })
    }

    /// The two policies of namespace `n`, as Kubernetes NetworkPolicy JSON.
    pub fn policies(self, n: usize) -> [Value; 2] {
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
        if self.monitoring && n.is_multiple_of(5) {
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

impl ScaleCluster {
    /// `per_tier` ClusterNetworkPolicies in each tier (`admin-I`, `baseline-I`, priorities
    /// 10 + I), as Kubernetes JSON. In each tier, policies with `I % 10 == 0` apply to every
    /// namespace, with an egress Deny to one documentation address (192.0.2.I/32, which no
    /// traffic uses) and an ingress Pass (Admin) or Deny (Baseline) from pods labelled
    /// `role: intruder` (which no pod is); the others apply to the namespaces of team
    /// `team-(I % 50)`: ingress Accept from the next team's namespaces on the `http` port, and
    /// an egress Deny to 198.51.100.I/32. So every pod meets the global policies of both tiers
    /// and a few of its team's, and none of their rules matches the benchmarks' own traffic.
    pub fn cluster_policies(per_tier: usize) -> Vec<Value> {
        let mut out = Vec::new();
        for (tier, prefix) in [("Admin", "admin"), ("Baseline", "baseline")] {
            for i in 0..per_tier {
                let spec = if i % 10 == 0 {
                    json!({
                        "tier": tier, "priority": 10 + i, "subject": {"namespaces": {}},
                        "ingress": [{"name": "intruders", "action": if tier == "Admin" { "Pass" } else { "Deny" },
                                     "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "intruder"}}}}]}],
                        "egress": [{"name": "documentation-address", "action": "Deny",
                                    "to": [{"networks": [format!("192.0.2.{}/32", i % 250)]}]}],
                    })
                } else {
                    json!({
                        "tier": tier, "priority": 10 + i,
                        "subject": {"namespaces": {"matchLabels": {"team": format!("team-{}", i % 50)}}},
                        "ingress": [{"name": "next-team", "action": "Accept",
                                     "from": [{"namespaces": {"matchLabels": {"team": format!("team-{}", (i + 1) % 50)}}}],
                                     "protocols": [{"destinationNamedPort": "http"}]}],
                        "egress": [{"name": "test-net", "action": "Deny",
                                    "to": [{"networks": [format!("198.51.100.{}/32", i % 250)]}]}],
                    })
                };
                out.push(json!({
                    "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
                    "metadata": {"name": format!("{prefix}-{i}")}, "spec": spec,
                }));
            }
        }
        out
    }
}

impl ScalePod {
    /// The pod as a running Kubernetes Pod with its status, as a kubelet reports it.
    pub fn object(&self) -> Value {
        let ports: Vec<Value> = POD_PORTS
            .iter()
            .map(|(name, port)| json!({"name": name, "containerPort": port, "protocol": "TCP"}))
            .collect();
        let ip = self.ip.to_string();
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": self.namespace, "name": self.name, "labels": self.labels},
            "spec": {
                "nodeName": self.node,
                "containers": [{"name": "app", "image": "app", "ports": ports}],
            },
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
        })
    }
}
