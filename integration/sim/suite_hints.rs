//! Suite 6: the hints closed loop on real packets.
//!
//! Start from default deny with traffic the workloads need; the real agents drop it and log
//! it; `kube-nftpol suggest --manifests` turns the agents' drop logs into policies, which are
//! applied: one round is enough, a flow denied at both ends included (its drop is logged at the
//! sender only; the receiver's side comes from the cluster's policies). Then every flow that
//! was denied connects, and every other flow between the cluster's pods keeps the verdict it
//! had before (checked on the wire, and against `policy::evaluate` before and after).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use kube_nftpol::model::{ObjectKey, Protocol};
use kube_nftpol::policy::{Endpoint, Flow as PolicyFlow, evaluate};
use serde_json::{Value, json};

use crate::cluster::{self, Cluster};
use crate::conformance_data::Case;
use crate::enforcer::{Enforcer, Mode};
use crate::probes::Via;
use crate::scenario::{self, Flow, wrong_verdicts};
use crate::{Result, agent, begin, runtime, say};

/// Default deny: all of x's traffic in and out, and y's ingress.
fn default_deny() -> Result<Case> {
    scenario::case(
        "hints closed loop",
        vec![
            scenario::policy(
                "x",
                "default-deny-all",
                json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            ),
            scenario::policy(
                "y",
                "default-deny-ingress",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            ),
        ],
    )
}

/// What the workloads need (all denied by default deny): within x, into x from y and z, out
/// of x to z, and into y from z.
const NEEDED: [(&str, &str, u16); 5] = [
    ("x/b", "x/a", 80),
    ("y/a", "x/a", 81),
    ("z/c", "x/c", 80),
    ("x/a", "z/b", 80),
    ("z/a", "y/b", 81),
];

const PODS: [&str; 9] = [
    "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c",
];

fn endpoint(key: &str) -> Endpoint {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    Endpoint::Pod(ObjectKey::new(ns, name))
}

/// Every pod pair (other than a pod to itself) on ports 80 and 81, with `evaluate`'s verdict.
fn all_flows(cluster: &Cluster, case: &Case) -> Result<Vec<Flow>> {
    let snapshot = cluster.snapshot(case);
    let mut flows = Vec::new();
    for from in PODS {
        for to in PODS.iter().filter(|to| **to != from) {
            for port in [80, 81] {
                let flow = PolicyFlow {
                    source: endpoint(from),
                    destination: endpoint(to),
                    protocol: Protocol::Tcp,
                    port,
                };
                let verdict = evaluate(&snapshot, &flow).map_err(|e| e.to_string())?;
                flows.push(Flow {
                    from,
                    to,
                    via: Via::PodIp,
                    port,
                    allowed: verdict.allowed,
                });
            }
        }
    }
    Ok(flows)
}

/// `kube-nftpol suggest --manifests DIR --format json EXTRA...` on `logs`: the suggested
/// policies.
pub(crate) fn suggest(
    manifests: &std::path::Path,
    logs: &str,
    extra: &[&str],
) -> Result<Vec<Value>> {
    let mut child = Command::new(agent::binary())
        .args(["suggest", "--format", "json", "--manifests"])
        .arg(manifests)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("kube-nftpol suggest: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(logs.as_bytes())
        .map_err(|e| format!("writing to suggest: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("kube-nftpol suggest: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kube-nftpol suggest failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let report: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("suggest's report: {e}"))?;
    let policies: Vec<Value> = report["suggestions"]
        .as_array()
        .map(|s| s.iter().map(|s| s["policy"].clone()).collect())
        .unwrap_or_default();
    if policies.is_empty() {
        return Err(format!("suggest suggested nothing: {report}"));
    }
    Ok(policies)
}

#[test]
fn suggested_policies_allow_exactly_what_was_denied_on_real_packets() {
    let _serial = begin();
    runtime()
        .block_on(closed_loop())
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn closed_loop() -> Result<()> {
    let before = default_deny()?;
    let cluster = Cluster::build(cluster::plan(&before.pods)?).await?;
    let flows_before = all_flows(&cluster, &before)?;
    let needed: BTreeSet<(&str, &str, u16)> = NEEDED.into_iter().collect();
    for flow in &flows_before {
        if needed.contains(&(flow.from, flow.to, flow.port)) && flow.allowed {
            return Err(format!("{} is not denied to begin with", flow.describe()));
        }
    }
    let mut enforcer = Enforcer::start(Mode::Agent, &cluster, &before).await?;

    // Rounds, as a user would go: the workloads try what they need, the agents drop and log
    // it, suggest turns the logs into policies, they are applied. A flow denied at both ends
    // is logged at the sender only (the receiver never sees it); suggest adds the receiver's
    // side from the manifests, so one round must do.
    let attempts: Vec<Flow> = flows_before
        .iter()
        .filter(|f| needed.contains(&(f.from, f.to, f.port)))
        .map(|f| Flow {
            allowed: true,
            ..*f
        })
        .collect();
    let mut after = default_deny()?;
    after.name = "hints closed loop: after".into();
    let mut rounds = 0;
    loop {
        let still_denied = wrong_verdicts(&cluster, &attempts).await?;
        if still_denied.is_empty() {
            break;
        }
        rounds += 1;
        if rounds > 1 {
            return Err(format!(
                "still denied after one round of hints:\n{}",
                still_denied.join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let logs: String = enforcer
            .agents()
            .iter()
            .map(|a| a.log_tail(10_000))
            .collect::<Vec<_>>()
            .join("\n");
        // The manifests of the current state: suggest keeps an earlier hint's rules.
        let suggested = suggest(&cluster.manifests(), &logs, &[])?;
        say(&format!(
            "sim: round {rounds}: {} flows still denied; suggest gave {} policies",
            still_denied.len(),
            suggested.len()
        ));
        // `kubectl apply`: a suggestion replaces the policy of its name (suggest carried that
        // policy's rules over), others are added.
        let name = |p: &Value| {
            (
                p["metadata"]["namespace"].clone(),
                p["metadata"]["name"].clone(),
            )
        };
        for policy in suggested {
            after.policies.retain(|p| name(p) != name(&policy));
            after.policies.push(policy);
        }
        enforcer.apply(&cluster, &after).await?;
    }

    // Every logged denial now connects; every other flow keeps its verdict.
    let flows_after = all_flows(&cluster, &after)?;
    let mut problems = Vec::new();
    for (was, now) in flows_before.iter().zip(&flows_after) {
        let asked = needed.contains(&(was.from, was.to, was.port));
        let expected = was.allowed || asked;
        if now.allowed != expected {
            problems.push(format!(
                "{}: evaluate says allowed={} after the hints, expected {expected}",
                now.describe(),
                now.allowed
            ));
        }
    }
    problems.extend(wrong_verdicts(&cluster, &flows_after).await?);
    if !problems.is_empty() {
        return Err(format!(
            "after applying the suggestions:\n{}",
            problems.join("\n")
        ));
    }
    say(&format!(
        "sim: after the hints, the {} denied flows connect and the other {} flows kept their verdicts",
        needed.len(),
        flows_after.len() - needed.len()
    ));
    Ok(())
}
