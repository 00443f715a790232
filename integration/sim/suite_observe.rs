//! Observe mode's closed loop on real packets, from zero.
//!
//! Namespaces x and y carry `kube-nftpol.io/observe: "true"`, z does not, and no policy exists.
//! The workloads' traffic runs (pod to pod within and across namespaces); the real agents log
//! the first packet of each connection of the observed pods, `"action":"allow"` and not
//! isolated, and nothing of z's own pods. The user leaves one flow out with `--exclude flow=ID`;
//! `kube-nftpol suggest --observed` turns the agents' logs into policies, applied at once. Then,
//! on the wire and by `evaluate`: every observed flow still connects, the excluded flow and
//! every flow nobody observed with an end in x or y are denied, and z's own traffic is
//! untouched. A second round of the traffic is logged as allowed by the suggested policies.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use kube_nftpol::flow_line::{Action, FlowLine};
use kube_nftpol::hints::{FlowEnd, Workload, WorkloadFlow};
use kube_nftpol::model::{IpProtocol, OBSERVE_ANNOTATION, Protocol};
use kube_nftpol::policy::{Endpoint, Flow as PolicyFlow, evaluate};

use crate::agent::NetnsProcess;
use crate::cluster::{self, Cluster};
use crate::conformance_data::Case;
use crate::enforcer::{Enforcer, Mode};
use crate::probes::Via;
use crate::scenario::{self, Flow, wrong_verdicts};
use crate::suite_hints::suggest;
use crate::{Result, begin, runtime, say};

/// The workloads' traffic: within and across the observed namespaces, from z into x and from
/// x to z (one side observed), and within z (nobody observes it).
const TRAFFIC: [(&str, &str, u16); 7] = [
    ("x/b", "x/a", 80),
    ("y/a", "x/a", 81),
    ("x/c", "y/b", 81),
    ("z/c", "x/c", 80),
    ("x/a", "z/b", 80),
    ("z/a", "z/b", 80),
    // The flow the user unticks.
    ("x/b", "x/c", 81),
];

const PODS: [&str; 9] = [
    "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c",
];

fn observed_case() -> Result<Case> {
    let mut case = scenario::case("observe closed loop", Vec::new())?;
    for ns in ["x", "y"] {
        case.namespace_annotations.insert(
            ns.to_owned(),
            [(OBSERVE_ANNOTATION.to_owned(), "true".to_owned())].into(),
        );
    }
    Ok(case)
}

#[test]
fn observed_traffic_becomes_policies_that_allow_exactly_it_on_real_packets() {
    let _serial = begin();
    runtime()
        .block_on(closed_loop())
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Every pod pair (other than a pod to itself) on ports 80 and 81.
fn all_pairs() -> Vec<(&'static str, &'static str, u16)> {
    PODS.iter()
        .flat_map(|from| {
            PODS.iter()
                .filter(move |to| *to != from)
                .flat_map(move |to| [80, 81].map(|port| (*from, *to, port)))
        })
        .collect()
}

fn endpoint(cluster: &Cluster, key: &str) -> Result<Endpoint> {
    let pod = cluster.pod(key).ok_or_else(|| format!("no pod {key}"))?;
    Ok(Endpoint::Ip(IpAddr::V4(pod.plan.ip)))
}

/// The flow between the workloads of two pods, as `kube-nftpol flows` names it.
fn workload_flow(case: &Case, from: &str, to: &str, port: u16) -> Result<WorkloadFlow> {
    let snapshot = case.snapshot();
    let end = |key: &str| -> Result<FlowEnd> {
        let (ns, name) = key.split_once('/').ok_or("not ns/name")?;
        let pod = snapshot
            .pods_in(ns)
            .find(|p| p.key.name == name)
            .ok_or_else(|| format!("no pod {key}"))?;
        Ok(FlowEnd::Workload(Workload::of(
            &pod.key,
            &pod.labels,
            pod.owner.as_ref(),
        )))
    };
    Ok(WorkloadFlow {
        source: end(from)?,
        destination: end(to)?,
        protocol: IpProtocol::Tcp,
        port: Some(port),
    })
}

/// The flow lines the agents wrote since `offsets`.
fn flow_lines(agents: &[NetnsProcess], offsets: &[usize]) -> Vec<FlowLine> {
    agents
        .iter()
        .zip(offsets)
        .flat_map(|(agent, offset)| {
            let text = agent.log_text();
            text.get(*offset..)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| FlowLine::parse(line).ok().flatten())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs the traffic once (each flow must connect: nothing is denied yet or it was observed),
/// then waits until the agents logged a line for each of `sides` (the observed pods' sides).
async fn run_traffic(
    cluster: &Cluster,
    enforcer: &mut Enforcer,
    traffic: &[(&'static str, &'static str, u16)],
    sides: usize,
) -> Result<Vec<FlowLine>> {
    let offsets: Vec<usize> = enforcer
        .agents()
        .iter()
        .map(|a| a.log_text().len())
        .collect();
    let flows: Vec<Flow> = traffic
        .iter()
        .map(|&(from, to, port)| Flow {
            from,
            to,
            via: Via::PodIp,
            port,
            allowed: true,
        })
        .collect();
    let wrong = wrong_verdicts(cluster, &flows).await?;
    if !wrong.is_empty() {
        return Err(format!(
            "the traffic did not connect:\n{}",
            wrong.join("\n")
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = flow_lines(enforcer.agents(), &offsets);
        let distinct: BTreeSet<(String, String, String)> = lines
            .iter()
            .map(|l| {
                (
                    format!("{}/{}", l.pod.namespace, l.pod.name),
                    l.direction.to_string(),
                    l.peer.to_string(),
                )
            })
            .collect();
        if distinct.len() >= sides || Instant::now() > deadline {
            return Ok(lines);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn closed_loop() -> Result<()> {
    let before = observed_case()?;
    let cluster = Cluster::build(cluster::plan(&before.pods)?).await?;
    let mut enforcer = Enforcer::start(Mode::Agent, &cluster, &before).await?;
    say(&format!("sim: observe mode on {} (agent)", cluster.id));

    // Each flow's sides in x or y are logged: both sides within x and y, one side between z
    // and x, none within z.
    let observed_ns = |key: &str| key.starts_with("x/") || key.starts_with("y/");
    let sides: usize = TRAFFIC
        .iter()
        .map(|(from, to, _)| usize::from(observed_ns(from)) + usize::from(observed_ns(to)))
        .sum();
    let lines = run_traffic(&cluster, &mut enforcer, &TRAFFIC, sides).await?;
    let mut problems = Vec::new();
    for line in &lines {
        let pod = format!("{}/{}", line.pod.namespace, line.pod.name);
        if !observed_ns(&pod) {
            problems.push(format!("a pod of z was logged: {}", line.to_text()));
        }
        if line.action != Action::Allow || !line.policies.is_empty() || line.allowed_by.is_some() {
            problems.push(format!("not an unisolated allow: {}", line.to_text()));
        }
    }
    let logged_sides: BTreeSet<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                format!("{}/{}", l.pod.namespace, l.pod.name),
                l.direction.to_string(),
            )
        })
        .collect();
    say(&format!(
        "sim: {} flow lines, {} pod sides logged (expected {sides} flow sides)",
        lines.len(),
        logged_sides.len()
    ));
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }

    // The user unticks one flow by its id, and applies what suggest gives, all at once.
    let (ex_from, ex_to, ex_port) = TRAFFIC[TRAFFIC.len() - 1];
    let excluded = workload_flow(&before, ex_from, ex_to, ex_port)?;
    let logs: String = enforcer
        .agents()
        .iter()
        .map(|a| a.log_text())
        .collect::<Vec<_>>()
        .join("\n");
    let exclude = format!("flow={}", excluded.id());
    let suggested = suggest(
        &cluster.manifests(),
        &logs,
        &["--observed", "--exclude", &exclude],
    )?;
    let mut after = observed_case()?;
    after.name = "observe closed loop: after".into();
    after.policies.extend(suggested);
    say(&format!(
        "sim: suggest --observed gave {} policies",
        after.policies.len()
    ));
    enforcer.apply(&cluster, &after).await?;

    // Observed flows connect; the excluded one and every unobserved flow with an end in x or
    // y are denied; z's own flows are untouched. By evaluate, and on the wire.
    let snapshot = after.snapshot();
    let observed: BTreeSet<(&str, &str, u16)> =
        TRAFFIC[..TRAFFIC.len() - 1].iter().copied().collect();
    let mut flows = Vec::new();
    for (from, to, port) in all_pairs() {
        let expected =
            observed.contains(&(from, to, port)) || !(observed_ns(from) || observed_ns(to));
        let flow = PolicyFlow {
            source: endpoint(&cluster, from)?,
            destination: endpoint(&cluster, to)?,
            protocol: Protocol::Tcp,
            port,
        };
        let allowed = evaluate(&snapshot, &flow)
            .map_err(|e| e.to_string())?
            .allowed;
        if allowed != expected {
            problems.push(format!(
                "{from} -> {to}:{port}: evaluate says allowed={allowed}, expected {expected}"
            ));
        }
        flows.push(Flow {
            from,
            to,
            via: Via::PodIp,
            port,
            allowed: expected,
        });
    }
    problems.extend(wrong_verdicts(&cluster, &flows).await?);
    if !problems.is_empty() {
        return Err(format!("after the suggestions:\n{}", problems.join("\n")));
    }

    // The observed traffic again: now allowed by the suggested policies, and logged so.
    let again = run_traffic(&cluster, &mut enforcer, &TRAFFIC[..TRAFFIC.len() - 1], 1).await?;
    let by_hint = again
        .iter()
        .filter(|l| {
            l.action == Action::Allow
                && l.allowed_by
                    .as_ref()
                    .is_some_and(|rule| rule.policy.ends_with("-hint"))
        })
        .count();
    if by_hint == 0 {
        return Err(format!(
            "no line names a suggested policy as the allowing one:\n{}",
            again
                .iter()
                .map(FlowLine::to_text)
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    say(&format!(
        "sim: after the suggestions, the {} observed flows connect, the excluded one and every \
         unobserved flow of x and y are denied ({} flows probed); {by_hint} lines name a \
         suggested policy",
        observed.len(),
        flows.len()
    ));
    Ok(())
}
