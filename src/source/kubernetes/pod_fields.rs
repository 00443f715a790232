//! The fields of a Pod the agent reads, and only those. The pod watch deserializes the API's
//! answers into [`PodFields`], so everything else in a Pod (managedFields, annotations,
//! volumes, most of the spec and status) is skipped while parsing instead of being built and
//! dropped: at 10,000 pods that was most of a relist's work and its memory peak.
//! [`PodFields::into_pod`] gives back a k8s-openapi Pod holding those fields, for
//! [`crate::model::Pod::from_k8s`], which reads nothing else (a test holds both to that).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Deserializer};

use super::fields_resource::fields_resource;

/// A Pod as the agent reads it from the API.
#[derive(Debug, Clone, Deserialize)]
pub struct PodFields {
    #[serde(default, deserialize_with = "metadata")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<SpecFields>,
    #[serde(default)]
    status: Option<StatusFields>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataFields {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    deletion_timestamp: Option<Time>,
    owner_references: Option<Vec<OwnerReference>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFields {
    node_name: Option<String>,
    host_network: Option<bool>,
    #[serde(default)]
    containers: Vec<ContainerFields>,
    init_containers: Option<Vec<ContainerFields>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ContainerFields {
    ports: Option<Vec<core::ContainerPort>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusFields {
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pod_ips: Option<Vec<core::PodIP>>,
}

/// The metadata fields the agent reads, of a Pod or of any other kind it reads in part (a
/// Node's has no namespace, owners or deletion time: those stay `None`).
pub(super) fn metadata<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    let fields = MetadataFields::deserialize(deserializer)?;
    Ok(ObjectMeta {
        name: fields.name,
        namespace: fields.namespace,
        uid: fields.uid,
        resource_version: fields.resource_version,
        labels: fields.labels,
        deletion_timestamp: fields.deletion_timestamp,
        owner_references: fields.owner_references,
        ..ObjectMeta::default()
    })
}

impl PodFields {
    /// The k8s-openapi Pod with these fields, everything else at its default.
    pub fn into_pod(self) -> core::Pod {
        let container = |c: ContainerFields| core::Container {
            ports: c.ports,
            ..core::Container::default()
        };
        core::Pod {
            metadata: self.metadata,
            spec: self.spec.map(|spec| core::PodSpec {
                node_name: spec.node_name,
                host_network: spec.host_network,
                containers: spec.containers.into_iter().map(container).collect(),
                init_containers: spec
                    .init_containers
                    .map(|all| all.into_iter().map(container).collect()),
                ..core::PodSpec::default()
            }),
            status: self.status.map(|status| core::PodStatus {
                phase: status.phase,
                pod_ip: status.pod_ip,
                pod_ips: status.pod_ips,
                ..core::PodStatus::default()
            }),
        }
    }
}

fields_resource!(PodFields, core::Pod, k8s_openapi::NamespaceResourceScope);

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::model::Pod;

    /// Pods as the API server returns them, with everything the model reads and much it does
    /// not.
    fn api_pods() -> Vec<Value> {
        let managed = json!([{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
            "time": "2026-11-23T10:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}]);
        vec![
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                    "resourceVersion": "42", "labels": {"app": "web", "tier": "front"},
                    "annotations": {"note": "not read"}, "managedFields": managed,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "web-7d9", "uid": "rs-1", "controller": true}]},
                "spec": {"nodeName": "node-1", "restartPolicy": "Always",
                    "containers": [{"name": "app", "image": "nginx", "resources": {},
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                  {"containerPort": 53, "protocol": "UDP"}]},
                        {"name": "sidecar", "image": "envoy"}],
                    "initContainers": [{"name": "init", "image": "busybox",
                        "ports": [{"name": "metrics", "containerPort": 9100, "protocol": "SCTP"}]}],
                    "volumes": [{"name": "data", "emptyDir": {}}]},
                "status": {"phase": "Running", "podIP": "10.244.1.5",
                    "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "hostIP": "172.18.0.2"}}),
            json!({"metadata": {"name": "old", "namespace": "shop",
                    "deletionTimestamp": "2026-11-23T10:05:00Z", "labels": {"app": "web"}},
                "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Succeeded", "podIP": "not-an-ip"}}),
            json!({"metadata": {"name": "host", "namespace": "kube-system"},
                "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "i",
                    "ports": [{"containerPort": 70000}]}]},
                "status": {"phase": "Pending"}}),
            json!({"metadata": {"name": "bare"}}),
        ]
    }

    #[test]
    fn the_model_gets_the_same_pod_from_the_fields_as_from_the_whole_object() {
        for pod in api_pods() {
            let whole: core::Pod = serde_json::from_value(pod.clone()).unwrap();
            let fields: PodFields = serde_json::from_value(pod.clone()).unwrap();
            let from_whole = Pod::from_k8s(&whole).unwrap();
            let from_fields = Pod::from_k8s(&fields.into_pod()).unwrap();
            assert_eq!(from_fields, from_whole, "{pod}");
        }
    }

    #[test]
    fn what_the_watch_needs_is_kept_and_the_rest_is_not() {
        let fields: PodFields = serde_json::from_value(api_pods().remove(0)).unwrap();
        use kube::{Resource as _, ResourceExt as _};
        assert_eq!(fields.resource_version().as_deref(), Some("42"));
        assert_eq!(fields.uid().as_deref(), Some("u-1"));
        assert_eq!(fields.namespace().as_deref(), Some("shop"));
        assert!(fields.meta().managed_fields.is_none());
        assert!(fields.meta().annotations.is_none());
        assert_eq!(
            <PodFields as kube::Resource>::url_path(&(), None),
            "/api/v1/pods"
        );
    }
}
