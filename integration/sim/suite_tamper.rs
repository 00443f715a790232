//! The tamper suite: changes made to the agent's table behind its back are repaired within the repair
//! interval, and the gap is measured.
//!
//! The agent runs on both nodes ([`Mode::Agent`]) with `--resync-interval-secs 2`, enforcing
//! the restart suite's policies (x/a takes TCP 80 from namespace y only; z/b may talk only to
//! namespace x) under steady probes of [`RESTART_FLOWS`] ([`steady`]: a new attempt of
//! every flow every 262 ms, and as many as fit while a denied flow is open). On node-1,
//! where x/a lives, the test changes the table with `nft`, one kind of change at a time
//! ([`Tamper`]): the table flushed; deleted; an `accept` inserted at the top of x/a's ingress
//! chain; at the top of the `postrouting` base chain; y/a's address deleted from the peer set
//! of x/a's policy; x/a's default-deny rule deleted; and x/a's default deny turned into an
//! accept (same comment, same length, so only the fingerprint sees it) just before a policy
//! change makes the agent update other objects of node-1's table (timed just after a check,
//! so the update comes first; an update that reads the whole table back repairs the edit at
//! once, a small one leaves it to the next check; either way it must never be adopted, and
//! the report says which repaired it).
//!
//! For each: the table is polled every 20 ms; the gap runs from the start of the `nft` command
//! that tampers to the first listing that equals again exactly what the compiler makes of the
//! cluster ([`nft::exact_differences`]: every object and every rule's expressions, in order).
//! The test asserts the gap is at most the interval plus [`SLACK`], that
//! `kube_nftpol_dataplane_repairs_total` went up by exactly one on node-1 and not at all on
//! node-2, and that every attempt that did not overlap a gap got the evaluator's verdict.
//! Attempts overlapping a gap are not judged (with the table deleted, anything passes): they
//! are counted, and those that got the wrong verdict printed per flow.
//!
//! Last, another table in node-1 (`inet bystander`) is created and then edited: after two
//! intervals it, and kube-proxy's table, are exactly as left, and no repair was counted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kube_nftpol::compile::{self, Ruleset, SetElement, TABLE_FAMILY, TABLE_NAME};
use kube_nftpol::model::{Direction, ObjectKey};
use serde_json::json;

use crate::cluster::{self, Cluster};
use crate::conformance_data::Case;
use crate::enforcer::{Enforcer, Mode};
use crate::scenario::{self, RESTART_FLOWS, wrong_verdicts};
use crate::steady::{self, Attempt};
use crate::{Result, agent, begin, kube_proxy, nft, runtime, say};

/// The agent's `--resync-interval-secs` in this suite.
const RESYNC_INTERVAL: Duration = Duration::from_secs(2);
/// What the repair may take beyond the interval: one `nft` listing, a full replace and its
/// read-back, on a machine shared with other builds.
const SLACK: Duration = Duration::from_secs(3);
/// Steady traffic before each change and after each repair.
const SETTLE: Duration = Duration::from_millis(1200);
/// Added to [`SETTLE`] before change number `i`: `i` times this, modulo the interval, so the
/// changes fall at different points of the agent's check period.
const PHASE_STEP: Duration = Duration::from_millis(700);
/// How often the test lists the table while it waits for the repair.
const POLL: Duration = Duration::from_millis(20);
/// Grid loops per flow (a new attempt of every flow every 262 ms).
const LOOPS: u32 = 4;
/// Pause after a connected attempt.
const PAUSE: Duration = Duration::from_millis(20);

const REPAIRS: &str = "kube_nftpol_dataplane_repairs_total";

/// A change made to the agent's table behind its back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    FlushTable,
    DeleteTable,
    AcceptAtTopOfPodChain,
    AcceptAtTopOfBaseChain,
    PeerElementDeleted,
    DefaultDenyDeleted,
    DefaultDenyFlippedThenUpdate,
}

impl Tamper {
    const ALL: [Self; 7] = [
        Self::FlushTable,
        Self::DeleteTable,
        Self::AcceptAtTopOfPodChain,
        Self::AcceptAtTopOfBaseChain,
        Self::PeerElementDeleted,
        Self::DefaultDenyDeleted,
        Self::DefaultDenyFlippedThenUpdate,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::FlushTable => "table flushed",
            Self::DeleteTable => "table deleted",
            Self::AcceptAtTopOfPodChain => "accept on top of x/a's ingress chain",
            Self::AcceptAtTopOfBaseChain => "accept on top of postrouting",
            Self::PeerElementDeleted => "y/a deleted from x/a's peer set",
            Self::DefaultDenyDeleted => "x/a's default-deny rule deleted",
            Self::DefaultDenyFlippedThenUpdate => "x/a's drop made accept, then an update",
        }
    }

    /// The `nft -f` script that makes the change, given the table as it is now.
    async fn script(self, netns: &str, chain: &str, expected: &Ruleset) -> Result<String> {
        let table = format!("{TABLE_FAMILY} {TABLE_NAME}");
        let last_rule = async || -> Result<(u64, String)> {
            let listing = nft::run(
                netns,
                &["-a", "list", "chain", TABLE_FAMILY, TABLE_NAME, chain],
                None,
            )
            .await?;
            listing
                .lines()
                .filter_map(|l| l.trim().rsplit_once(" # handle "))
                .next_back()
                .and_then(|(rule, handle)| Some((handle.parse().ok()?, rule.to_owned())))
                .ok_or_else(|| format!("chain {chain} has no rules:\n{listing}"))
        };
        Ok(match self {
            Self::FlushTable => format!("flush table {table}\n"),
            Self::DeleteTable => format!("delete table {table}\n"),
            Self::AcceptAtTopOfPodChain => format!("insert rule {table} {chain} accept\n"),
            Self::AcceptAtTopOfBaseChain => format!("insert rule {table} postrouting accept\n"),
            Self::PeerElementDeleted => {
                let y_a = SetElement::Address(IpAddr::V4(Ipv4Addr::new(10, 244, 1, 21)));
                let set = expected
                    .sets
                    .iter()
                    .find(|s| s.name.contains("a-from-y") && s.elements.contains(&y_a))
                    .ok_or("no peer set of x/a-from-y holds y/a")?;
                format!("delete element {table} {} {{ 10.244.1.21 }}\n", set.name)
            }
            Self::DefaultDenyDeleted => {
                let (handle, _) = last_rule().await?;
                format!("delete rule {table} {chain} handle {handle}\n")
            }
            Self::DefaultDenyFlippedThenUpdate => {
                let (handle, rule) = last_rule().await?;
                if !rule.contains(" drop") {
                    return Err(format!("the last rule of {chain} is no drop: {rule}"));
                }
                let flipped = rule.replace(" drop", " accept");
                format!("replace rule {table} {chain} handle {handle} {flipped}\n")
            }
        })
    }
}

/// What one change showed.
struct Measured {
    tamper: Tamper,
    /// From the start of the tampering `nft` command to the first listing that showed the
    /// repaired table.
    gap: Duration,
    from: Instant,
    to: Instant,
    /// Repairs counted by node-1's and node-2's agents for this change.
    repairs: (u64, u64),
    /// Whether the agent's log names the object an update found changed (repaired by the
    /// update rather than the periodic check).
    by_update: bool,
}

#[test]
fn changes_to_the_table_behind_the_agents_back_are_repaired_within_the_interval() {
    let _serial = begin();
    let (measured, attempts, bystander) = runtime()
        .block_on(tamper_all())
        .unwrap_or_else(|e| panic!("{e}"));
    say(&report(&measured, &attempts));
    say(&bystander);

    let limit = RESYNC_INTERVAL + SLACK;
    let mut failures = Vec::new();
    for m in &measured {
        if m.gap > limit {
            failures.push(format!(
                "{}: repaired after {} ms, more than the interval plus slack ({} ms)",
                m.tamper.name(),
                m.gap.as_millis(),
                limit.as_millis()
            ));
        }
        if m.repairs != (1, 0) {
            failures.push(format!(
                "{}: repairs counted on node-1 and node-2: {:?}, expected (1, 0)",
                m.tamper.name(),
                m.repairs
            ));
        }
    }
    let outside: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| !measured.iter().any(|m| a.overlaps(m.from, m.to)))
        .collect();
    for a in &outside {
        let flow = &RESTART_FLOWS[a.flow];
        if a.outcome.allowed() != Some(flow.allowed) {
            failures.push(format!(
                "outside every gap: {}: expected {}, got {}",
                flow.describe(),
                if flow.allowed { "allowed" } else { "denied" },
                a.outcome
            ));
        }
    }
    assert!(
        outside.len() > 100,
        "only {} attempts outside the gaps: the traffic was not steady",
        outside.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

async fn tamper_all() -> Result<(Vec<Measured>, Vec<Attempt>, String)> {
    let case = scenario::restart_case()?;
    let cluster = Cluster::build(cluster::plan(&case.pods)?).await?;
    scenario::check_flows(&cluster, &case, &RESTART_FLOWS)?;
    let mut enforcer =
        Enforcer::start_with_resync(Mode::Agent, &cluster, &case, RESYNC_INTERVAL.as_secs())
            .await?;
    let wrong = wrong_verdicts(&cluster, &RESTART_FLOWS).await?;
    if !wrong.is_empty() {
        return Err(format!("before any change:\n{}", wrong.join("\n")));
    }
    say(&format!(
        "sim: tampering with the agent's table on {} (repair interval {} s)",
        cluster.id,
        RESYNC_INTERVAL.as_secs()
    ));
    let probes = RESTART_FLOWS
        .iter()
        .map(|f| f.probe(&cluster))
        .collect::<Result<Vec<_>>>()?;
    let stop = AtomicBool::new(false);
    let driver = async {
        let result = tamper_each(&cluster, &mut enforcer, &case).await;
        stop.store(true, Ordering::SeqCst);
        result
    };
    let (result, attempts) =
        futures::join!(driver, steady::probe_until(&probes, LOOPS, PAUSE, &stop));
    let (measured, bystander) = result?;
    for a in enforcer.agents() {
        if let Some(status) = a.exited() {
            return Err(format!("an agent exited ({status})\n{}", a.log_tail(30)));
        }
    }
    Ok((measured, attempts, bystander))
}

async fn tamper_each(
    cluster: &Cluster,
    enforcer: &mut Enforcer,
    case: &Case,
) -> Result<(Vec<Measured>, String)> {
    let node = &cluster.nodes[0];
    let netns = node.netns.name();
    let kube_proxy_before = kube_proxy_table(netns).await?;
    let snapshot = cluster.snapshot(case);
    let x_a = snapshot
        .pod(&ObjectKey::new("x", "a"))
        .ok_or("no pod x/a")?;
    let chain = compile::pod_chain_name(x_a, Direction::Ingress);
    let updated = updated_case(cluster)?;

    let mut expected = cluster.expected(case, true).remove(0);
    let mut reference = nft::reference_listing(&expected).await?;
    let mut measured: Vec<Measured> = Vec::new();
    for (i, tamper) in Tamper::ALL.into_iter().enumerate() {
        let phase =
            (PHASE_STEP * u32::try_from(i).unwrap_or(0)).as_millis() % RESYNC_INTERVAL.as_millis();
        let settled = Instant::now() + SETTLE;
        let start = match (tamper, measured.last()) {
            // Just after a check (the last repair was seen just after one, and the checks keep
            // their period), so the update comes before the next check and must not adopt the
            // edit. Which of the two repairs it is reported, not asserted.
            (Tamper::DefaultDenyFlippedThenUpdate, Some(last)) => {
                let mut at = last.to;
                while at < settled {
                    at += RESYNC_INTERVAL;
                }
                at
            }
            _ => settled + Duration::from_millis(u64::try_from(phase).unwrap_or(0)),
        };
        tokio::time::sleep_until(start.into()).await;
        let listing = nft::list_table(netns).await?;
        let before = nft::exact_differences(listing.as_deref(), &expected, &reference)?;
        if !before.is_empty() {
            return Err(format!(
                "before {}: the table is not the compiled one:\n{}",
                tamper.name(),
                before.join("\n")
            ));
        }
        let repairs_before = repairs(cluster).await?;
        let updates_logged = update_repairs_logged(enforcer);
        let script = tamper.script(netns, &chain, &expected).await?;
        let from = Instant::now();
        nft::apply(netns, &script)
            .await
            .map_err(|e| format!("{}: {e}", tamper.name()))?;
        if tamper == Tamper::DefaultDenyFlippedThenUpdate {
            enforcer.apply(cluster, &updated).await?;
            expected = cluster.expected(&updated, true).remove(0);
            reference = nft::reference_listing(&expected).await?;
        }
        let to = loop {
            let listing = nft::list_table(netns).await?;
            if nft::exact_differences(listing.as_deref(), &expected, &reference)?.is_empty() {
                break Instant::now();
            }
            if from.elapsed() > RESYNC_INTERVAL + SLACK + Duration::from_secs(5) {
                let now = nft::exact_differences(listing.as_deref(), &expected, &reference)?;
                return Err(format!(
                    "{}: not repaired after {:?}:\n{}\n{}",
                    tamper.name(),
                    from.elapsed(),
                    now.join("\n"),
                    enforcer.agents()[0].log_tail(20)
                ));
            }
            tokio::time::sleep(POLL).await;
        };
        // The counter is bumped once the repair is verified, just after the kernel has it.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut counted = repairs(cluster).await?;
        while counted.0 == repairs_before.0 && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            counted = repairs(cluster).await?;
        }
        tokio::time::sleep(SETTLE).await;
        let counted = repairs(cluster).await?;
        let wrong = wrong_verdicts(cluster, &RESTART_FLOWS).await?;
        if !wrong.is_empty() {
            return Err(format!(
                "after repairing {}:\n{}",
                tamper.name(),
                wrong.join("\n")
            ));
        }
        measured.push(Measured {
            tamper,
            gap: to - from,
            from,
            to,
            repairs: (counted.0 - repairs_before.0, counted.1 - repairs_before.1),
            by_update: update_repairs_logged(enforcer) > updates_logged,
        });
    }

    // Other tables are never touched: one made and edited by someone else, and kube-proxy's.
    let bystander = "table inet bystander {\n  chain input { type filter hook input priority 0; policy accept; }\n}\n";
    nft::apply(netns, bystander).await?;
    nft::apply(
        netns,
        "add rule inet bystander input tcp dport 9999 counter accept\n",
    )
    .await?;
    let repairs_before = repairs(cluster).await?;
    let left = nft::run(netns, &["list", "table", "inet", "bystander"], None).await?;
    tokio::time::sleep(RESYNC_INTERVAL * 2 + Duration::from_millis(500)).await;
    let now = nft::run(netns, &["list", "table", "inet", "bystander"], None).await?;
    if now != left {
        return Err(format!(
            "the agent changed another table:\n{left}\nbecame\n{now}"
        ));
    }
    if kube_proxy_table(netns).await? != kube_proxy_before {
        return Err("the agent changed kube-proxy's table".into());
    }
    if repairs(cluster).await? != repairs_before {
        return Err("a repair was counted for another table's change".into());
    }
    let listing = nft::list_table(netns).await?;
    let after = nft::exact_differences(listing.as_deref(), &expected, &reference)?;
    if !after.is_empty() {
        return Err(format!(
            "at the end, the table is not the compiled one:\n{}",
            after.join("\n")
        ));
    }
    Ok((
        measured,
        format!(
            "sim: a table of someone else's (created, then a rule added) and kube-proxy's were left exactly as they were for {} intervals, no repair counted",
            2
        ),
    ))
}

/// The restart case plus a policy isolating z/a's ingress (node-1): an update that adds a
/// chain, a map element and a set on node-1 and leaves x/a's chain alone.
fn updated_case(cluster: &Cluster) -> Result<Case> {
    let mut updated = scenario::restart_case()?;
    updated.name = "restart case, z/a isolated".into();
    updated.policies.push(scenario::policy(
        "z",
        "a-from-x",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
        }),
    ));
    scenario::check_flows(cluster, &updated, &RESTART_FLOWS)?;
    Ok(updated)
}

async fn kube_proxy_table(netns: &str) -> Result<String> {
    nft::run(netns, &["list", "table", "ip", kube_proxy::TABLE], None).await
}

/// The repairs counted so far by node-1's and node-2's agents.
async fn repairs(cluster: &Cluster) -> Result<(u64, u64)> {
    let one = agent::metric(&cluster.nodes[0].inside, REPAIRS).await?;
    let two = agent::metric(&cluster.nodes[1].inside, REPAIRS).await?;
    Ok((one, two))
}

/// Lines of node-1's agent log where an update found an object someone else had changed.
fn update_repairs_logged(enforcer: &mut Enforcer) -> usize {
    enforcer.agents()[0]
        .log_text()
        .lines()
        .filter(|l| l.contains("changed by someone else") && l.contains("object="))
        .count()
}

fn report(measured: &[Measured], attempts: &[Attempt]) -> String {
    let mut out = format!(
        "\nTampering with node-1's table under steady traffic (repair interval {} s; gap: from the tampering nft command to the first listing, polled every {} ms, that shows the repaired table)\n\n",
        RESYNC_INTERVAL.as_secs(),
        POLL.as_millis()
    );
    let _ = writeln!(
        out,
        "| change                                   | gap ms | repaired by | attempts in gap | wrongly allowed | wrongly denied |"
    );
    let _ = writeln!(
        out,
        "|------------------------------------------|--------|-------------|-----------------|-----------------|----------------|"
    );
    for m in measured {
        let during: Vec<&Attempt> = attempts
            .iter()
            .filter(|a| a.overlaps(m.from, m.to))
            .collect();
        let mut allowed: BTreeMap<String, usize> = BTreeMap::new();
        let mut denied: BTreeMap<String, usize> = BTreeMap::new();
        for a in &during {
            let flow = &RESTART_FLOWS[a.flow];
            match (flow.allowed, a.outcome.allowed()) {
                (false, Some(true)) => *allowed.entry(flow.describe()).or_default() += 1,
                (true, Some(false)) => *denied.entry(flow.describe()).or_default() += 1,
                _ => {}
            }
        }
        let sum = |m: &BTreeMap<String, usize>| m.values().sum::<usize>();
        let _ = writeln!(
            out,
            "| {:40} | {:>6} | {:11} | {:>15} | {:>15} | {:>14} |",
            m.tamper.name(),
            m.gap.as_millis(),
            if m.by_update {
                "the update"
            } else {
                "the check"
            },
            during.len(),
            sum(&allowed),
            sum(&denied)
        );
        for (flow, n) in allowed {
            let _ = writeln!(out, "|   allowed in the gap: {flow} x{n}");
        }
        for (flow, n) in denied {
            let _ = writeln!(out, "|   denied in the gap: {flow} x{n}");
        }
    }
    out
}
