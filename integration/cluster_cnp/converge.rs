//! Bringing the cluster's policy objects to a checkpoint's, and knowing when the agents
//! enforce them: each agent's `kube_nftpol_programming_latency_seconds_count` (one per change
//! the agent saw and programmed), read through the API server's pod proxy before the writes,
//! must grow after them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kubectl::{Kubectl, metric};
use crate::say;

const LATENCY_COUNT: &str = "kube_nftpol_programming_latency_seconds_count";

/// Each agent's programming count, read at once.
fn counts(kubectl: &Kubectl, agents: &[(String, String)]) -> Result<Vec<f64>, String> {
    std::thread::scope(|scope| {
        let reads: Vec<_> = agents
            .iter()
            .map(|(pod, node)| {
                scope.spawn(move || {
                    let text = kubectl.agent_metrics(pod)?;
                    metric(&text, LATENCY_COUNT)
                        .ok_or_else(|| format!("{pod} on {node}: no {LATENCY_COUNT}"))
                })
            })
            .collect();
        reads
            .into_iter()
            .map(|read| {
                read.join()
                    .unwrap_or_else(|_| Err("a metrics read panicked".into()))
            })
            .collect()
    })
}

/// Brings the cluster's policy objects to `desired` (deletes, then one apply), and when
/// something was written waits until every agent programmed a change seen after the write.
pub fn converge(
    kubectl: &Kubectl,
    agents: &[(String, String)],
    applied: &mut BTreeMap<String, Value>,
    desired: BTreeMap<String, Value>,
    started: Instant,
) -> Result<(), String> {
    let gone: Vec<String> = applied
        .keys()
        .filter(|id| !desired.contains_key(*id))
        .cloned()
        .collect();
    let changed: Vec<Value> = desired
        .iter()
        .filter(|(id, object)| applied.get(*id) != Some(object))
        .map(|(_, object)| object.clone())
        .collect();
    if gone.is_empty() && changed.is_empty() {
        return Ok(());
    }
    let before = counts(kubectl, agents)?;
    let written = Instant::now();
    for id in &gone {
        kubectl.delete(id)?;
    }
    if !changed.is_empty() {
        kubectl.apply(&changed)?;
    }
    *applied = desired;
    let deadline = written + Duration::from_secs(20);
    loop {
        let now = counts(kubectl, agents)?;
        if now.iter().zip(&before).all(|(now, before)| now > before) {
            return Ok(());
        }
        if Instant::now() > deadline {
            say(
                started,
                &format!(
                    "WARNING: the agents' {LATENCY_COUNT} did not grow in 20 s after the write ({before:?} -> {now:?}); probing anyway"
                ),
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
