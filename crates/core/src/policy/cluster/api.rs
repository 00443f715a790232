//! The ClusterNetworkPolicy object as the API serves it (`policy.networking.k8s.io/v1alpha2`,
//! network-policy-api v0.2.0), with serde in both directions: what the manifest loader and the
//! agent's watch decode, and what tests write. k8s-openapi has no such type; these mirror
//! `apis/v1alpha2/clusternetworkpolicy_types.go`.
//!
//! Every field is optional here, even those the API requires, and numbers are wide: what is
//! missing, out of range or of the wrong kind is a validation error naming the field
//! ([`super::parse`]), not a decode failure, so one bad field never hides the rest of the
//! object. Unknown fields are ignored, as the API server prunes them; a peer or protocol entry
//! with none of the fields known here (one from a newer API version) is an error too.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

/// The API group of ClusterNetworkPolicy.
pub const GROUP: &str = "policy.networking.k8s.io";
/// The API version this engine reads.
pub const VERSION: &str = "v1alpha2";
/// `policy.networking.k8s.io/v1alpha2`.
pub const API_VERSION: &str = "policy.networking.k8s.io/v1alpha2";
/// The kind.
pub const KIND: &str = "ClusterNetworkPolicy";
/// The resource's plural name.
pub const PLURAL: &str = "clusternetworkpolicies";

/// A ClusterNetworkPolicy object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetworkPolicy {
    /// `policy.networking.k8s.io/v1alpha2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `ClusterNetworkPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name, uid, resourceVersion, labels.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Spec>,
}

/// `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// `Admin` or `Baseline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// 0 to 1000, lower first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// The pods it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<SubjectSpec>,
    /// Rules for traffic arriving at the subject pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<RuleSpec>>,
    /// Rules for traffic leaving the subject pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<RuleSpec>>,
}

/// `spec.subject`: exactly one field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectSpec {
    /// Every pod of these namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPodSpec>,
}

/// `pods` of a subject or peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPodSpec {
    /// Which namespaces (absent or empty: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Which pods (required; empty: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

/// An ingress or egress rule. Ingress rules list their peers in `from`, egress rules in `to`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    /// At most 100 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Accept`, `Deny` or `Pass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Ingress peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<PeerSpec>>,
    /// Egress peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<PeerSpec>>,
    /// Protocols and ports (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<ProtocolSpec>>,
}

/// A peer: exactly one field. Ingress peers may only be `namespaces` or `pods`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerSpec {
    /// Every pod of these namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPodSpec>,
    /// Nodes by label (experimental channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<LabelSelector>,
    /// CIDRs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    /// Domain names (experimental channel; not enforced here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_names: Option<Vec<String>>,
}

/// A `protocols` entry: exactly one field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolSpec {
    /// TCP destination ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<PortsSpec>,
    /// UDP destination ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<PortsSpec>,
    /// SCTP destination ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp: Option<PortsSpec>,
    /// A container port name of the destination pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_named_port: Option<String>,
}

/// `tcp`, `udp`, `sctp`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortsSpec {
    /// The port or range (required: the API's `MinProperties=1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<PortSpec>,
}

/// A port number or a range: exactly one field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    /// 1 to 65535.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<i64>,
    /// An inclusive range, `start < end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<RangeSpec>,
}

/// `range`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeSpec {
    /// First port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    /// Last port, above `start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
}
