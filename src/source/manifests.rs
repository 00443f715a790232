//! Loads a directory of Kubernetes manifests into a [`Snapshot`]: the offline source behind
//! `kube-nftpol compile` and `explain`.
//!
//! This module owns finding the files, parsing YAML and JSON, expanding `List` documents and
//! dispatching objects by `apiVersion` and `kind`. It does not decide what an object means:
//! conversion is [`crate::model`]'s job and policy validation [`crate::policy`]'s.
//!
//! What is read:
//! - `*.yaml`, `*.yml` and `*.json` files (extension in any case), recursively, in sorted path
//!   order, following symlinks. Entries whose name starts with `.` are skipped: editor files,
//!   and the `..data` and `..<timestamp>` entries of a mounted ConfigMap, which would otherwise
//!   load every file twice. A path to a single file loads that file.
//! - YAML files may hold several `---`-separated documents; empty documents are skipped (and
//!   not counted when errors name a document: `file.yaml (document 2 at line 14)`).
//! - `List` documents (kind `List`, or any kind ending in `List` with `items`, such as the
//!   `PodList` the API returns) are expanded; items of a typed list without `kind` and
//!   `apiVersion` get them from the list.
//! - `v1` Namespace, `v1` Pod and `networking.k8s.io/v1` NetworkPolicy. Other kinds are skipped
//!   with a warning.
//!
//! Files are read in sorted path order so that when the same object appears twice the winner
//! (the later one, with a warning) does not depend on the file system. Everything else is
//! order-independent because the snapshot is.
//!
//! Malformed input is an error naming the file and, in multi-document files, the document:
//! bad YAML or JSON, a document that is not a mapping, an object without `kind`, `apiVersion`
//! or `metadata.name`, or an object of a supported kind that does not fit its schema. Invalid
//! NetworkPolicies are not errors: the snapshot keeps them fail-closed and [`Loaded`] lists
//! their field errors so the caller can show them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as networking;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;
use tracing::debug;

use crate::model::{self, Namespace, ObjectKey, Pod, Snapshot};
use crate::policy::FieldError;

/// File extensions read from a directory (compared case-insensitively).
pub const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Why the manifests could not be loaded. Locations and parser errors are boxed to keep the
/// `Result` small.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read (missing, unreadable, not UTF-8).
    #[error("reading {}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
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
    /// Every Namespace, Pod and NetworkPolicy read (invalid policies in fail-closed form).
    pub snapshot: Snapshot,
    /// Things skipped or repaired, one sentence each, naming the file: unsupported kinds, pod
    /// IPs or ports that did not parse, objects defined twice.
    pub warnings: Vec<String>,
    /// Policies that failed validation, by key, with their field errors. They are in the
    /// snapshot and allow nothing for the directions they isolate.
    pub invalid_policies: Vec<(ObjectKey, Vec<FieldError>)>,
}

/// Loads every manifest file under `path` (or the single file `path`).
pub fn load_dir(path: &Path) -> Result<Loaded> {
    let files = manifest_files(path)?;
    debug!(path = %path.display(), files = files.len(), "found manifest files");
    let mut loader = Loader::default();
    for file in &files {
        let text = fs::read_to_string(file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        loader.add_text(&text, &file.display().to_string())?;
    }
    Ok(loader.finish())
}

/// Loads manifests from one text. `origin` names it in errors and warnings; an origin ending
/// in `.json` is parsed as JSON, anything else as (multi-document) YAML.
pub fn load_str(text: &str, origin: &str) -> Result<Loaded> {
    let mut loader = Loader::default();
    loader.add_text(text, origin)?;
    Ok(loader.finish())
}

/// The manifest files under `root`, sorted by path.
pub(crate) fn manifest_files(root: &Path) -> Result<Vec<PathBuf>> {
    let metadata = fs::metadata(root).map_err(|source| Error::Read {
        path: root.to_owned(),
        source,
    })?;
    if !metadata.is_dir() {
        return Ok(vec![root.to_owned()]);
    }
    let mut files = Vec::new();
    walk(root, &mut files, &mut BTreeSet::new())?;
    files.sort();
    Ok(files)
}

/// Collects manifest files below `dir`, depth first in sorted order. `visited` holds canonical
/// directories already walked, so a symlink loop or a directory linked twice is read once.
fn walk(dir: &Path, files: &mut Vec<PathBuf>, visited: &mut BTreeSet<PathBuf>) -> Result<()> {
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Read { path, source }
    };
    if !visited.insert(fs::canonicalize(dir).map_err(read_error(dir))?) {
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error(dir))? {
        let entry = entry.map_err(read_error(dir))?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            entries.push(entry.path());
        }
    }
    entries.sort();
    for path in entries {
        // `fs::metadata` follows symlinks: a linked file or directory is read like a real one.
        let metadata = fs::metadata(&path).map_err(read_error(&path))?;
        if metadata.is_dir() {
            walk(&path, files, visited)?;
        } else if metadata.is_file() && has_manifest_extension(&path) {
            files.push(path);
        }
    }
    Ok(())
}

fn has_manifest_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|known| e.eq_ignore_ascii_case(known)))
}

/// The kinds this source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Namespace,
    Pod,
    NetworkPolicy,
}

impl Kind {
    fn of(api_version: &str, kind: &str) -> Option<Self> {
        match (api_version, kind) {
            ("v1", "Namespace") => Some(Self::Namespace),
            ("v1", "Pod") => Some(Self::Pod),
            ("networking.k8s.io/v1", "NetworkPolicy") => Some(Self::NetworkPolicy),
            _ => None,
        }
    }
}

/// Accumulates objects from several texts into one snapshot.
#[derive(Default)]
struct Loader {
    snapshot: Snapshot,
    warnings: Vec<String>,
    /// Where each object was last defined, to warn about duplicates.
    seen: BTreeMap<(Kind, ObjectKey), Location>,
}

impl Loader {
    fn add_text(&mut self, text: &str, origin: &str) -> Result<()> {
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
        for (index, (document, line)) in documents.into_iter().enumerate() {
            let at = Location {
                origin: origin.to_owned(),
                document: several.then_some(index + 1),
                line: line.filter(|_| several),
                items: Vec::new(),
            };
            self.add_object(document, at)?;
        }
        Ok(())
    }

    fn add_object(&mut self, object: Value, at: Location) -> Result<()> {
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
            return self.add_list(&object, at);
        }
        let Some(known) = Kind::of(api_version, kind) else {
            let name = fields
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(|name| format!(" {name}"))
                .unwrap_or_default();
            self.warnings.push(format!(
                "{at}: skipping {api_version} {kind}{name}: only v1 Namespace, v1 Pod and \
                 networking.k8s.io/v1 NetworkPolicy are read"
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
        };
        if let Some(previous) = self.seen.insert((known, key.clone()), at.clone()) {
            let shown = if known == Kind::Namespace {
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
    fn add_list(&mut self, list: &Value, at: Location) -> Result<()> {
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
            self.add_object(item, item_at)?;
        }
        Ok(())
    }

    fn finish(self) -> Loaded {
        let invalid_policies = self
            .snapshot
            .policies()
            .filter(|p| p.is_invalid())
            .map(|p| (p.key.clone(), p.errors.clone()))
            .collect();
        debug!(
            namespaces = self.snapshot.namespaces().count(),
            pods = self.snapshot.pods().count(),
            policies = self.snapshot.policies().count(),
            "loaded manifests"
        );
        Loaded {
            snapshot: self.snapshot,
            warnings: self.warnings,
            invalid_policies,
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

    #[test]
    fn directory_is_read_recursively_in_path_order_skipping_hidden_and_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("b/c")).unwrap();
        fs::create_dir_all(root.join(".hidden")).unwrap();
        let ns = |labels: &str| {
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: a, labels: {labels}}}\n")
        };
        fs::write(root.join("a.yaml"), ns("{v: a}")).unwrap();
        fs::write(root.join("b/c/d.YML"), ns("{v: d}")).unwrap();
        fs::write(root.join(".hidden/z.yaml"), ns("{v: hidden}")).unwrap();
        fs::write(root.join("b/notes.txt"), "not a manifest").unwrap();
        fs::write(
            root.join("b/e.json"),
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"e"}}"#,
        )
        .unwrap();
        let loaded = load_dir(root).unwrap();
        // b/c/d.YML sorts after a.yaml, so its labels win.
        let labels = &loaded.snapshot.namespace("a").unwrap().labels;
        assert_eq!(labels.get("v").map(String::as_str), Some("d"));
        assert!(loaded.snapshot.namespace("e").is_some());
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    }

    #[test]
    fn missing_directory_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let error = load_dir(&missing).unwrap_err();
        assert_eq!(error.to_string(), format!("reading {}", missing.display()));
    }

    #[test]
    fn single_file_path_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pod.yaml");
        fs::write(&file, POD).unwrap();
        let loaded = load_dir(&file).unwrap();
        assert_eq!(loaded.snapshot.pods().count(), 1);
    }

    #[test]
    fn malformed_file_in_a_directory_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ok.yaml"), POD).unwrap();
        fs::write(dir.path().join("bad.yaml"), "a: [\n").unwrap();
        let error = load_dir(dir.path()).unwrap_err();
        let expected = format!("{}: invalid YAML", dir.path().join("bad.yaml").display());
        assert_eq!(error.to_string(), expected);
    }
}
