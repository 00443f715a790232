//! [`ObjectRef`]: which Kubernetes object something is about (its kind and its key), for
//! messages that must name an object of any of the kinds the snapshot holds: lint findings and
//! the manifest locations they point at.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of object a snapshot is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    /// A `v1` Namespace.
    Namespace,
    /// A `v1` Pod.
    Pod,
    /// A `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy,
    /// A `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy (cluster-scoped: its
    /// [`ObjectRef`] has an empty namespace).
    ClusterNetworkPolicy,
    /// A `v1` Node (cluster-scoped).
    Node,
}

impl ObjectKind {
    /// The Kubernetes kind: `Namespace`, `Pod`, `NetworkPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Namespace => "Namespace",
            Self::Pod => "Pod",
            Self::NetworkPolicy => "NetworkPolicy",
            Self::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            Self::Node => "Node",
        }
    }
}

/// One object: its kind, its namespace (empty for a Namespace) and its name. Ordered by
/// namespace, then kind, then name, so everything about one namespace sorts together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The kind.
    pub kind: ObjectKind,
    /// The namespace; for a Namespace, its own name (so a namespace sorts with its objects).
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectRef {
    /// A Namespace.
    pub fn namespace(name: &str) -> Self {
        Self {
            kind: ObjectKind::Namespace,
            namespace: name.to_owned(),
            name: name.to_owned(),
        }
    }

    /// A cluster-scoped object (ClusterNetworkPolicy, Node) by its name.
    pub fn cluster_scoped(kind: ObjectKind, name: &str) -> Self {
        Self {
            kind,
            namespace: String::new(),
            name: name.to_owned(),
        }
    }

    /// A namespaced object by its key.
    pub fn namespaced(kind: ObjectKind, key: &super::ObjectKey) -> Self {
        Self {
            kind,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        }
    }
}

impl PartialOrd for ObjectRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.namespace, self.kind, &self.name).cmp(&(&other.namespace, other.kind, &other.name))
    }
}

/// `Namespace shop`, `NetworkPolicy shop/allow-dns`, `Pod shop/web-1`.
impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ObjectKind::Namespace => write!(f, "Namespace {}", self.name),
            kind if self.namespace.is_empty() => write!(f, "{} {}", kind.as_str(), self.name),
            kind => write!(f, "{} {}/{}", kind.as_str(), self.namespace, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectKey;

    #[test]
    fn objects_sort_by_namespace_then_kind_then_name_and_show_their_kind() {
        let policy = ObjectRef::namespaced(ObjectKind::NetworkPolicy, &ObjectKey::new("a", "p"));
        let pod = ObjectRef::namespaced(ObjectKind::Pod, &ObjectKey::new("a", "z"));
        let mut refs = vec![policy.clone(), ObjectRef::namespace("b"), pod.clone()];
        refs.push(ObjectRef::namespace("a"));
        refs.sort();
        assert_eq!(refs[0], ObjectRef::namespace("a"));
        assert_eq!(refs[1..3], [pod, policy]);
        assert_eq!(refs[3].to_string(), "Namespace b");
        assert_eq!(refs[2].to_string(), "NetworkPolicy a/p");
    }
}
