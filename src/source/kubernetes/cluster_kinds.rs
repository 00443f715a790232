//! The two cluster-scoped kinds the agent watches beside Pods, Namespaces and
//! NetworkPolicies, as kube-rs resources:
//!
//! - [`ClusterPolicyObject`]: a `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy, read
//!   into the core's wire type ([`crate::policy::cluster::api`]), which every field of the CRD
//!   fits (validation is the core's, not the decoder's);
//! - [`NodeFields`]: a Node's name, labels and addresses, and nothing else (a Node's status
//!   lists its images and conditions, most of its size), for ClusterNetworkPolicy `nodes`
//!   peers. [`NodeFields::into_node`] gives back a k8s-openapi Node holding those fields, for
//!   [`crate::model::Node::from_k8s`].

use std::borrow::Cow;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::policy::cluster::api::{self, ClusterNetworkPolicy};

use super::fields_resource::fields_resource;

/// A ClusterNetworkPolicy as the watch reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterPolicyObject(pub ClusterNetworkPolicy);

impl kube::Resource for ClusterPolicyObject {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(api::KIND)
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(api::GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(api::VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(api::PLURAL)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

/// A Node as the agent reads it from the API.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeFields {
    #[serde(default, deserialize_with = "super::pod_fields::metadata")]
    metadata: ObjectMeta,
    #[serde(default)]
    status: Option<StatusFields>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct StatusFields {
    addresses: Option<Vec<core::NodeAddress>>,
}

impl NodeFields {
    /// The k8s-openapi Node with these fields, everything else at its default.
    pub fn into_node(self) -> core::Node {
        core::Node {
            metadata: self.metadata,
            spec: None,
            status: self.status.map(|status| core::NodeStatus {
                addresses: status.addresses,
                ..core::NodeStatus::default()
            }),
        }
    }
}

fields_resource!(NodeFields, core::Node, k8s_openapi::ClusterResourceScope);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{ClusterPolicy, Node};

    #[test]
    fn a_node_from_its_fields_is_the_node_from_the_whole_object() {
        let whole = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-1", "uid": "u", "resourceVersion": "7",
                         "labels": {"kubernetes.io/os": "linux"},
                         "annotations": {"big": "x"}, "managedFields": [{"manager": "kubelet"}]},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}],
                       "images": [{"names": ["agnhost"], "sizeBytes": 1}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        });
        let fields: NodeFields = serde_json::from_value(whole.clone()).unwrap();
        let object: core::Node = serde_json::from_value(whole).unwrap();
        assert_eq!(
            Node::from_k8s(&fields.into_node()).unwrap(),
            Node::from_k8s(&object).unwrap()
        );
    }

    #[test]
    fn a_cluster_network_policy_reads_into_the_core_type_and_names_its_resource() {
        let object: ClusterPolicyObject = serde_json::from_value(json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "no-imds", "resourceVersion": "3"},
            "spec": {"tier": "Admin", "priority": 5, "subject": {"namespaces": {}},
                     "egress": [{"action": "Deny", "to": [{"networks": ["169.254.169.254/32"]}]}]},
            "status": {"conditions": []},
        }))
        .unwrap();
        let policy = ClusterPolicy::from_api(&object.0).unwrap();
        assert!(policy.errors.is_empty(), "{:?}", policy.errors);
        assert_eq!(
            kube::Resource::meta(&object).resource_version.as_deref(),
            Some("3")
        );
        let url = <ClusterPolicyObject as kube::Resource>::url_path(&(), None);
        assert_eq!(
            url,
            "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"
        );
    }
}
