//! Small builders for test clusters: pods and policies in a line each.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube_nftpol_core::model::{
    ContainerPort, Enforcement, Labels, Namespace, ObjectKey, Pod, Protocol, Snapshot,
};

/// Labels from `key=value` pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A running pod with IPs (`"10.0.0.1"`, `"fd00::1"`) and named ports (`"http:80/TCP"`).
pub fn pod(ns: &str, name: &str, pod_labels: &[(&str, &str)], node: &str, ips: &[&str]) -> Pod {
    Pod::running(
        ObjectKey::new(ns, name),
        labels(pod_labels),
        node,
        ips.iter().map(|ip| ip.parse().expect("ip")),
    )
}

/// Adds named container ports written as `name:port/PROTO`.
pub fn with_ports(mut pod: Pod, ports: &[&str]) -> Pod {
    for spec in ports {
        let (name, rest) = spec.split_once(':').expect("name:port/proto");
        let (port, protocol) = rest.split_once('/').expect("port/proto");
        pod.ports.push(ContainerPort {
            name: Some(name.to_owned()),
            port: port.parse().expect("port"),
            protocol: Protocol::from_k8s(protocol).expect("protocol"),
        });
    }
    pod.ports.sort();
    pod
}

/// A NetworkPolicy from JSON (as `kubectl get -o json` shows it).
pub fn policy(value: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(value).expect("NetworkPolicy JSON")
}

/// A snapshot from namespaces (name, labels), pods and policies.
pub fn snapshot(
    namespaces: &[(&str, &[(&str, &str)])],
    pods: Vec<Pod>,
    policies: Vec<serde_json::Value>,
) -> Snapshot {
    let mut snapshot = Snapshot::new();
    for (name, ns_labels) in namespaces {
        snapshot.upsert_namespace(Namespace::new(name, labels(ns_labels)));
    }
    for pod in pods {
        snapshot.upsert_pod(pod);
    }
    for value in policies {
        snapshot
            .upsert_network_policy(&policy(value))
            .expect("named policy");
    }
    snapshot
}

/// Puts namespace `observed` in observe mode and namespace `audited` in audit mode (the same
/// one when they are equal), and every other namespace of `snapshot` in neither.
pub fn set_namespace_modes(snapshot: &mut Snapshot, observed: &str, audited: &str) {
    let namespaces: Vec<_> = snapshot.namespaces().cloned().collect();
    for mut namespace in namespaces {
        namespace.observe = namespace.name == observed;
        if namespace.name == audited {
            namespace.enforcement = Enforcement::Audit;
        }
        snapshot.upsert_namespace(namespace);
    }
}
