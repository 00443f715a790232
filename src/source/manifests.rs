//! Loads a directory of Kubernetes manifests into a [`Snapshot`](crate::model::Snapshot): the
//! offline source behind `kube-nftpol compile` and `explain`, and the agent's
//! `--manifests DIR`.
//!
//! This module owns finding and reading the files; parsing their text is
//! [`kube_nftpol_core::manifest`]'s. What is read: `*.yaml`, `*.yml` and `*.json` files
//! (extension in any case), recursively, in sorted path order, following symlinks. Entries
//! whose name starts with `.` are skipped: editor files, and the `..data` and `..<timestamp>`
//! entries of a mounted ConfigMap, which would otherwise load every file twice. A path to a
//! single file loads that file. Files are read in sorted path order so that when the same
//! object appears twice the winner (the later one, with a warning) does not depend on the file
//! system.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::debug;

use kube_nftpol_core::manifest::{self, Loader};
pub use kube_nftpol_core::manifest::{Loaded, Location, load_str};

/// File extensions read from a directory (compared case-insensitively).
pub const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Why the manifests could not be loaded.
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
    /// A file's text is not a valid manifest (see [`manifest::Error`]).
    #[error(transparent)]
    Parse(#[from] manifest::Error),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Loads every manifest file under `path` (or the single file `path`).
pub fn load_dir(path: &Path) -> Result<Loaded> {
    load_dir_with(path, Loader::default())
}

/// [`load_dir`], also recording the line of each object and field ([`Loaded::locations`]),
/// for `kube-nftpol lint`.
pub fn load_dir_locating(path: &Path) -> Result<Loaded> {
    load_dir_with(path, Loader::locating())
}

fn load_dir_with(path: &Path, mut loader: Loader) -> Result<Loaded> {
    let files = manifest_files(path)?;
    debug!(path = %path.display(), files = files.len(), "found manifest files");
    for file in &files {
        let text = fs::read_to_string(file).map_err(|source| Error::Read {
            path: file.clone(),
            source,
        })?;
        loader.add_text(&text, &file.display().to_string())?;
    }
    let loaded = loader.finish();
    debug!(
        namespaces = loaded.snapshot.namespaces().count(),
        pods = loaded.snapshot.pods().count(),
        policies = loaded.snapshot.policies().count(),
        "loaded manifests"
    );
    Ok(loaded)
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

#[cfg(test)]
mod tests {

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
