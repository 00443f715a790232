//! Suite: hostile input against the real agent, on real packets.
//!
//! The hostile cluster of `tests/support/hostile.rs`: 31 invalid policies (bad CIDRs, excepts
//! outside their cidr or of the other family, ports outside 1-65535, endPort below port or with
//! a named port, unknown and lowercase protocols, bad port names, label keys and values past
//! their limits, bad selector operators, empty and mixed peers, a policyTypes typo) all
//! selecting `hostile/isolated`, one more beside a valid policy on `hostile/half`; valid
//! policies at the limits (10,000 ipBlocks, selectors with 16,000 values and 100 labels, label
//! keys and values at their maximum length, duplicated rules and peers, one-letter and
//! 15-character named ports, two policies named `allow` in two namespaces, a 253-character
//! policy name); a 63-character namespace with two 253-character pods that share their first
//! 250 characters. Ten pods over two nodes.
//!
//! With the agent reading the manifest directory (everything), and with the agent reading a
//! real kube-apiserver v1.20.2 (what that server stores: it refuses 27 of the invalid policies
//! (HTTP 422), stores `cidr-ipv4-mapped` as it is (Go parses it as an IPv4 CIDR), and stores the
//! four endPort ones without their `endPort`, which it does not know, making them valid
//! policies (`{endPort: 90}` alone becomes every TCP port); the test checks each of these and
//! then enforces the stored invalid one beside the valid ones), it checks:
//! - the agents load it, enforce it (the kernel holds exactly what the compiler makes of it)
//!   and stay up;
//! - every probe between every two pods (TCP and UDP, ports 80 and 81, pod IP) gets the
//!   verdict `evaluate` gives, which includes: `isolated` takes nothing (fail closed), `half`
//!   takes what the valid policy allows and nothing the invalid one meant to allow, and the
//!   hand-written verdicts of [`EXPECTED`](crate::hostile_data::EXPECTED) hold;
//! - the error is reported: the directory source logs a warning naming each invalid policy and
//!   its field, and both count them in `kube_nftpol_policies_invalid`; with the API server,
//!   the invalid policy it stored gets its `InvalidNetworkPolicy` Warning Event naming the
//!   field.

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1 as events;
use k8s_openapi::api::networking::v1 as networking;
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube_nftpol::model::{ObjectKey, Protocol};
use kube_nftpol::policy::{Endpoint, Flow, evaluate};

use crate::cluster::{self, Cluster};
use crate::conformance_data::Case;
use crate::enforcer::{Enforcer, Mode};
use crate::hostile_data::{self, EXPECTED, Invalid, NS, V120};
use crate::probes::{self, Via};
use crate::{Result, agent, begin, runtime, say};

#[test]
fn hostile_policies_and_names_fail_closed_and_match_evaluate_with_the_agent() {
    run(Mode::Agent);
}

#[test]
fn hostile_policies_and_names_fail_closed_and_match_evaluate_with_the_agent_and_the_api_server() {
    run(Mode::ApiAgent);
}

fn run(mode: Mode) {
    let _serial = begin();
    let problems = runtime()
        .block_on(hostile(mode))
        .unwrap_or_else(|e| panic!("{}: {e}", mode.name()));
    assert!(
        problems.is_empty(),
        "{}: hostile cluster:\n{}",
        mode.name(),
        problems.join("\n")
    );
}

/// The protocols and ports every pair of pods is probed on.
const PORTS: [(Protocol, u16); 4] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 81),
    (Protocol::Udp, 80),
    (Protocol::Udp, 81),
];

async fn hostile(mode: Mode) -> Result<Vec<String>> {
    let (mut case, invalid) = hostile_data::case();
    let mut problems = Vec::new();
    let stored: Vec<&Invalid> = match mode {
        Mode::ApiAgent => {
            // What v1.20.2 refuses does not reach the agent through the API.
            case.policies.retain(|p| {
                let name = p["metadata"]["name"].as_str().unwrap_or_default();
                invalid
                    .iter()
                    .all(|i| i.name != name || i.v1_20 == V120::Stores)
            });
            invalid.iter().filter(|i| i.v1_20 == V120::Stores).collect()
        }
        _ => invalid.iter().collect(),
    };
    let cluster = Cluster::build(cluster::plan(&case.pods)?).await?;
    let started = Instant::now();
    let mut enforcer = Enforcer::start(mode, &cluster, &case).await?;
    say(&format!(
        "sim: hostile cluster ({} policies, {} invalid) enforced by {} in {} ms",
        case.policies.len(),
        stored.len(),
        mode.name(),
        started.elapsed().as_millis()
    ));

    if let Some(api) = enforcer.api() {
        problems.extend(what_the_api_server_stores(&api.client, &invalid).await?);
        // Back to the case: the endPort policies it stored go again.
        enforcer.apply(&cluster, &case).await?;
    } else {
        problems.extend(check_expected(&cluster, &case)?);
    }

    problems.extend(probe_every_pair(&cluster, &case).await?);

    // Reported: log lines (directory source), the gauge, Events (API).
    for (i, agent) in enforcer.agents().iter_mut().enumerate() {
        if let Some(status) = agent.exited() {
            problems.push(format!(
                "agent {i} exited ({status})\n{}",
                agent.log_tail(30)
            ));
        }
        if mode == Mode::Agent {
            let log = agent.log_text();
            for bad in &stored {
                let policy = format!("{NS}/{}", bad.name);
                let named = log.lines().any(|line| {
                    line.contains("invalid policy, enforced fail-closed")
                        && line.contains(&policy)
                        && line.contains(&bad.field)
                });
                if !named {
                    problems.push(format!(
                        "agent {i}: no warning naming {policy} and {}",
                        bad.field
                    ));
                }
            }
        }
    }
    for node in &cluster.nodes {
        let (status, body) = agent::http_get(&node.inside, "/metrics").await?;
        let line = format!("kube_nftpol_policies_invalid {}", stored.len());
        if status != 200 || !body.lines().any(|l| l == line) {
            let got: Vec<&str> = body
                .lines()
                .filter(|l| l.starts_with("kube_nftpol_policies_invalid"))
                .collect();
            problems.push(format!(
                "{}: /metrics ({status}) lacks {line:?}: {got:?}",
                node.name
            ));
        }
    }
    if let Some(api) = enforcer.api() {
        for bad in &stored {
            problems.extend(warning_event(&api.client, bad).await?);
        }
    }
    Ok(problems)
}

/// Creates each invalid policy the case leaves out in API mode: those v1.20.2 refuses must be
/// refused (HTTP 422); those it stores without `endPort` must come back without it.
async fn what_the_api_server_stores(
    client: &kube::Client,
    invalid: &[Invalid],
) -> Result<Vec<String>> {
    let api = Api::<networking::NetworkPolicy>::namespaced(client.clone(), NS);
    let mut problems = Vec::new();
    let mut refused = Vec::new();
    let mut dropped = Vec::new();
    for bad in invalid.iter().filter(|i| i.v1_20 != V120::Stores) {
        let object: networking::NetworkPolicy =
            serde_json::from_value(bad.object.clone()).map_err(|e| e.to_string())?;
        match (api.create(&PostParams::default(), &object).await, bad.v1_20) {
            (Err(kube::Error::Api(status)), V120::Refuses) if status.code == 422 => {
                refused.push(bad.name)
            }
            (Ok(stored), V120::DropsEndPort) => {
                let text = serde_json::to_string(&stored.spec).map_err(|e| e.to_string())?;
                if text.contains("endPort") {
                    problems.push(format!("{}: stored with its endPort: {text}", bad.name));
                }
                dropped.push(bad.name);
            }
            (Err(e), _) => problems.push(format!("creating {}: unexpected error {e}", bad.name)),
            (Ok(_), _) => problems.push(format!(
                "kube-apiserver v1.20.2 stored {}, which the test thinks it refuses",
                bad.name
            )),
        }
    }
    say(&format!(
        "sim: kube-apiserver v1.20.2 refused {} invalid policies (422): {}; stored {} without \
         endPort: {}",
        refused.len(),
        refused.join(", "),
        dropped.len(),
        dropped.join(", ")
    ));
    Ok(problems)
}

/// Probes every ordered pair of pods on [`PORTS`] by pod IP; each must get `evaluate`'s
/// verdict.
async fn probe_every_pair(cluster: &Cluster, case: &Case) -> Result<Vec<String>> {
    let snapshot = cluster.snapshot(case);
    let mut list = Vec::new();
    let mut expected = Vec::new();
    for from in &cluster.pods {
        for to in &cluster.pods {
            if from.identity == to.identity {
                continue;
            }
            for (protocol, port) in PORTS {
                let flow = Flow {
                    source: endpoint(&from.identity),
                    destination: endpoint(&to.identity),
                    protocol,
                    port,
                };
                let verdict = evaluate(&snapshot, &flow).map_err(|e| e.to_string())?;
                list.push(probes::between(
                    cluster,
                    &from.identity,
                    &to.identity,
                    Via::PodIp,
                    port,
                    protocol,
                )?);
                expected.push((
                    format!(
                        "{} -> {} {protocol}/{port}",
                        short(&from.identity),
                        short(&to.identity)
                    ),
                    verdict.allowed,
                ));
            }
        }
    }
    let outcomes = probes::run_many(&list).await;
    let allowed = expected.iter().filter(|(_, a)| *a).count();
    say(&format!(
        "sim: hostile cluster: {} probes ({allowed} allowed by evaluate, {} denied)",
        list.len(),
        list.len() - allowed
    ));
    Ok(expected
        .into_iter()
        .zip(outcomes)
        .filter(|((_, allowed), got)| got.allowed() != Some(*allowed))
        .map(|((what, allowed), got)| format!("{what}: evaluate says allowed={allowed}, got {got}"))
        .collect())
}

/// The hand-written verdicts agree with `evaluate` (so the cluster still tests what it says).
fn check_expected(cluster: &Cluster, case: &Case) -> Result<Vec<String>> {
    let snapshot = cluster.snapshot(case);
    let mut problems = Vec::new();
    for (from, to, protocol, port, allowed) in EXPECTED {
        let flow = Flow {
            source: endpoint(&hostile_data::key_of(from)),
            destination: endpoint(&hostile_data::key_of(to)),
            protocol: Protocol::from_k8s(protocol).ok_or("protocol")?,
            port: *port,
        };
        let verdict = evaluate(&snapshot, &flow).map_err(|e| e.to_string())?;
        if verdict.allowed != *allowed {
            problems.push(format!(
                "{from} -> {to} {protocol}/{port}: the test expects allowed={allowed}, evaluate \
                 says {}",
                verdict.allowed
            ));
        }
    }
    Ok(problems)
}

/// The `InvalidNetworkPolicy` Warning Event of a stored invalid policy names its field.
async fn warning_event(client: &kube::Client, bad: &Invalid) -> Result<Vec<String>> {
    let events = Api::<events::Event>::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing events: {e}"))?;
        let found = list.items.into_iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(bad.name)
                && e.reason.as_deref() == Some("InvalidNetworkPolicy")
        });
        if let Some(event) = found {
            let note = event.note.unwrap_or_default();
            say(&format!("sim: {}: Event: {note}", bad.name));
            if event.type_.as_deref() != Some("Warning") || !note.contains(&bad.field) {
                return Ok(vec![format!(
                    "{}: the Event is not a Warning naming {}: {note}",
                    bad.name, bad.field
                )]);
            }
            return Ok(Vec::new());
        }
        if Instant::now() > deadline {
            return Ok(vec![format!(
                "{}: no InvalidNetworkPolicy Event within 10 s",
                bad.name
            )]);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn endpoint(key: &str) -> Endpoint {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    Endpoint::Pod(ObjectKey::new(ns, name))
}

/// A pod's key for reports: the long ones as `long-a`/`long-b`.
fn short(key: &str) -> String {
    for tail in ["a", "b"] {
        if key == hostile_data::key_of(&format!("long-{tail}")) {
            return format!("long-{tail}");
        }
    }
    key.to_owned()
}
