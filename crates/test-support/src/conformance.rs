//! Loads ../shared/conformance/upstream.json (the upstream Kubernetes network policy e2e cases as
//! data) into snapshots and flows, for the evaluator tests here and the root suites.

use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube_nftpol_core::model::{
    ContainerPort, Labels, Namespace, ObjectKey, Pod, PodPhase, Protocol, Snapshot,
};
use kube_nftpol_core::policy::{Endpoint, Flow};
use serde::Deserialize;

/// The node every conformance pod is placed on unless a test spreads them.
pub const NODE: &str = "node-1";

#[derive(Deserialize)]
pub struct File {
    pub node_ip: String,
    pub count: usize,
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
pub struct Case {
    pub name: String,
    pub namespaces: std::collections::BTreeMap<String, Labels>,
    /// Namespace annotations, by namespace (the upstream data has none; the simulator's
    /// scenarios set `kube-nftpol.io/enforcement`).
    #[serde(default)]
    pub namespace_annotations: std::collections::BTreeMap<String, Labels>,
    pub pods: Vec<CasePod>,
    pub policies: Vec<serde_json::Value>,
    pub probes: Vec<Probe>,
}

#[derive(Deserialize)]
pub struct CasePod {
    pub ns: String,
    pub name: String,
    pub labels: Labels,
    pub ip: IpAddr,
    pub service_ip: IpAddr,
    pub ports: Vec<CasePort>,
}

#[derive(Deserialize)]
pub struct CasePort {
    pub name: String,
    pub port: u16,
    pub protocol: String,
}

#[derive(Deserialize, Clone)]
pub struct Probe {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub protocol: String,
    pub expect: bool,
}

/// Where the data lives: `shared/` sits beside the repository.
pub fn path() -> PathBuf {
    crate::repository_root().join("../shared/conformance/upstream.json")
}

pub fn load() -> File {
    let path = path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

impl Case {
    /// The case's cluster, with pod `i` placed on `node_of(i)`.
    pub fn snapshot_with(&self, node_of: impl Fn(usize) -> String) -> Snapshot {
        let mut snapshot = Snapshot::new();
        for (name, labels) in &self.namespaces {
            // Through the Kubernetes object, so annotations mean what they mean to the agent.
            let object: k8s_openapi::api::core::v1::Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {
                    "name": name,
                    "labels": labels,
                    "annotations": self.namespace_annotations.get(name),
                }}))
                .unwrap_or_else(|e| panic!("{}: namespace {name}: {e}", self.name));
            snapshot.upsert_namespace(Namespace::from_k8s(&object).expect("named"));
        }
        for (i, p) in self.pods.iter().enumerate() {
            snapshot.upsert_pod(Pod {
                key: ObjectKey::new(&p.ns, &p.name),
                labels: p.labels.clone(),
                node: Some(node_of(i)),
                ips: vec![p.ip],
                phase: PodPhase::Active,
                host_network: false,
                terminating: false,
                ports: p
                    .ports
                    .iter()
                    .map(|port| ContainerPort {
                        name: Some(port.name.clone()),
                        port: port.port,
                        protocol: Protocol::from_k8s(&port.protocol).expect("protocol"),
                    })
                    .collect(),
                owner: None,
            });
        }
        for policy in &self.policies {
            let policy: NetworkPolicy = serde_json::from_value(policy.clone())
                .unwrap_or_else(|e| panic!("{}: bad policy: {e}", self.name));
            snapshot
                .upsert_network_policy(&policy)
                .expect("policy has a name");
        }
        snapshot
    }

    /// The case's cluster with every pod on [`NODE`].
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_with(|_| NODE.to_owned())
    }
}

impl Probe {
    pub fn flow(&self) -> Flow {
        Flow {
            source: endpoint(&self.from),
            destination: endpoint(&self.to),
            protocol: Protocol::from_k8s(&self.protocol).expect("protocol"),
            port: self.port,
        }
    }
}

fn endpoint(text: &str) -> Endpoint {
    match text.strip_prefix("ip:") {
        Some(ip) => Endpoint::Ip(ip.parse().expect("probe ip")),
        None => {
            let (ns, name) = text.split_once('/').expect("ns/pod");
            Endpoint::Pod(ObjectKey::new(ns, name))
        }
    }
}
