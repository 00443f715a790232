//! [`Loader`]: accumulates the objects of several manifest texts into one snapshot.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as networking;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::spans::{self, Locations, Node, ObjectLocation};
use super::{Error, Loaded, Location, Result};
use crate::model::{self, Namespace, ObjectKey, ObjectKind, ObjectRef, Pod, Snapshot};
use crate::policy::cluster::api as cluster_api;

/// The kinds this source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Namespace,
    Pod,
    NetworkPolicy,
    ClusterNetworkPolicy,
    Node,
}

impl Kind {
    fn object_kind(self) -> ObjectKind {
        match self {
            Self::Namespace => ObjectKind::Namespace,
            Self::Pod => ObjectKind::Pod,
            Self::NetworkPolicy => ObjectKind::NetworkPolicy,
            Self::ClusterNetworkPolicy => ObjectKind::ClusterNetworkPolicy,
            Self::Node => ObjectKind::Node,
        }
    }

    /// Cluster-scoped kinds are keyed by name alone (an empty namespace).
    fn cluster_scoped(self) -> bool {
        matches!(
            self,
            Self::Namespace | Self::ClusterNetworkPolicy | Self::Node
        )
    }

    fn of(api_version: &str, kind: &str) -> Option<Self> {
        match (api_version, kind) {
            ("v1", "Namespace") => Some(Self::Namespace),
            ("v1", "Pod") => Some(Self::Pod),
            ("networking.k8s.io/v1", "NetworkPolicy") => Some(Self::NetworkPolicy),
            (cluster_api::API_VERSION, cluster_api::KIND) => Some(Self::ClusterNetworkPolicy),
            ("v1", "Node") => Some(Self::Node),
            _ => None,
        }
    }
}

/// Accumulates objects from several texts into one snapshot.
#[derive(Debug, Default)]
pub struct Loader {
    snapshot: Snapshot,
    warnings: Vec<String>,
    /// Where each object was last defined, to warn about duplicates.
    seen: BTreeMap<(Kind, ObjectKey), Location>,
    /// Where each object and its fields are written; only when asked for ([`Loader::locating`]).
    locations: Option<Locations>,
}

impl Loader {
    /// A loader that also records where each object and each of its fields is written
    /// ([`Loaded::locations`]), for output that points at lines. It reads each text twice.
    pub fn locating() -> Self {
        Self {
            locations: Some(Locations::new()),
            ..Self::default()
        }
    }

    /// Adds the objects of one text. `origin` names it in errors and warnings; an origin
    /// ending in `.json` is parsed as JSON, anything else as (multi-document) YAML.
    pub fn add_text(&mut self, text: &str, origin: &str) -> Result<()> {
        let is_json = Path::new(origin)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        // Each document with the line it starts on (`None` for JSON, which is one document).
        let documents: Vec<(Value, Option<u64>)> = if is_json {
            let document = serde_json::from_str(text).map_err(|source| Error::ParseJson {
                origin: origin.to_owned(),
                source,
            })?;
            vec![(document, None)]
        } else {
            // No source snippet in errors: they are printed on one line, after the file name.
            let options = serde_saphyr::options! { with_snippet: false };
            let documents = serde_saphyr::from_multiple_with_options::<Spanned<Value>>(
                text, options,
            )
            .map_err(|source| Error::ParseYaml {
                origin: origin.to_owned(),
                source: Box::new(source),
            })?;
            // Empty documents (`---` followed by nothing or only comments) are already gone.
            let documents = documents.into_iter().filter(|d| !d.value.is_null());
            documents
                .map(|d| (d.value, Some(d.referenced.line())))
                .collect()
        };
        let several = documents.len() > 1;
        let nodes = self.locations.as_ref().and_then(|_| spans::documents(text));
        for (index, (document, line)) in documents.into_iter().enumerate() {
            let at = Location {
                origin: origin.to_owned(),
                document: several.then_some(index + 1),
                line: line.filter(|_| several),
                items: Vec::new(),
            };
            let node = nodes.as_ref().and_then(|nodes| nodes.get(index));
            self.add_object(document, at, node)?;
        }
        Ok(())
    }

    fn add_object(
        &mut self,
        object: Value,
        at: Location,
        node: Option<&Spanned<Node>>,
    ) -> Result<()> {
        let Value::Object(fields) = &object else {
            return Err(Error::NotAnObject {
                found: value_type(&object),
                at: Box::new(at),
            });
        };
        let Some(kind) = fields.get("kind").and_then(Value::as_str) else {
            return Err(Error::MissingField {
                at: Box::new(at),
                problem: "no kind (not a Kubernetes object)",
            });
        };
        let Some(api_version) = fields.get("apiVersion").and_then(Value::as_str) else {
            return Err(Error::MissingField {
                at: Box::new(at),
                problem: "no apiVersion",
            });
        };
        if kind == "List" || (kind.ends_with("List") && fields.contains_key("items")) {
            return self.add_list(&object, at, node);
        }
        let Some(known) = Kind::of(api_version, kind) else {
            let name = fields
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(|name| format!(" {name}"))
                .unwrap_or_default();
            self.warnings.push(format!(
                "{at}: skipping {api_version} {kind}{name}: only v1 Namespace, v1 Pod, v1 Node, \
                 networking.k8s.io/v1 NetworkPolicy and {} ClusterNetworkPolicy are read",
                cluster_api::API_VERSION
            ));
            return Ok(());
        };
        let decode_error = |source| Error::Decode {
            at: Box::new(at.clone()),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            source,
        };
        let model_error = |source| Error::Model {
            at: Box::new(at.clone()),
            source,
        };
        let key = match known {
            Kind::Namespace => {
                let namespace = core::Namespace::deserialize(&object).map_err(decode_error)?;
                let namespace = Namespace::from_k8s(&namespace)
                    .ok_or(model::Error::MissingName { kind: "Namespace" })
                    .map_err(model_error)?;
                let key = ObjectKey::new("", namespace.name.clone());
                self.snapshot.upsert_namespace(namespace);
                key
            }
            Kind::Pod => {
                let pod = core::Pod::deserialize(&object).map_err(decode_error)?;
                let (pod, problems) = Pod::from_k8s(&pod).map_err(model_error)?;
                self.warnings
                    .extend(problems.into_iter().map(|p| format!("{at}: {p}")));
                let key = pod.key.clone();
                self.snapshot.upsert_pod(pod);
                key
            }
            Kind::NetworkPolicy => {
                let policy =
                    networking::NetworkPolicy::deserialize(&object).map_err(decode_error)?;
                self.snapshot
                    .upsert_network_policy(&policy)
                    .map_err(model_error)?;
                let name = policy.metadata.name.unwrap_or_default();
                let namespace = policy
                    .metadata
                    .namespace
                    .unwrap_or_else(|| model::DEFAULT_NAMESPACE.into());
                ObjectKey::new(namespace, name)
            }
            Kind::ClusterNetworkPolicy => {
                let policy = cluster_api::ClusterNetworkPolicy::deserialize(&object)
                    .map_err(decode_error)?;
                self.snapshot
                    .upsert_cluster_network_policy(&policy)
                    .map_err(model_error)?;
                ObjectKey::new("", policy.metadata.name.unwrap_or_default())
            }
            Kind::Node => {
                let node = core::Node::deserialize(&object).map_err(decode_error)?;
                let (node, problems) = model::Node::from_k8s(&node).map_err(model_error)?;
                self.warnings
                    .extend(problems.into_iter().map(|p| format!("{at}: {p}")));
                let key = ObjectKey::new("", node.name.clone());
                self.snapshot.upsert_node(node);
                key
            }
        };
        if let Some(locations) = &mut self.locations {
            let object = match known {
                Kind::Namespace => ObjectRef::namespace(&key.name),
                kind if kind.cluster_scoped() => {
                    ObjectRef::cluster_scoped(kind.object_kind(), &key.name)
                }
                _ => ObjectRef::namespaced(known.object_kind(), &key),
            };
            let location = ObjectLocation {
                origin: at.origin.clone(),
                line: node.map(|n| n.referenced.line()).or(at.line),
                fields: node.map(|n| n.value.field_lines()).unwrap_or_default(),
            };
            locations.insert(object, location);
        }
        if let Some(previous) = self.seen.insert((known, key.clone()), at.clone()) {
            let shown = if known.cluster_scoped() {
                key.name
            } else {
                key.to_string()
            };
            self.warnings.push(format!(
                "{at}: {kind} {shown} replaces the one from {previous}"
            ));
        }
        Ok(())
    }

    /// Expands a `List`. Items of a typed list (`PodList`) may omit `kind` and `apiVersion`, as
    /// the API server's list responses do; they inherit them from the list.
    fn add_list(&mut self, list: &Value, at: Location, node: Option<&Spanned<Node>>) -> Result<()> {
        let items = match list.get("items") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(Error::MissingField {
                    at: Box::new(at),
                    problem: "items is not a list",
                });
            }
        };
        let kind = list.get("kind").and_then(Value::as_str).unwrap_or_default();
        let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
        let api_version = list.get("apiVersion").cloned();
        for (index, item) in items.iter().enumerate() {
            let mut item = item.clone();
            if let (Some(item_kind), Value::Object(fields)) = (item_kind, &mut item) {
                fields
                    .entry("kind")
                    .or_insert_with(|| Value::from(item_kind));
                if let Some(api_version) = &api_version {
                    fields
                        .entry("apiVersion")
                        .or_insert_with(|| api_version.clone());
                }
            }
            let mut item_at = at.clone();
            item_at.items.push(index);
            let item_node = node.and_then(|n| n.value.items().get(index));
            self.add_object(item, item_at, item_node)?;
        }
        Ok(())
    }

    /// The snapshot of every text added, with what the user should be told about it.
    pub fn finish(self) -> Loaded {
        let invalid_policies = self
            .snapshot
            .policies()
            .filter(|p| p.is_invalid())
            .map(|p| (p.key.clone(), p.errors.clone()))
            .collect();
        let invalid_cluster_policies = self
            .snapshot
            .cluster_policies()
            .filter(|p| p.is_invalid())
            .map(|p| (p.name.clone(), p.errors.clone()))
            .collect();
        let mut warnings = self.warnings;
        for policy in self.snapshot.cluster_policies() {
            for field in &policy.unsupported {
                warnings.push(format!("ClusterNetworkPolicy {}: {field}", policy.name));
            }
        }
        Loaded {
            snapshot: self.snapshot,
            warnings,
            invalid_policies,
            invalid_cluster_policies,
            locations: self.locations.unwrap_or_default(),
        }
    }
}

/// A JSON value's type, in words for error messages.
fn value_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
