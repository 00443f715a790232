//! Loads the manifests a subcommand was pointed at and tells the user, on stderr, what was
//! skipped or is invalid: `warning: ...` lines for the loader's warnings and one
//! `error: policy NS/NAME: FIELD: MESSAGE` line per validation error of a NetworkPolicy
//! (`error: clusternetworkpolicy NAME: FIELD: MESSAGE` for a ClusterNetworkPolicy).
//!
//! Invalid policies do not fail the command: the engine enforces them fail-closed (they isolate
//! but allow nothing), and the output shows exactly that.
//!
//! Without manifests, [`live`] lists the cluster once through the Kubernetes API.

use std::io::{self, Write};
use std::path::Path;

use anyhow::Context as _;
use tracing::info;

use crate::model::Snapshot;
use crate::source::manifests::{self, Loaded};

/// Loads `path` (a directory or one file) and prints its diagnostics to stderr.
pub fn load(path: &Path) -> anyhow::Result<Snapshot> {
    let loaded = manifests::load_dir(path).context("loading manifests")?;
    let mut stderr = io::stderr().lock();
    for line in diagnostics(&loaded) {
        // Nothing useful to do when stderr is gone.
        let _ = writeln!(stderr, "{line}");
    }
    info!(
        path = %path.display(),
        pods = loaded.snapshot.pods().count(),
        policies = loaded.snapshot.policies().count(),
        invalid_policies = loaded.invalid_policies.len(),
        "manifests loaded"
    );
    Ok(loaded.snapshot)
}

/// The live cluster, listed once through the Kubernetes API (`--kubeconfig`, or the standard
/// client configuration), without printing anything.
pub fn live(kubeconfig: Option<&Path>) -> anyhow::Result<Loaded> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = crate::agent::kube_client(kubeconfig).await?;
        crate::source::kubernetes::snapshot_once(&client)
            .await
            .context("listing pods, namespaces, nodes, networkpolicies and clusternetworkpolicies")
    })
}

/// The stderr lines for a load: warnings first, then invalid-policy errors by policy.
pub fn diagnostics(loaded: &Loaded) -> Vec<String> {
    let warnings = loaded.warnings.iter().map(|w| format!("warning: {w}"));
    let errors = loaded.invalid_policies.iter().flat_map(|(policy, errors)| {
        errors
            .iter()
            .map(move |e| format!("error: policy {policy}: {e}"))
    });
    let cluster_errors = loaded
        .invalid_cluster_policies
        .iter()
        .flat_map(|(policy, errors)| {
            errors
                .iter()
                .map(move |e| format!("error: clusternetworkpolicy {policy}: {e}"))
        });
    warnings.chain(errors).chain(cluster_errors).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::manifests::load_str;

    #[test]
    fn diagnostics_list_warnings_then_policy_errors_with_field() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n\
                    apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                    metadata: {name: bad, namespace: a}\n\
                    spec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: nope}}]\n";
        let loaded = load_str(text, "x.yaml").unwrap();
        let lines = diagnostics(&loaded);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with(
                "warning: x.yaml (document 1 at line 1): skipping apps/v1 Deployment d"
            )
        );
        assert!(
            lines[1].starts_with("error: policy a/bad: spec.ingress[0].from[0].ipBlock.cidr: "),
            "{}",
            lines[1]
        );
    }
}
