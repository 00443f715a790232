//! The manifest directory as a live source: the agent's `--manifests DIR`.
//!
//! Every poll interval it looks at the manifest files' paths, sizes and modification times
//! (cheap `stat` calls, no parsing) and reloads the whole directory when any of them changed.
//! A load that fails (a malformed file mid-edit) is logged and counted, and the last good
//! snapshot stays in force: bad input never widens access. Only complete loads are published.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use super::manifests::{self, Loaded};
use super::{ChangeClock, Metrics};

/// What identifies one state of the directory without reading the files.
type Signature = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn signature(root: &Path) -> Option<Signature> {
    let files = manifests::manifest_files(root).ok()?;
    Some(
        files
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(&path).ok();
                let len = meta.as_ref().map_or(0, |m| m.len());
                let modified = meta.and_then(|m| m.modified().ok());
                (path, len, modified)
            })
            .collect(),
    )
}

/// Watches `root` and publishes each complete load to `tx`. Runs until `tx` has no receiver.
pub async fn watch(
    root: PathBuf,
    interval: Duration,
    tx: watch::Sender<Option<Arc<Loaded>>>,
    clock: Arc<ChangeClock>,
    source: Metrics,
) {
    let mut last: Option<Signature> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if tx.is_closed() {
            return;
        }
        let root_for_sig = root.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || signature(&root_for_sig)).await else {
            continue;
        };
        if now.is_some() && now == last {
            continue;
        }
        clock.mark(Instant::now());
        let root_for_load = root.clone();
        let loaded = tokio::task::spawn_blocking(move || manifests::load_dir(&root_for_load)).await;
        match loaded {
            Ok(Ok(loaded)) => {
                source.loads.inc();
                source
                    .invalid_policies
                    .set(i64::try_from(loaded.invalid_policies.len()).unwrap_or(i64::MAX));
                for warning in &loaded.warnings {
                    warn!(path = %root.display(), "{warning}");
                }
                source
                    .invalid_cluster_policies
                    .set(i64::try_from(loaded.invalid_cluster_policies.len()).unwrap_or(i64::MAX));
                for (policy, errors) in &loaded.invalid_policies {
                    for error in errors {
                        warn!(%policy, field = %error.field, "invalid policy, enforced fail-closed: {}", error.message);
                    }
                }
                for (policy, errors) in &loaded.invalid_cluster_policies {
                    for error in errors {
                        warn!(cluster_policy = %policy, field = %error.field, "invalid ClusterNetworkPolicy, enforced fail-closed (it only denies): {}", error.message);
                    }
                }
                info!(
                    path = %root.display(),
                    pods = loaded.snapshot.pods().count(),
                    policies = loaded.snapshot.policies().count(),
                    cluster_policies = loaded.snapshot.cluster_policies().count(),
                    "manifests loaded"
                );
                last = now;
                if tx.send(Some(Arc::new(loaded))).is_err() {
                    return;
                }
            }
            Ok(Err(error)) => {
                source.load_errors.inc();
                warn!(path = %root.display(), error = %format!("{:#}", anyhow::Error::from(error)), "cannot load manifests; keeping the last good state");
                // Retry at the next change (or, if the directory is unreadable, every tick).
                last = now;
            }
            Err(join_error) => {
                source.load_errors.inc();
                warn!(error = %join_error, "manifest load task failed");
            }
        }
    }
}
