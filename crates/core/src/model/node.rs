//! A node as ClusterNetworkPolicy `nodes` peers see it: its name, its labels and the addresses
//! of its `status.addresses`, converted from the Kubernetes object.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use serde::Serialize;

use super::{Error, Labels};

/// A node: name, labels, addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The node name.
    pub name: String,
    /// The node's labels.
    pub labels: Labels,
    /// Every address of `status.addresses` that is an IP (InternalIP, ExternalIP; host names
    /// are left out), without duplicates, in the order the node lists them.
    pub addresses: Vec<IpAddr>,
}

impl Node {
    /// Converts a Kubernetes Node. Addresses that are not IPs are left out; those of a type
    /// that should hold an IP are reported in the returned problems.
    pub fn from_k8s(node: &core::Node) -> Result<(Self, Vec<String>), Error> {
        let name = node
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingName { kind: "Node" })?;
        let mut problems = Vec::new();
        let mut addresses = Vec::new();
        let listed = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten();
        for address in listed {
            match address.address.parse::<IpAddr>() {
                Ok(ip) if !addresses.contains(&ip) => addresses.push(ip),
                Ok(_) => {}
                Err(_) if address.type_.ends_with("IP") => problems.push(format!(
                    "node {name}: ignoring bad {} {:?}",
                    address.type_, address.address
                )),
                Err(_) => {}
            }
        }
        let node = Self {
            name,
            labels: node.metadata.labels.clone().unwrap_or_default(),
            addresses,
        };
        Ok((node, problems))
    }

    /// A node with labels and addresses, for tests and simulations.
    pub fn new(
        name: impl Into<String>,
        labels: Labels,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        Self {
            name: name.into(),
            labels,
            addresses: addresses.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_keeps_its_ip_addresses_and_leaves_out_host_names() {
        let object: core::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-1", "labels": {"kubernetes.io/os": "linux"}},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "172.18.0.2"},
                {"type": "Hostname", "address": "node-1"},
                {"type": "InternalIP", "address": "fd00::2"},
                {"type": "ExternalIP", "address": "172.18.0.2"},
                {"type": "ExternalIP", "address": "not-an-ip"},
            ]}
        }))
        .unwrap();
        let (node, problems) = Node::from_k8s(&object).unwrap();
        assert_eq!(node.name, "node-1");
        assert_eq!(
            node.addresses,
            [
                "172.18.0.2".parse::<IpAddr>().unwrap(),
                "fd00::2".parse().unwrap()
            ]
        );
        assert_eq!(node.labels.get("kubernetes.io/os").unwrap(), "linux");
        assert_eq!(
            problems,
            ["node node-1: ignoring bad ExternalIP \"not-an-ip\""]
        );
        let nameless: core::Node = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(
            Node::from_k8s(&nameless),
            Err(Error::MissingName { kind: "Node" })
        );
    }
}
