//! Suite 1: the 58 upstream Kubernetes NetworkPolicy cases on real packets.
//!
//! One cluster serves every case (the nine pods x/a ... z/c, alternating between the nodes).
//! For each case the manifests are rewritten (namespace labels, pod labels and ports,
//! policies), the enforcer brings both kernels to the compiled case, and every probe of the
//! case runs twice, to the destination's pod IP and to its Service IP, over the probe's
//! protocol. The results table (case, probes, passed, failed) is printed at the end; the test
//! fails listing every mismatch.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use kube_nftpol::model::Protocol;

use crate::api;
use crate::cluster::{self, Cluster};
use crate::conformance_data::{self, Case};
use crate::enforcer::{Enforcer, Mode};
use crate::probes::{self, Outcome, Via};
use crate::{Result, begin, runtime, say};

#[test]
fn upstream_cases_pass_on_real_packets_with_the_static_compile() {
    run(Mode::Static);
}

#[test]
fn upstream_cases_pass_on_real_packets_with_the_agent() {
    run(Mode::Agent);
}

/// The agent reads everything from a real kube-apiserver; namespaces, labels and policies
/// change through the API between cases. The API server here is v1.20, which drops `endPort`:
/// those cases run through the manifest source in the tests above, and are left out here.
#[test]
fn upstream_cases_pass_on_real_packets_with_the_agent_reading_the_api_server() {
    run(Mode::ApiAgent);
}

/// Guards the suite against a harness that times out by itself: with no ruleset loaded, every
/// probe of the TCP, UDP and SCTP default-deny cases (half of them expected denied once the
/// policy is in) must connect and reach the pod it names, by pod IP and by Service IP.
#[test]
fn without_a_ruleset_every_probe_connects_so_denials_come_from_policy() {
    let _serial = begin();
    let data = conformance_data::load();
    let cases: Vec<&Case> = data
        .cases
        .iter()
        .filter(|c| {
            c.name
                .ends_with("should support a 'default-deny-ingress' policy")
        })
        .collect();
    assert_eq!(
        cases.len(),
        3,
        "the TCP, UDP and SCTP default-deny-ingress cases"
    );
    let failures = runtime().block_on(async {
        let cluster = Cluster::build(cluster::plan(&cases[0].pods)?).await?;
        let mut failures = Vec::new();
        for case in cases {
            cluster.check_case(case)?;
            let mut planned = Vec::new();
            for probe in &case.probes {
                let protocol = Protocol::from_k8s(&probe.protocol).ok_or("protocol")?;
                for via in Via::BOTH {
                    let p = probes::between(
                        &cluster,
                        &probe.from,
                        &probe.to,
                        via,
                        probe.port,
                        protocol,
                    )?;
                    planned.push((probe, via, p));
                }
            }
            let list: Vec<_> = planned.iter().map(|(_, _, p)| *p).collect();
            let outcomes = probes::run_many(&list).await;
            for ((probe, via, _), got) in planned.iter().zip(outcomes) {
                if got != Outcome::Connected {
                    failures.push(format!(
                        "{} -> {} via {} {}/{}: {got}",
                        probe.from,
                        probe.to,
                        via.name(),
                        probe.port,
                        probe.protocol
                    ));
                }
            }
        }
        Ok::<_, String>(failures)
    });
    let failures = failures.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        failures.is_empty(),
        "with no ruleset, {} probes did not connect:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One probe that did not give the expected verdict.
struct Mismatch {
    case: String,
    from: String,
    to: String,
    via: Via,
    target: String,
    port: u16,
    protocol: String,
    expected: bool,
    got: Outcome,
}

/// One case's line in the results table.
struct Row {
    case: String,
    probes: usize,
    passed: usize,
    apply: Duration,
}

fn run(mode: Mode) {
    let _serial = begin();
    let started = Instant::now();
    let result = runtime().block_on(all_cases(mode));
    let (rows, mismatches) = result.unwrap_or_else(|e| panic!("{}: {e}", mode.name()));
    say(&table(mode, &rows, started.elapsed()));
    if !mismatches.is_empty() {
        let mut text = format!(
            "{} of {} probes gave the wrong verdict ({}):\n",
            mismatches.len(),
            rows.iter().map(|r| r.probes).sum::<usize>(),
            mode.name()
        );
        for m in &mismatches {
            let _ = writeln!(
                text,
                "  {} | {} -> {} via {} {} | {}/{} | expected {} | got {}",
                m.case,
                m.from,
                m.to,
                m.via.name(),
                m.target,
                m.port,
                m.protocol,
                if m.expected { "allowed" } else { "denied" },
                m.got
            );
        }
        panic!("{text}");
    }
}

async fn all_cases(mode: Mode) -> Result<(Vec<Row>, Vec<Mismatch>)> {
    let data = conformance_data::load();
    if data.cases.len() != 58 {
        return Err(format!(
            "expected 58 upstream cases, found {}",
            data.cases.len()
        ));
    }
    let first = &data.cases[0];
    let cluster = Cluster::build(cluster::plan(&first.pods)?).await?;
    for case in &data.cases {
        cluster.check_case(case)?;
    }
    let mut enforcer = Enforcer::start(mode, &cluster, first).await?;
    say(&format!(
        "sim: {} cases on {} ({} pods on 2 nodes, enforcer: {})",
        data.cases.len(),
        cluster.id,
        cluster.pods.len(),
        mode.name()
    ));

    let mut rows = Vec::new();
    let mut mismatches = Vec::new();
    let mut left_out = 0;
    for case in &data.cases {
        if mode == Mode::ApiAgent && case.policies.iter().any(api::uses_end_port) {
            left_out += 1;
            continue;
        }
        let apply = enforcer
            .apply(&cluster, case)
            .await
            .map_err(|e| format!("{}: {e}", case.name))?;
        let (row, found) = probe_case(&cluster, case, apply).await?;
        rows.push(row);
        mismatches.extend(found);
    }
    if left_out > 0 {
        say(&format!(
            "sim: {left_out} endPort cases left out (the v1.20 API server drops endPort)"
        ));
    }
    if rows.len() + left_out != data.cases.len() || left_out > 4 {
        return Err(format!(
            "ran {} cases and left out {left_out} of {}",
            rows.len(),
            data.cases.len()
        ));
    }
    Ok((rows, mismatches))
}

async fn probe_case(
    cluster: &Cluster,
    case: &Case,
    apply: Duration,
) -> Result<(Row, Vec<Mismatch>)> {
    let mut planned = Vec::new();
    for probe in &case.probes {
        let protocol = Protocol::from_k8s(&probe.protocol)
            .ok_or_else(|| format!("{}: unknown protocol {}", case.name, probe.protocol))?;
        if probe.from.starts_with("ip:") || probe.to.starts_with("ip:") {
            return Err(format!(
                "{}: probes from or to a bare IP ({} -> {}) are not simulated",
                case.name, probe.from, probe.to
            ));
        }
        for via in Via::BOTH {
            let p = probes::between(cluster, &probe.from, &probe.to, via, probe.port, protocol)?;
            planned.push((probe, via, p));
        }
    }
    let list: Vec<_> = planned.iter().map(|(_, _, p)| *p).collect();
    let outcomes = probes::run_many(&list).await;

    let mut mismatches = Vec::new();
    for ((probe, via, p), got) in planned.iter().zip(outcomes) {
        if got.allowed() != Some(probe.expect) {
            mismatches.push(Mismatch {
                case: case.name.clone(),
                from: probe.from.clone(),
                to: probe.to.clone(),
                via: *via,
                target: p.target.to_string(),
                port: probe.port,
                protocol: probe.protocol.clone(),
                expected: probe.expect,
                got,
            });
        }
    }
    let row = Row {
        case: case.name.clone(),
        probes: planned.len(),
        passed: planned.len() - mismatches.len(),
        apply,
    };
    Ok((row, mismatches))
}

fn table(mode: Mode, rows: &[Row], elapsed: Duration) -> String {
    let width = rows.iter().map(|r| r.case.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "\nUpstream conformance on real packets, enforcer: {}\n\n",
        mode.name()
    );
    let _ = writeln!(
        out,
        "| {:width$} | probes | passed | failed | apply ms |",
        "case"
    );
    let _ = writeln!(
        out,
        "|{}|--------|--------|--------|----------|",
        "-".repeat(width + 2)
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {:width$} | {:>6} | {:>6} | {:>6} | {:>8} |",
            r.case,
            r.probes,
            r.passed,
            r.probes - r.passed,
            r.apply.as_millis()
        );
    }
    let probes: usize = rows.iter().map(|r| r.probes).sum();
    let passed: usize = rows.iter().map(|r| r.passed).sum();
    let _ = writeln!(
        out,
        "| {:width$} | {probes:>6} | {passed:>6} | {:>6} | {:>8} |",
        format!(
            "total ({} cases, {:.1} s)",
            rows.len(),
            elapsed.as_secs_f64()
        ),
        probes - passed,
        rows.iter().map(|r| r.apply.as_millis()).sum::<u128>()
    );
    out
}
