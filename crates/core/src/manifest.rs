//! Kubernetes manifests (YAML or JSON text) to a [`Snapshot`]: what `kube-nftpol compile`,
//! `explain` and the agent's `--manifests DIR` read, and what tests build clusters from.
//!
//! Pure: text in, snapshot out. Finding and reading files is the agent's
//! (`kube_nftpol::source::manifests`). This module owns parsing YAML and JSON, expanding `List`
//! documents and dispatching objects by `apiVersion` and `kind`; it does not decide what an
//! object means: conversion is [`crate::model`]'s job and policy validation
//! [`crate::policy`]'s.
//!
//! What is read:
//! - YAML texts may hold several `---`-separated documents; empty documents are skipped (and
//!   not counted when errors name a document: `file.yaml (document 2 at line 14)`). A text
//!   whose origin ends in `.json` is one JSON document.
//! - `List` documents (kind `List`, or any kind ending in `List` with `items`, such as the
//!   `PodList` the API returns) are expanded; items of a typed list without `kind` and
//!   `apiVersion` get them from the list.
//! - `v1` Namespace, `v1` Pod, `v1` Node, `networking.k8s.io/v1` NetworkPolicy and
//!   `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy. Other kinds are skipped with a
//!   warning.
//!
//! A loader made with [`Loader::locating`] also records the line of each object and of each of
//! its fields ([`Locations`], the private `spans` module), for output that points at lines.
//!
//! When the same object appears twice the later one wins, with a warning; callers add texts in
//! a fixed order (the agent: sorted paths). Everything else is order-independent because the
//! snapshot is.
//!
//! Malformed input is an error naming the origin and, in multi-document texts, the document:
//! bad YAML or JSON, a document that is not a mapping, an object without `kind`, `apiVersion`
//! or `metadata.name`, or an object of a supported kind that does not fit its schema. Invalid
//! NetworkPolicies and ClusterNetworkPolicies are not errors: the snapshot keeps them
//! fail-closed and [`Loaded`] lists their field errors so the caller can show them.

mod loader;
mod spans;

use std::fmt;

use crate::model::{self, FieldError, ObjectKey, Snapshot};

pub use loader::Loader;
pub use spans::{Locations, ObjectLocation};

/// Why a manifest text could not be loaded. Locations and parser errors are boxed to keep
/// the `Result` small.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file is not valid YAML.
    #[error("{origin}: invalid YAML")]
    ParseYaml {
        /// The file.
        origin: String,
        /// The parser's error, with line and column (boxed: it is large).
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A `.json` file is not valid JSON.
    #[error("{origin}: invalid JSON")]
    ParseJson {
        /// The file.
        origin: String,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A document or list item is not a mapping.
    #[error("{at}: expected a Kubernetes object (a mapping), found {found}")]
    NotAnObject {
        /// Where.
        at: Box<Location>,
        /// What was found instead (`a string`, `a list`, ...).
        found: &'static str,
    },
    /// An object lacks a field every manifest needs (`kind`, `apiVersion`) or has it with the
    /// wrong type, or a `List` has `items` that is not a list.
    #[error("{at}: {problem}")]
    MissingField {
        /// Where.
        at: Box<Location>,
        /// What is missing, in words.
        problem: &'static str,
    },
    /// An object of a supported kind does not fit the Kubernetes schema of that kind.
    #[error("{at}: {api_version} {kind} does not match its schema")]
    Decode {
        /// Where.
        at: Box<Location>,
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
        /// What did not fit.
        #[source]
        source: serde_json::Error,
    },
    /// The object fits the schema but cannot enter the snapshot (no `metadata.name`).
    #[error("{at}")]
    Model {
        /// Where.
        at: Box<Location>,
        /// Why.
        #[source]
        source: model::Error,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where an object came from: file, document (in multi-document files) and list item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (or the origin given to [`load_str`]).
    pub origin: String,
    /// The 1-based number of the document among the file's non-empty documents, `None` when
    /// the file holds only one.
    pub document: Option<usize>,
    /// The line the document starts on, alongside `document` (YAML only).
    pub line: Option<u64>,
    /// Indexes into nested `items` lists, outermost first.
    pub items: Vec<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        let mut parts = Vec::new();
        match (self.document, self.line) {
            (Some(document), Some(line)) => {
                parts.push(format!("document {document} at line {line}"))
            }
            (Some(document), None) => parts.push(format!("document {document}")),
            (None, _) => {}
        }
        if !self.items.is_empty() {
            let items: Vec<String> = self.items.iter().map(|i| format!("items[{i}]")).collect();
            parts.push(items.join("."));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// The result of a load: the snapshot and what the user should be told about it.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every Namespace, Pod, Node, NetworkPolicy and ClusterNetworkPolicy read (invalid policies
    /// in fail-closed form).
    pub snapshot: Snapshot,
    /// Things skipped or repaired, one sentence each, naming the file: unsupported kinds, pod
    /// IPs or ports that did not parse, objects defined twice.
    pub warnings: Vec<String>,
    /// Policies that failed validation, by key, with their field errors. They are in the
    /// snapshot and allow nothing for the directions they isolate.
    pub invalid_policies: Vec<(ObjectKey, Vec<FieldError>)>,
    /// ClusterNetworkPolicies that failed validation, by name, with their field errors. They
    /// are in the snapshot in their fail-closed form (they only deny).
    pub invalid_cluster_policies: Vec<(String, Vec<FieldError>)>,
    /// Where each object and its fields are written, when the [`Loader`] was made with
    /// [`Loader::locating`]; empty otherwise.
    pub locations: Locations,
}

/// Loads manifests from one text. `origin` names it in errors and warnings; an origin ending
/// in `.json` is parsed as JSON, anything else as (multi-document) YAML.
pub fn load_str(text: &str, origin: &str) -> Result<Loaded> {
    let mut loader = Loader::default();
    loader.add_text(text, origin)?;
    Ok(loader.finish())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    const POD: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-1
  containers:
  - name: web
    ports: [{name: http, containerPort: 8080}]
status:
  podIP: 10.0.0.5
  podIPs: [{ip: 10.0.0.5}, {ip: 'fd00::5'}]
";

    fn key(namespace: &str, name: &str) -> ObjectKey {
        ObjectKey::new(namespace, name)
    }

    #[test]
    fn pod_is_loaded_with_node_ips_and_named_ports() {
        let loaded = load_str(POD, "pod.yaml").unwrap();
        let pod = loaded.snapshot.pod(&key("shop", "web")).unwrap();
        assert_eq!(pod.node.as_deref(), Some("node-1"));
        let ips: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(pod.ips, ips);
        assert_eq!(pod.named_port("http", model::Protocol::Tcp), Some(8080));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert!(
            loaded.snapshot.namespace("shop").is_some(),
            "namespace implied by the pod"
        );
    }

    #[test]
    fn multi_document_yaml_skips_empty_documents() {
        let text = format!(
            "---\n# only a comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  \
             labels: {{team: a}}\n---\n---\n{POD}"
        );
        let loaded = load_str(&text, "multi.yaml").unwrap();
        let namespace = loaded.snapshot.namespace("shop").unwrap();
        assert_eq!(namespace.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(
            namespace
                .labels
                .get(model::NAMESPACE_NAME_LABEL)
                .map(String::as_str),
            Some("shop")
        );
        assert!(loaded.snapshot.pod(&key("shop", "web")).is_some());
    }

    #[test]
    fn a_namespace_annotated_for_audit_is_loaded_in_audit_mode() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  \
                    annotations: {kube-nftpol.io/enforcement: audit}\n---\n\
                    apiVersion: v1\nkind: Namespace\nmetadata: {name: pay}\n";
        let loaded = load_str(text, "ns.yaml").unwrap();
        assert_eq!(
            loaded.snapshot.enforcement("shop"),
            model::Enforcement::Audit
        );
        assert_eq!(
            loaded.snapshot.enforcement("pay"),
            model::Enforcement::Enforce
        );
    }

    #[test]
    fn json_list_is_expanded() {
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}},
            {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "deny", "namespace": "a"}, "spec": {"podSelector": {}}}
        ]}"#;
        let loaded = load_str(text, "list.json").unwrap();
        assert!(loaded.snapshot.namespace("a").is_some());
        assert!(loaded.snapshot.policy(&key("a", "deny")).is_some());
    }

    #[test]
    fn typed_list_items_inherit_kind_and_api_version() {
        let text = "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: p, namespace: a}\n";
        let loaded = load_str(text, "pods.yaml").unwrap();
        assert!(loaded.snapshot.pod(&key("a", "p")).is_some());
    }

    #[test]
    fn unknown_kind_is_skipped_with_a_warning_naming_file_and_kind() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n";
        let loaded = load_str(text, "deploy.yaml").unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        let warning = &loaded.warnings[0];
        assert!(
            warning.starts_with("deploy.yaml: skipping apps/v1 Deployment web"),
            "{warning}"
        );
    }

    #[test]
    fn network_policy_of_another_api_group_is_skipped_not_misread() {
        let text = "apiVersion: crd.projectcalico.org/v1\nkind: NetworkPolicy\n\
                    metadata: {name: x, namespace: a}\nspec: {selector: all()}\n";
        let loaded = load_str(text, "calico.yaml").unwrap();
        assert_eq!(loaded.snapshot.policies().count(), 0);
        assert!(loaded.warnings[0].contains("crd.projectcalico.org/v1 NetworkPolicy x"));
    }

    #[test]
    fn invalid_policy_is_kept_and_its_field_errors_reported() {
        let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                    metadata: {name: bad, namespace: a}\n\
                    spec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/33}}]\n";
        let loaded = load_str(text, "bad.yaml").unwrap();
        assert!(
            loaded
                .snapshot
                .policy(&key("a", "bad"))
                .unwrap()
                .is_invalid()
        );
        let (policy, errors) = &loaded.invalid_policies[0];
        assert_eq!(policy, &key("a", "bad"));
        assert_eq!(errors[0].field, "spec.ingress[0].from[0].ipBlock.cidr");
    }

    #[test]
    fn pod_problems_become_warnings() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\n\
                    status: {podIP: not-an-ip}\n";
        let loaded = load_str(text, "p.yaml").unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].starts_with("p.yaml: pod a/p: ignoring bad IP"));
    }

    #[test]
    fn object_defined_twice_warns_and_the_later_one_wins() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {v: '1'}}\n---\n\
                    apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {v: '2'}}\n";
        let loaded = load_str(text, "ns.yaml").unwrap();
        let labels = &loaded.snapshot.namespace("a").unwrap().labels;
        assert_eq!(labels.get("v").map(String::as_str), Some("2"));
        assert_eq!(
            loaded.warnings,
            [
                "ns.yaml (document 2 at line 5): Namespace a replaces the one from ns.yaml (document 1 at line 1)"
            ]
        );
    }

    #[test]
    fn bad_yaml_names_the_file() {
        let error = load_str("kind: [unclosed\n", "broken.yaml").unwrap_err();
        assert!(matches!(error, Error::ParseYaml { .. }), "{error:?}");
        assert_eq!(error.to_string(), "broken.yaml: invalid YAML");
    }

    #[test]
    fn bad_json_names_the_file() {
        let error = load_str("{\"kind\": ", "broken.json").unwrap_err();
        assert_eq!(error.to_string(), "broken.json: invalid JSON");
    }

    #[test]
    fn document_that_is_not_a_mapping_names_file_and_document() {
        let text = format!("{POD}---\n- just\n- a list\n");
        let error = load_str(&text, "m.yaml").unwrap_err();
        assert_eq!(
            error.to_string(),
            "m.yaml (document 2 at line 13): expected a Kubernetes object (a mapping), found a list"
        );
    }

    #[test]
    fn object_without_kind_is_an_error() {
        let error = load_str("metadata: {name: x}\n", "x.yaml").unwrap_err();
        assert_eq!(
            error.to_string(),
            "x.yaml: no kind (not a Kubernetes object)"
        );
    }

    #[test]
    fn known_kind_that_does_not_fit_the_schema_is_an_error() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n";
        let error = load_str(text, "p.yaml").unwrap_err();
        assert_eq!(
            error.to_string(),
            "p.yaml: v1 Pod does not match its schema"
        );
        let source = std::error::Error::source(&error).unwrap().to_string();
        assert!(source.contains("invalid type"), "{source}");
    }

    #[test]
    fn list_item_errors_name_the_item() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, \
                    metadata: {name: a}}\n- {apiVersion: v1, kind: Pod, metadata: {}}\n";
        let error = load_str(text, "l.yaml").unwrap_err();
        assert!(matches!(error, Error::Model { .. }));
        assert_eq!(error.to_string(), "l.yaml (items[1])");
        let source = std::error::Error::source(&error).unwrap().to_string();
        assert_eq!(source, "Pod without metadata.name");
    }
}
