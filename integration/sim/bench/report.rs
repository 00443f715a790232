//! The dataplane benchmark's figures and its table: what each mode measured over its rounds
//! ([`Measured`]) and the Markdown table of ratios to no agent ([`table`]), medians over rounds
//! for rates, percentiles of the pooled samples for latencies.

use std::fmt::Write as _;
use std::time::Duration;

use kube_nftpol::compile::{Options, Ruleset};

use crate::bench::cpu_shares::CpuShares;

/// Everything measured in one mode, over all its rounds.
#[derive(Debug, Default)]
pub struct Measured {
    pub connections_per_second: Vec<f64>,
    pub bits_per_second: Vec<f64>,
    pub fresh: Vec<Duration>,
    pub kept_open: Vec<Duration>,
    pub flood_connections_per_second: Vec<f64>,
    pub flood_packets_per_second: Vec<f64>,
    /// Agent only: NFLOG records received and lost during the floods, the floods' seconds and
    /// how many floods.
    pub records: u64,
    pub lost: u64,
    pub flood_seconds: f64,
    pub floods: u32,
    /// Agent only: new connections made outside the floods, and how many of their SYNs the
    /// allowing rule counted.
    pub connections: u64,
    pub syns_through_chain: u64,
    /// Agent only: the agent's CPU time over its measuring phases, and their wall time.
    pub agent_cpu: Duration,
    pub agent_wall: Duration,
    /// Where each round's connections phase spent its CPU samples (`KNP_BENCH_PERF` only).
    pub cpu_shares: Vec<CpuShares>,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn percentile(samples: &[Duration], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted
        .get(index.min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// The table: no agent against the agent.
pub fn table(
    results: &[&Measured; 2],
    ruleset: &Ruleset,
    layout: &str,
    flood_targets: usize,
    rounds: usize,
    phase: Duration,
) -> String {
    let [base, agent] = *results;
    let mut out = String::new();
    let rules: usize = ruleset.chains.iter().map(|c| c.rules.len()).sum();
    let elements: usize = ruleset.sets.iter().map(|s| s.elements.len()).sum();
    let _ = writeln!(
        out,
        "\nDataplane benchmark: {} rounds per mode, {phase:?} phases; the agent's table on node-1: \
         {} chains, {rules} rules, {} sets, {elements} set elements\n{layout}\n",
        rounds,
        ruleset.chains.len(),
        ruleset.sets.len(),
    );
    let _ = writeln!(out, "| measure | no agent | agent | ratio | target |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | --- |");
    let mut row = |what: &str, unit: &str, a: f64, b: f64, target: &str| {
        let ratio = if a > 0.0 { b / a } else { 0.0 };
        let _ = writeln!(
            out,
            "| {what} | {a:.1} {unit} | {b:.1} {unit} | {ratio:.3} | {target} |"
        );
    };
    let cps = |m: &Measured| median(&m.connections_per_second);
    row(
        "new TCP connections/s, 4 clients",
        "/s",
        cps(base),
        cps(agent),
        ">= 0.95",
    );
    let gbps = |m: &Measured| median(&m.bits_per_second) / 1e9;
    row(
        "bulk throughput, 1 TCP stream",
        "Gbit/s",
        gbps(base),
        gbps(agent),
        ">= 0.98",
    );
    for (name, samples, p, target) in [
        ("latency p50, fresh connection", 0, 0.50, ""),
        ("latency p99, fresh connection", 0, 0.99, "<= 1.1"),
        ("latency p50, kept-open connection", 1, 0.50, ""),
        ("latency p99, kept-open connection", 1, 0.99, "<= 1.1"),
    ] {
        let pick = |m: &Measured| {
            if samples == 0 {
                percentile(&m.fresh, p)
            } else {
                percentile(&m.kept_open, p)
            }
        };
        row(name, "µs", pick(base), pick(agent), target);
    }
    let fcps = |m: &Measured| median(&m.flood_connections_per_second);
    row(
        "new TCP connections/s during the UDP flood",
        "/s",
        fcps(base),
        fcps(agent),
        "",
    );
    let fpps = |m: &Measured| median(&m.flood_packets_per_second);
    row(
        "flood packets/s sent (1 thread)",
        "/s",
        fpps(base),
        fpps(agent),
        "",
    );
    // The machine's speed drifts over a run (on 2 shared cores, by a quarter between rounds);
    // the two modes of a round ran back to back, so their ratio is what drift touches least.
    for (what, pick) in [
        (
            "connections/s",
            (|m: &Measured| &m.connections_per_second) as fn(&Measured) -> &Vec<f64>,
        ),
        ("throughput", |m| &m.bits_per_second),
    ] {
        let pairs: Vec<f64> = pick(base)
            .iter()
            .zip(pick(agent))
            .map(|(a, b)| if *a > 0.0 { b / a } else { 0.0 })
            .collect();
        let listed: Vec<String> = pairs.iter().map(|r| format!("{r:.3}")).collect();
        let _ = writeln!(
            out,
            "\n{what} ratio per round (both modes back to back): {}; median {:.3}",
            listed.join(", "),
            median(&pairs),
        );
    }
    profile_rounds(&mut out, base, agent);
    let _ = writeln!(
        out,
        "\nFlood cost on allowed traffic (connections/s during the flood / without): no agent {:.3}, agent {:.3}",
        fcps(base) / cps(base).max(1e-9),
        fcps(agent) / cps(agent).max(1e-9),
    );
    // Each flooded pod's log rule lets through its burst, then its rate (compile::Options).
    let options = Options::default();
    let limit = flood_targets as f64
        * (f64::from(agent.floods) * f64::from(options.log_burst_packets)
            + agent.flood_seconds * f64::from(options.log_rate_per_second));
    let _ = writeln!(
        out,
        "NFLOG during the floods (agent; {flood_targets} pod IPs flooded for {:.1} s in all, each \
         pod's log rule limited to {}/s with a burst of {}): {} records received ({:.0}/s), at \
         most {limit:.0} let through by the limits, {} lost",
        agent.flood_seconds,
        options.log_rate_per_second,
        options.log_burst_packets,
        agent.records,
        agent.records as f64 / agent.flood_seconds.max(1e-9),
        agent.lost,
    );
    let _ = writeln!(
        out,
        "SYNs counted by the allowing rule (the last before the default deny): {} of {} \
         connections",
        agent.syns_through_chain, agent.connections,
    );
    let _ = writeln!(
        out,
        "agent CPU while measuring (floods excluded): {:.2} s over {:.1} s ({:.1} % of one core)",
        agent.agent_cpu.as_secs_f64(),
        agent.agent_wall.as_secs_f64(),
        100.0 * agent.agent_cpu.as_secs_f64() / agent.agent_wall.as_secs_f64().max(1e-9),
    );
    out
}

/// Per profiled round: the agent's share of the CPU samples, the connection rate it predicts
/// and the rate measured.
fn profile_rounds(out: &mut String, base: &Measured, agent: &Measured) {
    if agent.cpu_shares.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nWhere the connections phases' CPU went (perf, every CPU; the prediction takes the \
         agent's chains and process out of a saturated machine):"
    );
    let rounds = base.cpu_shares.iter().zip(&agent.cpu_shares).enumerate();
    let mut predicted = Vec::new();
    for (round, (without, with)) in rounds {
        let hooks: Vec<String> = with
            .chains
            .iter()
            .map(|(hook, n)| format!("{hook} {:.1} %", with.percent(*n)))
            .collect();
        let measured = match (
            base.connections_per_second.get(round),
            agent.connections_per_second.get(round),
        ) {
            (Some(a), Some(b)) if *a > 0.0 => format!("{:.3}", b / a),
            _ => "?".to_owned(),
        };
        predicted.push(with.predicted_ratio());
        let _ = writeln!(
            out,
            "- round {}: the agent's chains {:.1} % of {} samples ({}), its process {:.2} %, idle \
             {:.1} % (no agent: {:.1} %); connections/s ratio predicted {:.3}, measured {measured}",
            round + 1,
            with.percent(with.in_chains()),
            with.samples,
            hooks.join(", "),
            with.percent(with.agent_process),
            with.percent(with.idle),
            without.percent(without.idle),
            with.predicted_ratio(),
        );
    }
    let _ = writeln!(out, "predicted ratio, median: {:.3}", median(&predicted));
}

/// Observe mode against no agent, beside the agent enforcing alone: the rates and latencies of
/// the same rounds, and the NFLOG records the logged first packets made.
pub fn observe_table(base: &Measured, enforce: &Measured, observe: &Measured) -> String {
    third_table(
        "Observe mode (the bench namespaces annotated kube-nftpol.io/observe: every new \
         connection's first packet logged through NFLOG as well)",
        "agent, observe",
        "observe mode",
        base,
        enforce,
        observe,
    )
}

/// A third mode beside the agent, both against no agent: `heading` says what it is, `column`
/// heads its figures, `short` names it in the per-round line.
pub fn third_table(
    heading: &str,
    column: &str,
    short: &str,
    base: &Measured,
    enforce: &Measured,
    observe: &Measured,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n{heading}:\n");
    let _ = writeln!(
        out,
        "| measure | no agent | agent | ratio | {column} | ratio | target |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    let mut row = |what: &str, unit: &str, pick: &dyn Fn(&Measured) -> f64, target: &str| {
        let (a, b, c) = (pick(base), pick(enforce), pick(observe));
        let ratio = |x: f64| if a > 0.0 { x / a } else { 0.0 };
        let _ = writeln!(
            out,
            "| {what} | {a:.1} {unit} | {b:.1} {unit} | {:.3} | {c:.1} {unit} | {:.3} | {target} |",
            ratio(b),
            ratio(c),
        );
    };
    row(
        "new TCP connections/s, 4 clients",
        "/s",
        &|m| median(&m.connections_per_second),
        ">= 0.95",
    );
    row(
        "bulk throughput, 1 TCP stream",
        "Gbit/s",
        &|m| median(&m.bits_per_second) / 1e9,
        ">= 0.98",
    );
    row(
        "latency p99, fresh connection",
        "µs",
        &|m| percentile(&m.fresh, 0.99),
        "<= 1.1",
    );
    row(
        "latency p99, kept-open connection",
        "µs",
        &|m| percentile(&m.kept_open, 0.99),
        "<= 1.1",
    );
    let pairs: Vec<f64> = base
        .connections_per_second
        .iter()
        .zip(&observe.connections_per_second)
        .map(|(a, b)| if *a > 0.0 { b / a } else { 0.0 })
        .collect();
    let listed: Vec<String> = pairs.iter().map(|r| format!("{r:.3}")).collect();
    let _ = writeln!(
        out,
        "\nconnections/s ratio per round, {short} to no agent (run back to back): {}; median \
         {:.3}",
        listed.join(", "),
        median(&pairs),
    );
    profile_rounds(&mut out, base, observe);
    let _ = writeln!(
        out,
        "SYNs counted by the allowing rule with {short}: {} of {} connections; agent CPU while \
         measuring: {:.1} % of one core (the agent alone: {:.1} %)",
        observe.syns_through_chain,
        observe.connections,
        100.0 * observe.agent_cpu.as_secs_f64() / observe.agent_wall.as_secs_f64().max(1e-9),
        100.0 * enforce.agent_cpu.as_secs_f64() / enforce.agent_wall.as_secs_f64().max(1e-9),
    );
    out
}
