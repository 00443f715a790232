//! Suite 5: a flood of denied packets against the real agent.
//!
//! With the policies of [`scenario::restart_case`] (x/a takes only TCP 80 from namespace y)
//! enforced by `kube-nftpol agent` processes with their default drop log (JSON, 10 s dedup
//! window), pod z/a sends [`FLOOD_PACKETS`] UDP datagrams to x/a's port 80 as fast as this
//! process can, from [`SOURCE_PORTS`] sockets in turn (so many client ports, one flow), while
//! the allowed flows of the restart suite are probed back to back. It proves, on node-1 (both
//! pods live there):
//!
//! - allowed traffic keeps working: every allowed probe during the flood connects;
//! - the agent's memory stays bounded: VmRSS grows less than [`RSS_GROWTH_BOUND_KIB`];
//! - the drop log stays small: the flood is one flow, so one line at once and one summary
//!   when its window closes, however many packets and source ports;
//! - what was not logged is accounted for: every dropped packet is in the default-deny
//!   counter; the kernel's log rate limit (10/s, burst 20) lets through at most 20 + 10 per
//!   second of records; `kube_nftpol_flowlog_records_total` + `lost_records_total` is at most
//!   the drop counter; and the `count`s of the lines written add up to the records received
//!   less the dedup table's drops and the undecodable ones.
//!
//! The second test floods in observe mode: namespace x annotated `kube-nftpol.io/observe`,
//! x/c (whose egress no policy isolates) sends [`FLOOD_PACKETS`] UDP datagrams to z/c on
//! [`OBSERVED_PORTS`] distinct ports: every datagram the first packet of a new flow, each one
//! logged by x/c's open-log chain within the same kernel rate limit. The allowed flows keep
//! working, the agent's memory stays bounded, the records it received stay within the limit
//! and each is in one line's count (or in the dedup table's drops), and nothing else is
//! logged.
//!
//! The figures (flood rate, RSS before and after, lines, counters) go to stderr.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Socket, Type};

use kube_nftpol::model::OBSERVE_ANNOTATION;

use crate::agent::{self, NetnsProcess};
use crate::cluster::{self, Cluster};
use crate::enforcer::{Enforcer, Mode};
use crate::probes::{Outcome, Probe};
use crate::scenario::{self, Flow, RESTART_FLOWS};
use crate::{Result, begin, nft, runtime, say};

/// Denied datagrams the flood must get onto the wire.
const FLOOD_PACKETS: u64 = 100_000;
/// Sockets (each with its own ephemeral port) the flood sends from, in turn.
const SOURCE_PORTS: usize = 64;
/// The denied flow: z/a to x/a over UDP 80 (x/a takes TCP 80 from namespace y only).
const FLOOD_FROM: &str = "z/a";
const FLOOD_TO: &str = "x/a";
const FLOOD_PORT: u16 = 80;
/// The default-deny rule of x/a's ingress chain, by its comment.
const DENY_COMMENT: &str = "default deny ingress x/a";
/// How much the agent's resident memory may grow over the flood.
const RSS_GROWTH_BOUND_KIB: u64 = 20 * 1024;
/// The agent's default dedup window, and how long after it the summary may take.
const WINDOW: Duration = Duration::from_secs(10);
const SUMMARY_SLACK: Duration = Duration::from_secs(5);
/// The observe-mode flood: x/c (observed, not isolated) to z/c, one new flow per port.
const OBSERVED_FROM: &str = "x/c";
const OBSERVED_TO: &str = "z/c";
const OBSERVED_PORTS: u16 = 50_000;
/// The compiled log limit: 10 records a second, burst 20 (`compile::Options`).
const LOG_RATE_PER_SECOND: u64 = 10;
const LOG_BURST: u64 = 20;

#[test]
fn a_flood_of_100000_denied_packets_keeps_allowed_traffic_memory_and_the_drop_log_bounded_with_the_agent()
 {
    let _serial = begin();
    let report = runtime()
        .block_on(flood())
        .unwrap_or_else(|e| panic!("flood: {e}"));
    say(&report);
}

#[test]
fn a_flood_of_new_flows_in_observe_mode_keeps_allowed_traffic_memory_and_the_log_bounded_with_the_agent()
 {
    let _serial = begin();
    let report = runtime()
        .block_on(observed_flood())
        .unwrap_or_else(|e| panic!("observe-mode flood: {e}"));
    say(&report);
}

/// What the agent on node-1 shows at one moment.
#[derive(Debug, Default, Clone, Copy)]
struct Observed {
    rss_kib: u64,
    records: u64,
    lost: u64,
    undecodable: u64,
    dedup_dropped: u64,
    dropped_by_rule: u64,
}

async fn flood() -> Result<String> {
    let case = scenario::restart_case()?;
    let cluster = Cluster::build(cluster::plan(&case.pods)?).await?;
    let allowed: Vec<Flow> = RESTART_FLOWS
        .iter()
        .copied()
        .filter(|f| f.allowed)
        .collect();
    scenario::check_flows(&cluster, &case, &allowed)?;
    let denied = Flow {
        from: FLOOD_FROM,
        to: FLOOD_TO,
        via: crate::probes::Via::PodIp,
        port: FLOOD_PORT,
        allowed: false,
    };
    let mut enforcer = Enforcer::start(Mode::Agent, &cluster, &case).await?;
    let node = &cluster.nodes[0];
    let target = cluster.pod(FLOOD_TO).ok_or("no pod x/a")?;
    let source = cluster.pod(FLOOD_FROM).ok_or("no pod z/a")?;
    if target.plan.node != 0 || source.plan.node != 0 {
        return Err("the flood's pods must both live on node-1".into());
    }
    let log_path = cluster.scratch().join(format!("agent-{}.log", node.name));
    say(&format!(
        "sim: flood of {FLOOD_PACKETS} denied packets on {} (enforcer: agent)",
        cluster.id
    ));

    let pid = enforcer
        .agents()
        .first()
        .and_then(NetnsProcess::pid)
        .ok_or("the agent of node-1 is not running")?;
    let before = observe(&cluster, pid).await?;
    let lines_before = drop_lines(&log_path)?.len();

    // The flood's sockets, made inside z/a: blocking, each bound to its own ephemeral port.
    let mut sockets = Vec::new();
    for _ in 0..SOURCE_PORTS {
        let socket = source
            .inside
            .socket(Domain::IPV4, Type::DGRAM, None)
            .await
            .map_err(|e| format!("flood socket: {e}"))?;
        socket
            .set_nonblocking(false)
            .map_err(|e| format!("flood socket: {e}"))?;
        let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        socket
            .bind(&any.into())
            .map_err(|e| format!("flood bind: {e}"))?;
        sockets.push(socket);
    }
    let to = SocketAddr::V4(SocketAddrV4::new(target.plan.ip, FLOOD_PORT));

    let flooding = AtomicBool::new(true);
    let probes: Vec<(Flow, Probe<'_>)> = allowed
        .iter()
        .map(|f| f.probe(&cluster).map(|p| (*f, p)))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let sender = tokio::task::spawn_blocking(move || send_flood(&sockets, to));
    let ((sent, failed), probed) = probe_during(sender, &probes, &flooding).await?;
    let flood_took = started.elapsed();

    // The flow's window closes 10 s after its first record; wait for everything received to
    // show up in the lines' counts.
    let deadline = Instant::now() + WINDOW + SUMMARY_SLACK;
    let (after, lines) = loop {
        let after = observe(&cluster, pid).await?;
        let lines = drop_lines(&log_path)?.split_off(lines_before);
        let counted: u64 = lines.iter().map(|l| l["count"].as_u64().unwrap_or(0)).sum();
        let received = after.records - before.records;
        let explained = counted
            + (after.dedup_dropped - before.dedup_dropped)
            + (after.undecodable - before.undecodable);
        if explained == received && lines.iter().any(|l| l.get("first_ts").is_some()) {
            break (after, lines);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{:?} after the flood: {received} records received, {counted} counted in {} \
                 lines (no summary or not all accounted for)\n{}",
                started.elapsed(),
                lines.len(),
                enforcer.agents()[0].log_tail(10)
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let accounted_at = started.elapsed();
    if let Some(status) = enforcer.agents()[0].exited() {
        return Err(format!("the agent exited during the flood ({status})"));
    }
    if !agent::ready(&node.inside).await {
        return Err("the agent is not ready after the flood".into());
    }

    let dropped = after.dropped_by_rule - before.dropped_by_rule;
    let records = after.records - before.records;
    let lost = after.lost - before.lost;
    let flood_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["pod"]["namespace"] == "x"
                && l["pod"]["name"] == "a"
                && l["protocol"] == "udp"
                && l["port"] == FLOOD_PORT
        })
        .collect();
    let mut report = format!(
        "\nFlood of denied UDP {FLOOD_FROM} -> {FLOOD_TO}:{FLOOD_PORT} from {SOURCE_PORTS} \
         source ports, agent on node-1 (pid {pid}):\n\
         sent {sent} in {:.2} s ({:.0} packets/s; {failed} sends failed), dropped by the \
         default deny: {dropped}\n\
         agent VmRSS: {} KiB before, {} KiB after (growth {} KiB, bound {RSS_GROWTH_BOUND_KIB} KiB)\n\
         records received {records}, lost {lost}, undecodable {}, left out by dedup {}; \
         not logged by the kernel's rate limit: {}\n\
         drop log: {} new lines ({} for the flood's flow), counts adding up to {}, accounted \
         {:.1} s after the flood started\n",
        flood_took.as_secs_f64(),
        sent as f64 / flood_took.as_secs_f64(),
        before.rss_kib,
        after.rss_kib,
        after.rss_kib.saturating_sub(before.rss_kib),
        after.undecodable - before.undecodable,
        after.dedup_dropped - before.dedup_dropped,
        dropped.saturating_sub(records + lost),
        lines.len(),
        flood_lines.len(),
        lines
            .iter()
            .map(|l| l["count"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        accounted_at.as_secs_f64(),
    );
    for l in &flood_lines {
        let _ = writeln!(report, "  {l}");
    }
    let _ = writeln!(report, "allowed probes during the flood:");
    for (flow, outcomes) in &probed {
        let ok = outcomes
            .iter()
            .filter(|o| **o == Outcome::Connected)
            .count();
        let _ = writeln!(
            report,
            "  {}: {ok} of {} connected",
            flow.describe(),
            outcomes.len()
        );
    }
    say(&report);

    // (a) Allowed traffic kept working.
    for (flow, outcomes) in &probed {
        if outcomes.is_empty() {
            return Err(format!(
                "{}: no probe ran during the flood",
                flow.describe()
            ));
        }
        if let Some(bad) = outcomes.iter().find(|o| **o != Outcome::Connected) {
            return Err(format!("{}: {bad} during the flood", flow.describe()));
        }
    }
    // The flood happened, and was denied.
    if sent < FLOOD_PACKETS || dropped < FLOOD_PACKETS * 99 / 100 || dropped > sent {
        return Err(format!(
            "sent {sent}, dropped by the rule {dropped}: not a flood of {FLOOD_PACKETS}"
        ));
    }
    if denied.probe(&cluster)?.run().await != Outcome::TimedOut {
        return Err("the flood's flow is not denied".into());
    }
    // (b) Memory stayed bounded.
    if after.rss_kib > before.rss_kib + RSS_GROWTH_BOUND_KIB {
        return Err(format!(
            "the agent's RSS grew from {} to {} KiB",
            before.rss_kib, after.rss_kib
        ));
    }
    // (c) One flow, one line at once and one summary (the window did not close twice: the
    // flood is far shorter than a window).
    let summaries = flood_lines
        .iter()
        .filter(|l| l.get("first_ts").is_some())
        .count();
    if flood_lines.len() != 2 || summaries != 1 || flood_took > WINDOW {
        return Err(format!(
            "expected one first line and one summary for the flood's flow, got {} lines",
            flood_lines.len()
        ));
    }
    // (d) The kernel logged at most its rate limit; whatever was logged was received or lost;
    // and every received record is in a line's count (checked while waiting above).
    let seconds = accounted_at.as_secs() + 1;
    if records + lost > LOG_BURST + LOG_RATE_PER_SECOND * seconds {
        return Err(format!(
            "{records} records received and {lost} lost in {seconds} s: more than the log limit"
        ));
    }
    if records + lost > dropped {
        return Err(format!(
            "{records} records and {lost} lost, more than the {dropped} packets dropped"
        ));
    }
    if records == 0 {
        return Err("no record of the flood reached the agent".into());
    }
    Ok(format!(
        "flood: ok ({records} of {dropped} drops logged, {} lines)",
        lines.len()
    ))
}

async fn observed_flood() -> Result<String> {
    let mut case = scenario::restart_case()?;
    case.name = "flood of new flows, observe mode".into();
    case.namespace_annotations.insert(
        "x".into(),
        [(OBSERVE_ANNOTATION.to_owned(), "true".to_owned())].into(),
    );
    let cluster = Cluster::build(cluster::plan(&case.pods)?).await?;
    let allowed: Vec<Flow> = RESTART_FLOWS
        .iter()
        .copied()
        .filter(|f| f.allowed)
        .collect();
    scenario::check_flows(&cluster, &case, &allowed)?;
    let mut enforcer = Enforcer::start(Mode::Agent, &cluster, &case).await?;
    let node = &cluster.nodes[0];
    let source = cluster.pod(OBSERVED_FROM).ok_or("no pod x/c")?;
    let target = cluster.pod(OBSERVED_TO).ok_or("no pod z/c")?;
    if target.plan.node != 0 || source.plan.node != 0 {
        return Err("the flood's pods must both live on node-1".into());
    }
    let log_path = cluster.scratch().join(format!("agent-{}.log", node.name));
    let pid = enforcer
        .agents()
        .first()
        .and_then(NetnsProcess::pid)
        .ok_or("the agent of node-1 is not running")?;
    let before = observe(&cluster, pid).await?;
    let lines_before = drop_lines(&log_path)?.len();
    let socket = source
        .inside
        .socket(Domain::IPV4, Type::DGRAM, None)
        .await
        .map_err(|e| format!("flood socket: {e}"))?;
    socket
        .set_nonblocking(false)
        .map_err(|e| format!("flood socket: {e}"))?;
    let target_ip = target.plan.ip;

    let flooding = AtomicBool::new(true);
    let probes: Vec<(Flow, Probe<'_>)> = allowed
        .iter()
        .map(|f| f.probe(&cluster).map(|p| (*f, p)))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let sender = tokio::task::spawn_blocking(move || {
        let (mut sent, mut failed) = (0u64, 0u64);
        while sent < FLOOD_PACKETS && failed < FLOOD_PACKETS {
            let port = 1000 + u16::try_from(sent % u64::from(OBSERVED_PORTS)).unwrap_or(0);
            let to = SocketAddr::V4(SocketAddrV4::new(target_ip, port));
            match socket.send_to(&sent.to_be_bytes(), &to.into()) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        (sent, failed)
    });
    let ((sent, failed), probed) = probe_during(sender, &probes, &flooding).await?;
    let flood_took = started.elapsed();

    // Each record is a flow of its own (a new port), logged at once; wait until the counts add
    // up to what was received.
    let deadline = Instant::now() + WINDOW + SUMMARY_SLACK;
    let (after, lines) = loop {
        let after = observe(&cluster, pid).await?;
        let lines = drop_lines(&log_path)?.split_off(lines_before);
        let counted: u64 = lines.iter().map(|l| l["count"].as_u64().unwrap_or(0)).sum();
        let received = after.records - before.records;
        let explained = counted
            + (after.dedup_dropped - before.dedup_dropped)
            + (after.undecodable - before.undecodable);
        if explained == received && received > 0 {
            break (after, lines);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "after the flood: {received} records received, {counted} counted in {} lines",
                lines.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let accounted_at = started.elapsed();
    let records = after.records - before.records;
    let lost = after.lost - before.lost;
    let report = format!(
        "\nObserve-mode flood of new UDP flows {OBSERVED_FROM} -> {OBSERVED_TO} on {OBSERVED_PORTS} \
         ports, agent on node-1 (pid {pid}):\n\
         sent {sent} in {:.2} s ({failed} sends failed)\n\
         agent VmRSS: {} KiB before, {} KiB after (growth {} KiB, bound {RSS_GROWTH_BOUND_KIB} KiB)\n\
         records received {records}, lost {lost}, left out by dedup {}; {} new lines, accounted \
         {:.1} s after the flood started\n",
        flood_took.as_secs_f64(),
        before.rss_kib,
        after.rss_kib,
        after.rss_kib.saturating_sub(before.rss_kib),
        after.dedup_dropped - before.dedup_dropped,
        lines.len(),
        accounted_at.as_secs_f64(),
    );
    say(&report);
    for (flow, outcomes) in &probed {
        if outcomes.is_empty() {
            return Err(format!(
                "{}: no probe ran during the flood",
                flow.describe()
            ));
        }
        if let Some(bad) = outcomes.iter().find(|o| **o != Outcome::Connected) {
            return Err(format!("{}: {bad} during the flood", flow.describe()));
        }
    }
    if sent < FLOOD_PACKETS {
        return Err(format!("sent only {sent} of {FLOOD_PACKETS}"));
    }
    if after.rss_kib > before.rss_kib + RSS_GROWTH_BOUND_KIB {
        return Err(format!(
            "the agent's RSS grew from {} to {} KiB",
            before.rss_kib, after.rss_kib
        ));
    }
    // The flood's side logs within the limit of one pod and direction; the allowed probes are
    // logged too (x is observed), and nothing of z.
    let is_flood = |l: &Value| {
        l["direction"] == "egress"
            && l["pod"]["namespace"] == "x"
            && l["pod"]["name"] == "c"
            && l["peer"]["namespace"] == "z"
            && l["peer"]["name"] == "c"
            && l["protocol"] == "udp"
    };
    let flood_records: u64 = lines
        .iter()
        .filter(|l| is_flood(l))
        .map(|l| l["count"].as_u64().unwrap_or(0))
        .sum();
    let seconds = accounted_at.as_secs() + 1;
    if flood_records == 0 || flood_records > LOG_BURST + LOG_RATE_PER_SECOND * seconds {
        return Err(format!(
            "{flood_records} records of the flood's flows in {seconds} s: none, or more than \
             the log limit"
        ));
    }
    let strays: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            !(l["action"] == "allow"
                && l["pod"]["namespace"] == "x"
                && (is_flood(l) || l["protocol"] == "tcp"))
        })
        .collect();
    if !strays.is_empty() {
        return Err(format!(
            "lines that are neither the flood's nor the probes' in x: {strays:?}"
        ));
    }
    Ok(format!(
        "observe-mode flood: ok ({flood_records} records of {sent} new flows, {records} in all, \
         {} lines)",
        lines.len()
    ))
}

/// Sends until [`FLOOD_PACKETS`] datagrams went out, round-robin over the sockets. Returns
/// (sent, failed sends). A send can fail with ENOBUFS when the device queue is full; the rule's
/// counter, not this count, says what reached the policy.
fn send_flood(sockets: &[Socket], to: SocketAddr) -> (u64, u64) {
    let to = to.into();
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut i = 0usize;
    while sent < FLOOD_PACKETS && failed < FLOOD_PACKETS {
        let socket = &sockets[i % sockets.len()];
        i += 1;
        match socket.send_to(&i.to_be_bytes(), &to) {
            Ok(_) => sent += 1,
            Err(_) => failed += 1,
        }
    }
    (sent, failed)
}

/// Probes `flow` back to back while `flooding`; the outcomes of the probes started during it.
/// Probes each of `probes` until `sender` (the flood) ends, then stops: what it sent and failed
/// to send, and each flow's outcomes.
async fn probe_during(
    sender: tokio::task::JoinHandle<(u64, u64)>,
    probes: &[(Flow, Probe<'_>)],
    flooding: &AtomicBool,
) -> Result<((u64, u64), Vec<(Flow, Vec<Outcome>)>)> {
    let probing = futures::future::join_all(
        probes
            .iter()
            .map(|(flow, probe)| probe_while(*flow, *probe, flooding)),
    );
    let stop_probing = async {
        let sent = sender.await;
        flooding.store(false, Ordering::SeqCst);
        sent
    };
    let (sent, probed) = futures::join!(stop_probing, probing);
    let sent = sent.map_err(|e| format!("the flood sender panicked: {e}"))?;
    Ok((sent, probed))
}

async fn probe_while(flow: Flow, probe: Probe<'_>, flooding: &AtomicBool) -> (Flow, Vec<Outcome>) {
    let mut outcomes = Vec::new();
    while flooding.load(Ordering::SeqCst) {
        outcomes.push(probe.run().await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (flow, outcomes)
}

/// The agent's RSS, its drop log metrics, and the default-deny counter of x/a.
async fn observe(cluster: &Cluster, pid: u32) -> Result<Observed> {
    let node = &cluster.nodes[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading the agent's /proc status: {e}"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or("no VmRSS in the agent's /proc status")?;
    let (code, metrics) = agent::http_get(&node.inside, "/metrics").await?;
    if code != 200 {
        return Err(format!("GET /metrics: {code}"));
    }
    let metric = |name: &str| -> Result<u64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .ok_or_else(|| format!("no {name} in /metrics"))
    };
    let listing = nft::run(
        node.netns.name(),
        &["list", "table", "inet", "kube-nftpol"],
        None,
    )
    .await?;
    let dropped_by_rule = listing
        .lines()
        .find(|l| l.contains(&format!("comment \"{DENY_COMMENT}\"")))
        .and_then(|l| {
            l.split_once("counter packets ")?
                .1
                .split_whitespace()
                .next()
        })
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no counted rule {DENY_COMMENT:?} in node-1's table"))?;
    Ok(Observed {
        rss_kib,
        records: metric("kube_nftpol_flowlog_records_total")?,
        lost: metric("kube_nftpol_flowlog_lost_records_total")?,
        undecodable: metric("kube_nftpol_flowlog_undecodable_total")?,
        dedup_dropped: metric("kube_nftpol_flowlog_dedup_dropped_records_total")?,
        dropped_by_rule,
    })
}

/// The complete drop log lines (JSON objects on the agent's stdout) in its log file, which
/// also holds its stderr (text).
fn drop_lines(path: &std::path::Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).map_err(|e| format!("drop log line {l:?}: {e}")))
        .collect()
}
