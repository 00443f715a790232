//! Suite 6: flow metrics and audit mode, with `kube-nftpol agent` processes and real packets.
//!
//! - Flow metrics: connections a policy allows move `kube_nftpol_flows_allowed_total` of that
//!   policy by exactly one per connection, whatever the packets it carries (TCP with its
//!   handshake, data and teardown; UDP with its reply); denied ones move
//!   `kube_nftpol_flows_denied_total` of their namespace and direction by their SYNs. A policy
//!   change that refills the chain (new rules, counters from zero) keeps the series monotonic,
//!   and deleting a policy removes its series. `/metrics` is read from inside each node.
//! - Audit mode: with namespaces annotated `kube-nftpol.io/enforcement: audit`, every flow
//!   connects; the agents' drop logs hold one `"action":"audit"` line for each side that
//!   `evaluate` denies and none for the rest; `mode="audit"` counts them. With the annotation
//!   removed, the same would-be-denied flows are denied again.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use kube_nftpol::model::{ENFORCEMENT_ANNOTATION, ObjectKey, Protocol};
use kube_nftpol::policy::{DirectionVerdict, Endpoint, Flow, Verdict, evaluate};
use serde_json::{Value, json};

use crate::agent::{self, NetnsProcess};
use crate::cluster::{self, Cluster};
use crate::conformance_data::Case;
use crate::enforcer::{Enforcer, Mode};
use crate::probes::{self, Outcome, Via};
use crate::scenario::{self, policy};
use crate::{Result, begin, nft, runtime, say};

#[test]
fn flow_metrics_count_allowed_connections_per_policy_and_denied_packets_with_the_agent() {
    let _serial = begin();
    runtime()
        .block_on(flow_metrics())
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn audit_mode_lets_every_flow_through_and_logs_exactly_the_would_be_drops_with_the_agent() {
    let _serial = begin();
    runtime()
        .block_on(audit_mode())
        .unwrap_or_else(|e| panic!("{e}"));
}

/// How long the metrics and the drop log may take to show what the probes did.
const SETTLE: Duration = Duration::from_secs(10);

/// Connections of one flow, made one after the other.
#[derive(Debug, Clone, Copy)]
struct Probed {
    from: &'static str,
    to: &'static str,
    via: Via,
    port: u16,
    protocol: Protocol,
}

impl Probed {
    fn describe(&self) -> String {
        format!(
            "{} -> {} {}/{} via {}",
            self.from,
            self.to,
            self.protocol,
            self.port,
            self.via.name()
        )
    }

    /// What the evaluator says of it.
    fn verdict(&self, cluster: &Cluster, case: &Case) -> Result<Verdict> {
        let endpoint = |key: &str| {
            let (ns, name) = key.split_once('/').unwrap_or(("", key));
            Endpoint::Pod(ObjectKey::new(ns, name))
        };
        let flow = Flow {
            source: endpoint(self.from),
            destination: endpoint(self.to),
            protocol: self.protocol,
            port: self.port,
        };
        evaluate(&cluster.snapshot(case), &flow).map_err(|e| format!("{}: {e}", self.describe()))
    }

    /// Makes `times` connections, one at a time; their outcomes.
    async fn run(&self, cluster: &Cluster, times: usize) -> Result<Vec<Outcome>> {
        let probe = probes::between(
            cluster,
            self.from,
            self.to,
            self.via,
            self.port,
            self.protocol,
        )?;
        let mut outcomes = Vec::new();
        for _ in 0..times {
            outcomes.push(probe.run().await);
        }
        Ok(outcomes)
    }
}

const fn probed(
    from: &'static str,
    to: &'static str,
    via: Via,
    port: u16,
    protocol: Protocol,
) -> Probed {
    Probed {
        from,
        to,
        via,
        port,
        protocol,
    }
}

// --- Metrics ----------------------------------------------------------------------------------

/// The flow series of `/metrics`, summed over both nodes: series (name and labels) to value.
type Series = BTreeMap<String, u64>;

async fn flow_series(cluster: &Cluster) -> Result<Series> {
    let mut series = Series::new();
    for node in &cluster.nodes {
        let (status, body) = agent::http_get(&node.inside, "/metrics").await?;
        if status != 200 {
            return Err(format!("{}: /metrics answered {status}", node.name));
        }
        for line in body.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if !name.starts_with("kube_nftpol_flows_") || name.contains("read_errors") {
                continue;
            }
            let value: u64 = value
                .parse()
                .map_err(|_| format!("{}: bad metric line {line:?}", node.name))?;
            *series.entry(name.to_owned()).or_default() += value;
        }
    }
    Ok(series)
}

fn allowed(namespace: &str, policy: &str, direction: &str) -> String {
    format!(
        "kube_nftpol_flows_allowed_total{{namespace=\"{namespace}\",policy=\"{policy}\",direction=\"{direction}\"}}"
    )
}

fn denied(namespace: &str, direction: &str, mode: &str) -> String {
    format!(
        "kube_nftpol_flows_denied_total{{namespace=\"{namespace}\",direction=\"{direction}\",mode=\"{mode}\"}}"
    )
}

/// Per series, how much it grew from `before` to `after` (only the series that moved).
fn growth(before: &Series, after: &Series) -> Result<Series> {
    let mut moved = Series::new();
    for (name, value) in after {
        let old = before.get(name).copied().unwrap_or(0);
        if *value < old {
            return Err(format!("{name} went down: {old} -> {value}"));
        }
        if *value > old {
            moved.insert(name.clone(), value - old);
        }
    }
    Ok(moved)
}

/// Scrapes until every series in `at_least` grew by at least its value since `before` (or
/// [`SETTLE`] passed), then returns the growth of every series.
async fn settled_growth(cluster: &Cluster, before: &Series, at_least: &Series) -> Result<Series> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let moved = growth(before, &flow_series(cluster).await?)?;
        let done = at_least
            .iter()
            .all(|(name, n)| moved.get(name).is_some_and(|m| m >= n));
        if done || Instant::now() > deadline {
            return Ok(moved);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The metrics scenario: x/a takes TCP 80 and UDP 81 from namespace y; z/b may send only to
/// namespace x. `second_rule` gives x/a's policy a second rule (TCP 82 from x/c): the change
/// that refills x/a's chain, visible in the rules' comments so the harness waits for it.
/// `with_egress_policy: false` deletes z's policy.
fn metrics_case(second_rule: bool, with_egress_policy: bool) -> Result<Case> {
    let mut ingress = vec![json!({
        "from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
        "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "UDP"}],
    })];
    if second_rule {
        ingress.push(json!({
            "from": [{"podSelector": {"matchLabels": {"pod": "c"}}}],
            "ports": [{"port": 82, "protocol": "TCP"}],
        }));
    }
    let mut policies = vec![policy(
        "x",
        "a-from-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": ingress}),
    )];
    if with_egress_policy {
        policies.push(policy(
            "z",
            "b-to-x",
            json!({
                "podSelector": {"matchLabels": {"pod": "b"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
            }),
        ));
    }
    scenario::case("flow metrics", policies)
}

/// Placement: x/a, x/c, y/b, z/a on node-1; x/b, y/a, y/c, z/b on node-2.
const ALLOWED_TCP: Probed = probed("y/a", "x/a", Via::PodIp, 80, Protocol::Tcp);
const ALLOWED_UDP: Probed = probed("y/b", "x/a", Via::ServiceIp, 81, Protocol::Udp);
const ALLOWED_EGRESS: Probed = probed("z/b", "x/b", Via::PodIp, 80, Protocol::Tcp);
const DENIED_INGRESS: Probed = probed("z/a", "x/a", Via::PodIp, 80, Protocol::Tcp);
const DENIED_EGRESS: Probed = probed("z/b", "y/a", Via::ServiceIp, 80, Protocol::Tcp);

/// Connections per allowed flow.
const CONNECTIONS: usize = 3;

async fn flow_metrics() -> Result<()> {
    let case = metrics_case(false, true)?;
    let cluster = Cluster::build(cluster::plan(&case.pods)?).await?;
    let mut enforcer = Enforcer::start(Mode::Agent, &cluster, &case).await?;
    say(&format!("sim: flow metrics on {} (agent)", cluster.id));
    let flows = [
        (ALLOWED_TCP, true),
        (ALLOWED_UDP, true),
        (ALLOWED_EGRESS, true),
        (DENIED_INGRESS, false),
        (DENIED_EGRESS, false),
    ];
    for (flow, allowed) in &flows {
        let verdict = flow.verdict(&cluster, &case)?;
        if verdict.allowed != *allowed {
            return Err(format!(
                "{}: the evaluator disagrees with the test",
                flow.describe()
            ));
        }
    }

    let before = flow_series(&cluster).await?;
    let mut failures = Vec::new();
    for (flow, allowed) in &flows {
        let times = if *allowed { CONNECTIONS } else { 1 };
        for outcome in flow.run(&cluster, times).await? {
            if outcome.allowed() != Some(*allowed) {
                failures.push(format!("{}: {outcome}", flow.describe()));
            }
        }
    }
    if !failures.is_empty() {
        return Err(format!("wrong verdicts:\n{}", failures.join("\n")));
    }
    let n = CONNECTIONS as u64;
    let expected_allowed: Series = [
        (allowed("x", "a-from-y", "ingress"), 2 * n),
        (allowed("z", "b-to-x", "egress"), n),
    ]
    .into();
    let denied_x = denied("x", "ingress", "enforce");
    let denied_z = denied("z", "egress", "enforce");
    let mut wanted = expected_allowed.clone();
    wanted.insert(denied_x.clone(), 1);
    wanted.insert(denied_z.clone(), 1);
    let moved = settled_growth(&cluster, &before, &wanted).await?;
    say(&format!("flow series that moved: {moved:#?}"));

    // Exactly one per allowed connection, although each carried several packets each way.
    let mut problems = Vec::new();
    for (name, n) in &expected_allowed {
        if moved.get(name) != Some(n) {
            problems.push(format!(
                "{name}: moved by {:?}, expected {n}",
                moved.get(name)
            ));
        }
    }
    // A denied connect of one second sends its SYN and maybe one retransmission.
    for name in [&denied_x, &denied_z] {
        if !moved.get(name).is_some_and(|n| (1..=2).contains(n)) {
            problems.push(format!(
                "{name}: moved by {:?}, expected 1 or 2",
                moved.get(name)
            ));
        }
    }
    let unexpected: Vec<&String> = moved.keys().filter(|k| !wanted.contains_key(*k)).collect();
    if !unexpected.is_empty() {
        problems.push(format!("series that should not have moved: {unexpected:?}"));
    }

    // A change that refills x/a's chain: its rules are new, their counters start from zero,
    // and the series goes on from where it was. (Read just before the change, so nothing the
    // old rules counted is lost: see `docs/observability.md`, "What the flow counters count".)
    let before_change = flow_series(&cluster).await?;
    let handles_before = x_a_handles(&cluster).await?;
    enforcer.apply(&cluster, &metrics_case(true, true)?).await?;
    let handles_after = x_a_handles(&cluster).await?;
    if handles_after.iter().any(|h| handles_before.contains(h)) {
        problems.push(format!(
            "x/a's chain was not refilled: handles {handles_before:?} -> {handles_after:?}"
        ));
    }
    for outcome in ALLOWED_TCP.run(&cluster, 2).await? {
        if outcome != Outcome::Connected {
            problems.push(format!(
                "{} after the change: {outcome}",
                ALLOWED_TCP.describe()
            ));
        }
    }
    let series = allowed("x", "a-from-y", "ingress");
    let after_change =
        settled_growth(&cluster, &before_change, &[(series.clone(), 2)].into()).await?;
    if after_change.get(&series) != Some(&2) {
        problems.push(format!(
            "{series} after the chain was refilled: moved by {:?} from {:?}, expected 2",
            after_change.get(&series),
            before_change.get(&series)
        ));
    }

    // Deleting z's policy removes its series; namespace z's denied series stays.
    enforcer
        .apply(&cluster, &metrics_case(true, false)?)
        .await?;
    let gone = allowed("z", "b-to-x", "egress");
    let deadline = Instant::now() + SETTLE;
    let mut series = flow_series(&cluster).await?;
    while series.contains_key(&gone) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        series = flow_series(&cluster).await?;
    }
    if series.contains_key(&gone) {
        problems.push(format!(
            "{gone} is still served after its policy was deleted"
        ));
    }
    if !series.contains_key(&denied_z) {
        problems.push(format!("{denied_z} went, but namespace z still exists"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let logs: Vec<String> = enforcer.agents().iter().map(|a| a.log_tail(15)).collect();
        Err(format!(
            "flow metrics:\n{}\n{}",
            problems.join("\n"),
            logs.join("\n")
        ))
    }
}

/// The rule handles of x/a's ingress chain (on node-1).
async fn x_a_handles(cluster: &Cluster) -> Result<Vec<u64>> {
    let node = &cluster.nodes[0];
    let listing = nft::list_table(node.netns.name())
        .await?
        .ok_or_else(|| format!("{}: the table is missing", node.name))?;
    nft::rule_handles(&listing)?
        .remove("in_x_a")
        .ok_or_else(|| format!("{}: no chain in_x_a", node.name))
}

// --- Audit mode -------------------------------------------------------------------------------

/// The audit scenario: every pod of x is isolated for ingress and x/a takes TCP 80 from
/// namespace y; z/b may send only to namespace x. With `audited`, namespaces x and z carry the
/// audit annotation.
fn audit_case(audited: bool) -> Result<Case> {
    let mut case = scenario::case(
        if audited { "audit" } else { "audit removed" },
        vec![
            policy(
                "x",
                "deny-ingress",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            ),
            policy(
                "x",
                "a-from-y",
                json!({
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                                 "ports": [{"port": 80, "protocol": "TCP"}]}],
                }),
            ),
            policy(
                "z",
                "b-to-x",
                json!({
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
                }),
            ),
        ],
    )?;
    if audited {
        for ns in ["x", "z"] {
            let annotations = [(ENFORCEMENT_ANNOTATION.to_owned(), "audit".to_owned())].into();
            case.namespace_annotations.insert(ns.into(), annotations);
        }
    }
    Ok(case)
}

/// Allowed and would-be-denied flows, on one node and across nodes, by pod and Service IP.
const AUDIT_FLOWS: [Probed; 8] = [
    probed("y/a", "x/a", Via::PodIp, 80, Protocol::Tcp),
    probed("z/a", "x/a", Via::PodIp, 80, Protocol::Tcp),
    probed("y/b", "x/b", Via::ServiceIp, 80, Protocol::Tcp),
    probed("z/b", "y/a", Via::PodIp, 80, Protocol::Tcp),
    probed("z/b", "x/c", Via::ServiceIp, 81, Protocol::Tcp),
    probed("x/b", "y/b", Via::PodIp, 80, Protocol::Tcp),
    probed("z/c", "y/c", Via::PodIp, 81, Protocol::Tcp),
    probed("z/b", "z/c", Via::ServiceIp, 80, Protocol::Tcp),
];

/// A drop log line, as far as this suite compares them: action, direction, policed pod,
/// source, destination (after DNAT) and destination port.
type LogLine = (String, String, String, IpAddr, IpAddr, u16);

/// The drop log lines the agents wrote after `offsets` (the logs' lengths before).
fn log_lines(agents: &[NetnsProcess], offsets: &[usize]) -> Vec<LogLine> {
    let mut lines = Vec::new();
    for (agent, offset) in agents.iter().zip(offsets) {
        let text = agent.log_text();
        for line in text.get(*offset..).unwrap_or_default().lines() {
            let Ok(record) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let text = |pointer: &str| record.pointer(pointer).and_then(Value::as_str);
            let parsed = (|| {
                Some((
                    text("/action")?.to_owned(),
                    text("/direction")?.to_owned(),
                    format!("{}/{}", text("/pod/namespace")?, text("/pod/name")?),
                    text("/source")?.parse().ok()?,
                    text("/destination")?.parse().ok()?,
                    u16::try_from(record.get("port")?.as_u64()?).ok()?,
                ))
            })();
            lines.extend(parsed);
        }
    }
    lines.sort();
    lines
}

fn log_offsets(agents: &[NetnsProcess]) -> Vec<usize> {
    agents.iter().map(|a| a.log_text().len()).collect()
}

/// The sides of `flow` that `verdict` denies, as drop log lines with `action`.
fn denied_sides(cluster: &Cluster, flow: &Probed, verdict: &Verdict, action: &str) -> Vec<LogLine> {
    let ip = |key: &str| cluster.pod(key).map(|p| IpAddr::V4(p.plan.ip));
    let (Some(source), Some(destination)) = (ip(flow.from), ip(flow.to)) else {
        return Vec::new();
    };
    [("egress", &verdict.egress), ("ingress", &verdict.ingress)]
        .into_iter()
        .filter_map(|(direction, side)| match side {
            DirectionVerdict::Denied { pod, .. } => Some((
                action.to_owned(),
                direction.to_owned(),
                pod.to_string(),
                source,
                destination,
                flow.port,
            )),
            _ => None,
        })
        .collect()
}

async fn audit_mode() -> Result<()> {
    let audited = audit_case(true)?;
    let enforced = audit_case(false)?;
    let cluster = Cluster::build(cluster::plan(&audited.pods)?).await?;
    let mut enforcer = Enforcer::start(Mode::Agent, &cluster, &audited).await?;
    say(&format!("sim: audit mode on {} (agent)", cluster.id));

    let mut expected = Vec::new();
    let mut would_be_denied = Vec::new();
    for flow in &AUDIT_FLOWS {
        let verdict = flow.verdict(&cluster, &audited)?;
        if verdict != flow.verdict(&cluster, &enforced)? {
            return Err(format!(
                "{}: the annotation changed evaluate's verdict",
                flow.describe()
            ));
        }
        expected.extend(denied_sides(&cluster, flow, &verdict, "audit"));
        if !verdict.allowed {
            would_be_denied.push((*flow, denied_sides(&cluster, flow, &verdict, "deny")));
        }
    }
    expected.sort();
    if would_be_denied.len() < 4 || would_be_denied.len() == AUDIT_FLOWS.len() {
        return Err("the scenario should mix allowed and would-be-denied flows".into());
    }

    // Audited: everything connects, and the log holds exactly the would-be drops.
    let before = flow_series(&cluster).await?;
    let offsets = log_offsets(enforcer.agents());
    let mut problems = Vec::new();
    for flow in &AUDIT_FLOWS {
        for outcome in flow.run(&cluster, 1).await? {
            if outcome != Outcome::Connected {
                problems.push(format!("audited: {}: {outcome}", flow.describe()));
            }
        }
    }
    let deadline = Instant::now() + SETTLE;
    let mut logged = log_lines(enforcer.agents(), &offsets);
    while logged.len() < expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        logged = log_lines(enforcer.agents(), &offsets);
    }
    // Late lines would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    logged = log_lines(enforcer.agents(), &offsets);
    say(&format!(
        "audit lines expected: {expected:#?}\nlogged: {logged:#?}"
    ));
    if logged != expected {
        problems.push(format!(
            "the drop log differs from evaluate's denials:\n  expected {expected:?}\n  logged   {logged:?}"
        ));
    }
    // Audited packets are accepted: one first packet per connection, no retransmission.
    let mut wanted = Series::new();
    for (_, direction, pod, ..) in &expected {
        let namespace = pod.split('/').next().unwrap_or_default();
        *wanted
            .entry(denied(namespace, direction, "audit"))
            .or_default() += 1;
    }
    let moved = settled_growth(&cluster, &before, &wanted).await?;
    for (name, n) in &wanted {
        if moved.get(name) != Some(n) {
            problems.push(format!(
                "{name}: moved by {:?}, expected {n}",
                moved.get(name)
            ));
        }
    }
    if moved.keys().any(|k| k.contains("mode=\"enforce\"")) {
        problems.push(format!(
            "an enforced denial was counted while auditing: {moved:?}"
        ));
    }

    // The annotation removed: the same flows are denied again, and logged as such.
    enforcer.apply(&cluster, &enforced).await?;
    let offsets = log_offsets(enforcer.agents());
    for flow in &AUDIT_FLOWS {
        let denied = would_be_denied
            .iter()
            .any(|(f, _)| f.describe() == flow.describe());
        for outcome in flow.run(&cluster, 1).await? {
            if outcome.allowed() != Some(!denied) {
                problems.push(format!("enforced: {}: {outcome}", flow.describe()));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logged = log_lines(enforcer.agents(), &offsets);
    for (flow, sides) in &would_be_denied {
        // The first side that denies drops the packet: an egress drop leaves no ingress line.
        if let Some(first) = sides.first()
            && !logged.contains(first)
        {
            problems.push(format!(
                "enforced: {}: no deny line {first:?}",
                flow.describe()
            ));
        }
    }
    if logged.iter().any(|l| l.0 != "deny") {
        problems.push(format!("enforced: lines other than deny: {logged:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("audit mode:\n{}", problems.join("\n")))
    }
}
