//! Suite 2: restarting the enforcer under steady traffic changes no verdict.
//!
//! With the policies of [`scenario::restart_case`] in force, clients keep opening new TCP
//! connections (allowed and denied flows, by pod IP and Service IP, on one node and across
//! nodes) while the enforcer on both nodes is stopped (the agent: SIGKILL), left down for a
//! while, and started again. Every attempt is recorded with the phase it started and ended in
//! (before, down, restarting, after); the test fails if any allowed connection failed or any
//! denied one connected, in any phase, and prints a table of attempts per flow and phase.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::{self, Cluster};
use crate::enforcer::{Enforcer, Mode};
use crate::probes::{Outcome, Probe};
use crate::scenario::{self, Flow, RESTART_FLOWS};
use crate::{Result, begin, runtime, say};

#[test]
fn restarting_under_steady_traffic_keeps_every_verdict_with_the_in_process_dataplane() {
    run(Mode::Dataplane);
}

#[test]
fn restarting_under_steady_traffic_keeps_every_verdict_with_the_agent() {
    run(Mode::Agent);
}

#[test]
fn restarting_under_steady_traffic_keeps_every_verdict_with_the_agent_reading_the_api_server() {
    run(Mode::ApiAgent);
}

/// How long each steady phase lasts.
const PHASE: Duration = Duration::from_millis(2500);
/// Parallel client loops per denied flow (each attempt waits out the probe timeout), started
/// this far apart so some attempt is always in flight.
const DENIED_LOOPS: u32 = 4;
const DENIED_STAGGER: Duration = Duration::from_millis(250);
/// Pause between attempts of an allowed flow's loop.
const ALLOWED_PAUSE: Duration = Duration::from_millis(20);

const PHASES: [&str; 4] = ["before", "down", "restarting", "after"];

/// One connection attempt.
struct Attempt {
    flow: usize,
    started: u8,
    ended: u8,
    outcome: Outcome,
}

fn run(mode: Mode) {
    let _serial = begin();
    let result = runtime().block_on(restart(mode));
    let (attempts, restart_took) = result.unwrap_or_else(|e| panic!("{}: {e}", mode.name()));
    say(&table(mode, &attempts, restart_took));

    let mut wrong = Vec::new();
    for a in &attempts {
        let flow = &RESTART_FLOWS[a.flow];
        if a.outcome.allowed() != Some(flow.allowed) {
            wrong.push(format!(
                "  {} ({} -> {}): expected {}, got {}",
                flow.describe(),
                PHASES[usize::from(a.started)],
                PHASES[usize::from(a.ended)],
                if flow.allowed { "allowed" } else { "denied" },
                a.outcome
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}: {} of {} connection attempts got the wrong verdict around the restart:\n{}",
        mode.name(),
        wrong.len(),
        attempts.len(),
        wrong.join("\n")
    );
    for (i, flow) in RESTART_FLOWS.iter().enumerate() {
        for phase in [0u8, 1, 3] {
            assert!(
                attempts.iter().any(|a| a.flow == i && a.started == phase),
                "{}: no attempt of {} started {}: the traffic was not steady",
                mode.name(),
                flow.describe(),
                PHASES[usize::from(phase)]
            );
        }
    }
}

async fn restart(mode: Mode) -> Result<(Vec<Attempt>, Duration)> {
    let case = scenario::restart_case()?;
    let cluster = Cluster::build(cluster::plan(&case.pods)?).await?;
    scenario::check_flows(&cluster, &case, &RESTART_FLOWS)?;
    let mut enforcer = Enforcer::start(mode, &cluster, &case).await?;
    say(&format!(
        "sim: restart under traffic on {} (enforcer: {})",
        cluster.id,
        mode.name()
    ));

    let phase = AtomicU8::new(0);
    let stop = AtomicBool::new(false);
    let mut loops = Vec::new();
    for (i, flow) in RESTART_FLOWS.iter().enumerate() {
        let probe = flow.probe(&cluster)?;
        let count = if flow.allowed { 1 } else { DENIED_LOOPS };
        for n in 0..count {
            let delay = DENIED_STAGGER * n;
            loops.push(client(i, flow, probe, delay, &phase, &stop));
        }
    }
    let driver = async {
        tokio::time::sleep(PHASE).await;
        phase.store(1, Ordering::SeqCst);
        enforcer.stop();
        tokio::time::sleep(PHASE).await;
        phase.store(2, Ordering::SeqCst);
        let started = Instant::now();
        let resumed = enforcer.resume(&cluster, &case).await;
        let took = started.elapsed();
        phase.store(3, Ordering::SeqCst);
        if resumed.is_ok() {
            tokio::time::sleep(PHASE).await;
        }
        stop.store(true, Ordering::SeqCst);
        resumed.map(|()| took)
    };
    let (took, attempts) = futures::join!(driver, futures::future::join_all(loops));
    let took = took.map_err(|e| format!("restarting: {e}"))?;
    Ok((attempts.into_iter().flatten().collect(), took))
}

/// One client loop: attempts of one flow, back to back, until `stop`.
async fn client(
    index: usize,
    flow: &Flow,
    probe: Probe<'_>,
    delay: Duration,
    phase: &AtomicU8,
    stop: &AtomicBool,
) -> Vec<Attempt> {
    tokio::time::sleep(delay).await;
    let mut attempts = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let started = phase.load(Ordering::SeqCst);
        let outcome = probe.run().await;
        attempts.push(Attempt {
            flow: index,
            started,
            ended: phase.load(Ordering::SeqCst),
            outcome,
        });
        if flow.allowed {
            tokio::time::sleep(ALLOWED_PAUSE).await;
        }
    }
    attempts
}

fn table(mode: Mode, attempts: &[Attempt], restart_took: Duration) -> String {
    let mut out = format!(
        "\nRestart under steady traffic, enforcer: {} (restart to applied: {} ms)\n\n",
        mode.name(),
        restart_took.as_millis()
    );
    let width = RESTART_FLOWS
        .iter()
        .map(|f| f.describe().len())
        .max()
        .unwrap_or(4);
    let _ = write!(out, "| {:width$} | expect  |", "flow");
    for p in PHASES {
        let _ = write!(out, " {p:>10} |");
    }
    let _ = writeln!(out, " wrong |");
    let _ = writeln!(
        out,
        "|{}|---------|{}-------|",
        "-".repeat(width + 2),
        "------------|".repeat(PHASES.len())
    );
    for (i, flow) in RESTART_FLOWS.iter().enumerate() {
        let expect = if flow.allowed { "allowed" } else { "denied" };
        let _ = write!(out, "| {:width$} | {expect:7} |", flow.describe());
        for p in 0..PHASES.len() {
            let n = attempts
                .iter()
                .filter(|a| a.flow == i && usize::from(a.started) == p)
                .count();
            let _ = write!(out, " {n:>10} |");
        }
        let wrong = attempts
            .iter()
            .filter(|a| a.flow == i && a.outcome.allowed() != Some(flow.allowed))
            .count();
        let _ = writeln!(out, " {wrong:>5} |");
    }
    out
}
