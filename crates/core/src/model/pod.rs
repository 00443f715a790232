//! A pod as policy sees it: identity, labels, placement, addresses, phase and container ports,
//! converted from the Kubernetes object.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_NAMESPACE, Labels, ObjectKey, Protocol};

/// The pod phase, as far as policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PodPhase {
    /// Pending, Running, Unknown or absent: the pod may use its IPs.
    Active,
    /// Succeeded or Failed: the pod is done and its IPs may already belong to another pod, so
    /// it is ignored everywhere (kube-router #1056, Antrea #6507).
    Finished,
}

/// A container port, used to resolve named ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ContainerPort {
    /// The port name, when the container names it.
    pub name: Option<String>,
    /// The port number.
    pub port: u16,
    /// The protocol (TCP when the manifest omits it).
    pub protocol: Protocol,
}

/// The controller that owns a pod, for grouping pods into workloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The owner's kind (`ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job`, ...).
    pub kind: String,
    /// The owner's name.
    pub name: String,
}

/// A pod: identity, labels, placement, addresses and ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pod {
    /// `namespace/name`.
    pub key: ObjectKey,
    /// Pod labels.
    pub labels: Labels,
    /// The node the pod is scheduled on (`spec.nodeName`).
    pub node: Option<String>,
    /// The pod's IPs from `status.podIPs` (or `status.podIP`), without duplicates.
    pub ips: Vec<IpAddr>,
    /// Whether the pod is running or done.
    pub phase: PodPhase,
    /// A hostNetwork pod shares its node's addresses and is treated as node traffic.
    pub host_network: bool,
    /// Set once the pod has a deletion timestamp; such pods stay policed until they are gone.
    pub terminating: bool,
    /// Ports declared by the pod's containers (init containers included, as the API does).
    pub ports: Vec<ContainerPort>,
    /// The controlling owner, if any.
    pub owner: Option<Owner>,
}

/// Why a Kubernetes object could not become part of the snapshot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The object has no `metadata.name`.
    #[error("{kind} without metadata.name")]
    MissingName {
        /// The object's kind.
        kind: &'static str,
    },
}

impl Pod {
    /// Converts a Kubernetes Pod. IP strings that do not parse are left out (and reported in the
    /// returned list of problems) rather than failing the whole pod.
    pub fn from_k8s(pod: &core::Pod) -> Result<(Self, Vec<String>), Error> {
        let name = pod
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingName { kind: "Pod" })?;
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let mut problems = Vec::new();

        let mut ip_strings: Vec<&str> = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|ip| ip.ip.as_str()).collect())
            .unwrap_or_default();
        if let Some(ip) = status.and_then(|s| s.pod_ip.as_deref()) {
            ip_strings.push(ip);
        }
        let mut ips = Vec::new();
        for text in ip_strings {
            match text.parse::<IpAddr>() {
                Ok(ip) if !ips.contains(&ip) => ips.push(ip),
                Ok(_) => {}
                Err(_) => {
                    problems.push(format!("pod {namespace}/{name}: ignoring bad IP {text:?}"))
                }
            }
        }

        let phase = match status.and_then(|s| s.phase.as_deref()) {
            Some("Succeeded" | "Failed") => PodPhase::Finished,
            _ => PodPhase::Active,
        };
        let mut ports = Vec::new();
        if let Some(spec) = spec {
            let containers = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten());
            for port in containers.flat_map(|c| c.ports.iter().flatten()) {
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                let (Some(protocol), Ok(number)) = (
                    Protocol::from_k8s(protocol),
                    u16::try_from(port.container_port),
                ) else {
                    problems.push(format!(
                        "pod {namespace}/{name}: ignoring container port {} {protocol}",
                        port.container_port
                    ));
                    continue;
                };
                ports.push(ContainerPort {
                    name: port.name.clone(),
                    port: number,
                    protocol,
                });
            }
        }
        ports.sort();
        ports.dedup();
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let pod = Pod {
            key: ObjectKey::new(namespace, name),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            node: spec.and_then(|s| s.node_name.clone()),
            ips,
            phase,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            ports,
            owner: owner.map(|o| Owner {
                kind: o.kind.clone(),
                name: o.name.clone(),
            }),
        };
        Ok((pod, problems))
    }

    /// A running pod with labels, a node and IPs, and nothing else (no ports, no owner): what
    /// tests, benchmarks and simulations build clusters from.
    pub fn running(
        key: ObjectKey,
        labels: Labels,
        node: impl Into<String>,
        ips: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        Self {
            key,
            labels,
            node: Some(node.into()),
            ips: ips.into_iter().collect(),
            phase: PodPhase::Active,
            host_network: false,
            terminating: false,
            ports: Vec::new(),
            owner: None,
        }
    }

    /// Whether the pod's traffic is pod traffic that policy governs: active, not hostNetwork,
    /// and addressed. Finished pods and hostNetwork pods are never policed and never peers.
    pub fn is_policy_endpoint(&self) -> bool {
        self.phase == PodPhase::Active && !self.host_network && !self.ips.is_empty()
    }

    /// Resolves a named port on this pod for a protocol (name and protocol must both match).
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }
}
