//! Suite 3: changing one policy takes effect for new connections without touching the chains
//! of pods it does not select.
//!
//! [`scenario::change_case`] before and after: only x's policy [`scenario::CHANGED_POLICY`]
//! changes (ingress of x/a from namespace y becomes from namespace z). Each node's table is
//! listed with rule handles before and after; the base chains and the chains of every pod the
//! changed policy does not select must keep exactly their rule handles (an enforcer that
//! replaced the table would renumber them). Probes before and after show the new verdicts for
//! new connections, and the flows the change does not concern keep theirs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kube_nftpol::compile::pod_chain_name;
use kube_nftpol::model::{Direction, ObjectKey};

use crate::cluster::{self, Cluster};
use crate::conformance_data::Case;
use crate::enforcer::{Enforcer, Mode};
use crate::probes::{self, Outcome};
use crate::scenario::{self, CHANGE_FLOWS, CHANGED_POLICY, Flow};
use crate::{Result, begin, nft, runtime, say};

#[test]
fn changing_one_policy_flips_new_connections_and_keeps_other_pods_chains_with_the_in_process_dataplane()
 {
    run(Mode::Dataplane);
}

#[test]
fn changing_one_policy_flips_new_connections_and_keeps_other_pods_chains_with_the_agent() {
    run(Mode::Agent);
}

fn run(mode: Mode) {
    let _serial = begin();
    let problems = runtime()
        .block_on(change(mode))
        .unwrap_or_else(|e| panic!("{}: {e}", mode.name()));
    assert!(
        problems.is_empty(),
        "{}: changing {CHANGED_POLICY}:\n{}",
        mode.name(),
        problems.join("\n")
    );
}

/// The compiler's base chains.
const BASE_CHAINS: [&str; 2] = ["postrouting", "input"];

/// Per node: chain name to its rule handles.
type Handles = Vec<BTreeMap<String, Vec<u64>>>;

async fn change(mode: Mode) -> Result<Vec<String>> {
    let before = scenario::change_case(false)?;
    let after = scenario::change_case(true)?;
    let cluster = Cluster::build(cluster::plan(&before.pods)?).await?;
    let flows_before: Vec<Flow> = CHANGE_FLOWS.iter().map(|(f, _)| *f).collect();
    let flows_after: Vec<Flow> = CHANGE_FLOWS
        .iter()
        .map(|(f, allowed)| Flow {
            allowed: *allowed,
            ..*f
        })
        .collect();
    scenario::check_flows(&cluster, &before, &flows_before)?;
    scenario::check_flows(&cluster, &after, &flows_after)?;

    let mut enforcer = Enforcer::start(mode, &cluster, &before).await?;
    let mut problems = probe(&cluster, "before the change", &flows_before).await?;
    let handles_before = handles(&cluster).await?;
    let took = enforcer.apply(&cluster, &after).await?;
    problems.extend(probe(&cluster, "after the change", &flows_after).await?);
    let handles_after = handles(&cluster).await?;

    let selected = selected_chains(&cluster, &before, &after);
    let mut report = format!(
        "\nPolicy change, enforcer: {} (applied in {} ms); rule handles per chain:\n",
        mode.name(),
        took.as_millis()
    );
    for (i, node) in cluster.nodes.iter().enumerate() {
        let (old, new) = (&handles_before[i], &handles_after[i]);
        let mut checked_pod_chains = 0;
        for (chain, old_handles) in old {
            let new_handles = new.get(chain);
            let kept = new_handles == Some(old_handles);
            let selected = selected.contains(chain);
            let _ = writeln!(
                report,
                "  {}: {chain:<20} {:<36} {old_handles:?} -> {}",
                node.name,
                if selected {
                    "(selected by the changed policy)"
                } else {
                    ""
                },
                new_handles.map_or("gone".to_owned(), |h| format!("{h:?}"))
            );
            // The agent's own extras (anti-spoofing) are its business; base chains and the
            // chains of pods the policy does not select must stay as they were.
            if !selected && !nft::is_tolerated_extra(chain) {
                if !BASE_CHAINS.contains(&chain.as_str()) {
                    checked_pod_chains += 1;
                }
                if !kept {
                    problems.push(format!(
                        "{}: chain {chain} is not selected by {CHANGED_POLICY}, yet its rule \
                         handles changed: {old_handles:?} -> {new_handles:?}",
                        node.name
                    ));
                }
            }
        }
        if checked_pod_chains == 0 {
            problems.push(format!(
                "{}: no pod chain outside the changed policy to check (the scenario is wrong)",
                node.name
            ));
        }
    }
    say(&report);
    Ok(problems)
}

/// Chains of pods the changed policy selects, before or after the change.
fn selected_chains(cluster: &Cluster, before: &Case, after: &Case) -> BTreeSet<String> {
    let key = ObjectKey::new("x", CHANGED_POLICY);
    let mut chains = BTreeSet::new();
    for case in [before, after] {
        let snapshot = cluster.snapshot(case);
        let Some(policy) = snapshot.policy(&key) else {
            continue;
        };
        for pod in snapshot.pods().filter(|p| policy.selects(p)) {
            for direction in [Direction::Ingress, Direction::Egress] {
                chains.insert(pod_chain_name(pod, direction));
            }
        }
    }
    chains
}

async fn handles(cluster: &Cluster) -> Result<Handles> {
    let mut out = Vec::new();
    for node in &cluster.nodes {
        let listing = nft::list_table(node.netns.name())
            .await?
            .ok_or_else(|| format!("{}: the table is missing", node.name))?;
        out.push(nft::rule_handles(&listing)?);
    }
    Ok(out)
}

async fn probe(cluster: &Cluster, when: &str, flows: &[Flow]) -> Result<Vec<String>> {
    let list = flows
        .iter()
        .map(|f| f.probe(cluster))
        .collect::<Result<Vec<_>>>()?;
    let outcomes = probes::run_many(&list).await;
    Ok(flows
        .iter()
        .zip(outcomes)
        .filter(|(f, got)| got.allowed() != Some(f.allowed))
        .map(|(f, got): (&Flow, Outcome)| {
            format!(
                "{when}: {}: expected {}, got {got}",
                f.describe(),
                if f.allowed { "allowed" } else { "denied" }
            )
        })
        .collect())
}
