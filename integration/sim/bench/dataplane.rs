//! The dataplane benchmark: what enforcement costs per packet, on one simulated node, against
//! the same node without the agent, measured in the same run.
//!
//! The node (`node-1` of the simulator) runs six real pods: `bench/server`, four clients
//! `bench/client-0..3` and `bench-flood/flooder`. The agent (`kube-nftpol agent --manifests`,
//! this build) loads the 10,000-pod, 1,000-policy cluster of `ScaleCluster::plain` plus the bench
//! namespace's six policies: the server is selected by five of them and the clients by three,
//! and the policies that allow the clients' traffic sort last, so their rules are the last
//! before the default deny in the server's ingress chain and the clients' egress chains (the
//! benchmark checks this in the kernel's table, and that the allowing rule's counter saw every
//! connection). 110 of the cluster's object-only pods are placed on node-1 too, so its table is
//! a full node's.
//!
//! The pods' SCTP observers are stopped (their packet sockets would copy every packet). Rounds
//! run the modes back to back, in turn forwards and backwards (A B C, C B A, ...), so drift hits
//! them all:
//! - no agent: the agent killed and its table deleted (kube-proxy's table stays, as in all);
//! - agent: a fresh agent process, ready, its table checked against the compiler's;
//! - observe: the same with the bench namespaces annotated `kube-nftpol.io/observe: "true"`,
//!   so the first packet of every connection is logged through NFLOG too.
//!
//! Each round measures, with [`traffic`]: new TCP connections per second (four clients in
//! parallel, connect-send-receive-close); one bulk TCP stream; request latency on a fresh
//! connection (one client, connect to response) and on a kept-open connection (64-byte
//! round trips); and new connections per second again while the flooder sends UDP as fast as
//! it can to every pod IP of node-1 (denied by default deny with the agent, logged through
//! NFLOG within the kernel's per-pod limit). With the agent, the NFLOG records the agent
//! received and lost during the flood come from its `/metrics`.
//!
//! The table (medians over rounds for rates, pooled samples for percentiles, each as a ratio
//! to no agent) goes to stderr. It is a benchmark: it fails only when the harness is broken
//! (a connection error, a table that is not the compiled one), never on a figure.
//! `KNP_BENCH_QUICK=1` makes it short (one round each, brief phases) for CI. `KNP_BENCH_PERF=DIR`
//! records every CPU with `perf` during each round's new-connections phase
//! (`DIR/connections-agent-1.data`, `DIR/connections-no-agent-1.data`, ...); the table then
//! says, per round, what share of the samples the agent's chains and process took and the
//! connection rate that share predicts ([`bench::cpu_shares`](crate::bench::cpu_shares)). Compare
//! where the packets spend their time with `perf report -i FILE --no-children --sort sym`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use kube_nftpol::compile::{self, Options, TABLE_FAMILY, TABLE_NAME};
use kube_nftpol::dataplane::readback::Summary;
use kube_nftpol::model::OBSERVE_ANNOTATION;
use kube_nftpol::source::manifests;
use serde_json::{Value, json};

use crate::agent::{self, NetnsProcess, SourceArgs};
use crate::bench::cpu_shares::CpuShares;
use crate::bench::profile::{Profile, Target};
use crate::bench::report::{self as report, Measured};
use crate::bench::traffic::{self as traffic, BenchServer, Run};
use crate::cluster::{Cluster, NODES, PodPlan};
use crate::{Result, begin, nft, runtime, say};
use kube_nftpol_test_support::scale_cluster::ScaleCluster;

/// The node everything runs on (index into [`NODES`]).
const NODE: usize = 0;
const SERVER: &str = "bench/server";
const CLIENTS: [&str; 4] = [
    "bench/client-0",
    "bench/client-1",
    "bench/client-2",
    "bench/client-3",
];
const FLOODER: &str = "bench-flood/flooder";
/// The flood's destination port (nothing allows UDP anywhere in the bench namespace).
const FLOOD_PORT: u16 = 9;
/// The generated pods live in 10.244.0.0/18; node-1 routes them to node-2, so packets to
/// node-1's object-only pods pass its postrouting hook like packets to real pods do.
const GENERATED_PODS: &str = "10.244.0.0/18";
/// How long the agent may take to load the cluster.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long and how often.
#[derive(Debug, Clone, Copy)]
struct Settings {
    rounds: usize,
    phase: Duration,
    fresh_requests: u64,
    round_trips: u64,
}

impl Settings {
    fn from_env() -> Self {
        if std::env::var_os("KNP_BENCH_QUICK").is_some_and(|v| v != "0" && !v.is_empty()) {
            Self {
                rounds: 1,
                phase: Duration::from_millis(400),
                fresh_requests: 300,
                round_trips: 500,
            }
        } else {
            Self {
                rounds: 5,
                phase: Duration::from_secs(2),
                fresh_requests: 3_000,
                round_trips: 10_000,
            }
        }
    }
}

#[test]
#[ignore = "benchmark: run it with integration/bench/run.sh"]
fn dataplane_benchmark_agent_with_10000_pods_against_no_agent() {
    let _serial = begin();
    let settings = Settings::from_env();
    let table = runtime()
        .block_on(benchmark(settings, Mode::Observe))
        .unwrap_or_else(|e| panic!("dataplane benchmark: {e}"));
    say(&table);
}

/// The same node, with 100 ClusterNetworkPolicies added to the cluster (50 in each tier,
/// `ScaleCluster::cluster_policies`): the bench pods meet the 5 global ones of each tier, so
/// the measured connections walk the Admin tier's chain on both sides before the
/// NetworkPolicies decide (NetworkPolicies isolate them: their Baseline tier is never reached),
/// and the flooder, whom no NetworkPolicy isolates, walks both tiers.
#[test]
#[ignore = "benchmark: run it with integration/bench/run.sh tiers"]
fn dataplane_benchmark_100_cluster_policies_in_both_tiers_against_no_agent() {
    let _serial = begin();
    let settings = Settings::from_env();
    let table = runtime()
        .block_on(benchmark(settings, Mode::Tiers))
        .unwrap_or_else(|e| panic!("dataplane benchmark with the tiers: {e}"));
    say(&table);
}

/// ClusterNetworkPolicies per tier in [`Mode::Tiers`].
const CLUSTER_POLICIES_PER_TIER: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    NoAgent,
    Agent,
    Observe,
    /// The agent with [`CLUSTER_POLICIES_PER_TIER`] ClusterNetworkPolicies in each tier.
    Tiers,
}

/// `third`: the mode measured beside no agent and the agent ([`Mode::Observe`] or
/// [`Mode::Tiers`]).
async fn benchmark(settings: Settings, third: Mode) -> Result<String> {
    let mut cluster = Cluster::build(plan()).await?;
    for pod in &mut cluster.pods {
        pod.servers.stop_sctp_observer();
    }
    let node = &cluster.nodes[NODE];
    crate::links::ip(
        Some(node.netns.name()),
        &[
            "route",
            "add",
            GENERATED_PODS,
            "via",
            &NODES[1].1.to_string(),
        ],
    )?;
    let observed_manifests = cluster.scratch().join("manifests-third");
    let mut expected_summaries = Vec::new();
    let mut compiled = Vec::new();
    for (dir, mode) in [
        (cluster.manifests(), Mode::Agent),
        (observed_manifests.clone(), third),
    ] {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("cluster.json");
        std::fs::write(&path, manifest(&cluster, mode).to_string())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        let snapshot = manifests::load_dir(&dir)
            .map_err(|e| format!("the benchmark's manifests do not load: {e}"))?
            .snapshot;
        let ruleset = compile::compile_with_interfaces(
            &snapshot,
            node.name,
            &cluster.interfaces(NODE, true),
            &Options::default(),
        );
        expected_summaries.push(Summary::of(&ruleset));
        compiled.push((snapshot, ruleset));
    }
    let [(snapshot, expected), (third_snapshot, third_ruleset)] =
        <[_; 2]>::try_from(compiled).map_err(|_| "two compiled manifests".to_owned())?;
    let flood_targets: Vec<Ipv4Addr> = snapshot
        .pods()
        .filter(|p| p.node.as_deref() == Some(node.name) && p.key.to_string() != FLOODER)
        .flat_map(|p| p.ips.iter())
        .filter_map(|ip| match ip {
            std::net::IpAddr::V4(ip) => Some(*ip),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    let _server = BenchServer::start(&pod(&cluster, SERVER)?.inside).await?;
    say(&format!(
        "bench: dataplane on {} ({}): {} pods, {} policies, {} cluster policies ({}) in the cluster; {} rounds of {:?} phases",
        node.name,
        cluster.id,
        snapshot.pods().count(),
        snapshot.policies().count(),
        third_snapshot.cluster_policies().count(),
        third.name(),
        settings.rounds,
        settings.phase,
    ));

    let mut results = [
        Measured::default(),
        Measured::default(),
        Measured::default(),
    ];
    let mut layout = String::new();
    for round in 0..settings.rounds {
        let order = if round % 2 == 0 {
            [Mode::NoAgent, Mode::Agent, third]
        } else {
            [third, Mode::Agent, Mode::NoAgent]
        };
        for mode in order {
            let mut agent = None;
            match mode {
                Mode::NoAgent => delete_table(&cluster).await?,
                Mode::Agent | Mode::Observe | Mode::Tiers => {
                    let (manifests, expected) = if mode == third {
                        (&observed_manifests, &expected_summaries[1])
                    } else {
                        (&cluster.manifests(), &expected_summaries[0])
                    };
                    let started = start_agent(&cluster, manifests, expected).await?;
                    layout = check_layout(&cluster).await?;
                    agent = Some(started);
                }
            }
            let measured = &mut results[match mode {
                Mode::NoAgent => 0,
                Mode::Agent => 1,
                Mode::Observe | Mode::Tiers => 2,
            }];
            let cpu_before = agent.as_ref().and_then(cpu_time);
            let wall = Instant::now();
            let allowed_before = allowed_count(&cluster, mode).await?;
            let agent_pid = agent.as_ref().and_then(NetnsProcess::pid);
            let connections =
                measure_round(&cluster, settings, measured, mode, (round, agent_pid)).await?;
            let allowed = allowed_count(&cluster, mode).await? - allowed_before;
            // A SYN that reuses the ports of a connection conntrack still holds as open (its
            // closing RST was out of window) passes as established and skips the chains; a
            // handful of the tens of thousands do. More than 1 % means the load is not taking
            // the chain being measured.
            if mode != Mode::NoAgent && allowed * 100 < connections * 99 {
                return Err(format!(
                    "the allowing rule counted {allowed} packets for {connections} connections: \
                     the connections did not take the chain being measured"
                ));
            }
            measured.syns_through_chain += allowed.min(connections);
            measured.connections += connections;
            if let (Some(before), Some(after)) = (cpu_before, agent.as_ref().and_then(cpu_time)) {
                measured.agent_cpu += after.saturating_sub(before);
                measured.agent_wall += wall.elapsed();
            }
            flood_round(&cluster, settings, &flood_targets, mode, measured).await?;
            say(&format!(
                "bench: round {} {}: {:.0} connections/s, {:.2} Gbit/s, {:.0} connections/s under a flood of {:.0} packets/s",
                round + 1,
                mode.name(),
                measured
                    .connections_per_second
                    .last()
                    .copied()
                    .unwrap_or(0.0),
                measured.bits_per_second.last().copied().unwrap_or(0.0) / 1e9,
                measured
                    .flood_connections_per_second
                    .last()
                    .copied()
                    .unwrap_or(0.0),
                measured
                    .flood_packets_per_second
                    .last()
                    .copied()
                    .unwrap_or(0.0),
            ));
            drop(agent);
        }
    }
    delete_table(&cluster).await?;
    let [base, enforce, observe] = &results;
    let mut table = report::table(
        &[base, enforce],
        &expected,
        &layout,
        flood_targets.len(),
        settings.rounds,
        settings.phase,
    );
    match third {
        Mode::Tiers => {
            let rules: usize = third_ruleset.chains.iter().map(|c| c.rules.len()).sum();
            table.push_str(&report::third_table(
                &format!(
                    "With {} ClusterNetworkPolicies ({CLUSTER_POLICIES_PER_TIER} per tier) added: the node's \
                     table {} chains, {rules} rules, {} sets; {}",
                    third_snapshot.cluster_policies().count(),
                    third_ruleset.chains.len(),
                    third_ruleset.sets.len(),
                    tier_layout(&third_ruleset),
                ),
                "agent, tiers",
                "the tiers",
                base,
                enforce,
                observe,
            ));
        }
        _ => table.push_str(&report::observe_table(base, enforce, observe)),
    }
    Ok(table)
}

/// The Admin tier chains the measured connection walks (the server's ingress, client-0's
/// egress): their rules, for the report.
fn tier_layout(ruleset: &kube_nftpol::compile::Ruleset) -> String {
    [
        "admin-in_bench_server",
        "admin-eg_bench_client-0",
        "base-eg_bench-flood_flooder",
    ]
    .iter()
    .map(|name| match ruleset.chain(name) {
        Some(chain) => format!("{name} {} rules", chain.rules.len()),
        None => format!("{name} absent"),
    })
    .collect::<Vec<_>>()
    .join(", ")
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::NoAgent => "no agent",
            Self::Agent => "agent",
            Self::Observe => "agent, observe mode",
            Self::Tiers => "agent, 100 cluster policies",
        }
    }

    /// The mode in a file name.
    fn slug(self) -> &'static str {
        match self {
            Self::NoAgent => "no-agent",
            Self::Agent => "agent",
            Self::Observe => "observe",
            Self::Tiers => "tiers",
        }
    }
}

/// One round's connections, bulk and latency phases; returns the connections made. The
/// connections phase is recorded system-wide when `KNP_BENCH_PERF` asks for it, and where its
/// samples went is kept (`agent_pid` is the agent's process, if it runs).
async fn measure_round(
    cluster: &Cluster,
    settings: Settings,
    measured: &mut Measured,
    mode: Mode,
    (round, agent_pid): (usize, Option<u32>),
) -> Result<u64> {
    let server = pod(cluster, SERVER)?.plan.ip;
    let clients = CLIENTS
        .iter()
        .map(|c| pod(cluster, c))
        .collect::<Result<Vec<_>>>()?;
    let context = |what: &str| format!("{what} ({})", mode.name());

    let profile = Profile::start(
        Target::System,
        &format!("connections-{}-{}", mode.slug(), round + 1),
    )?;
    let rate = connections(cluster, settings.phase).await;
    let recording = profile.stop();
    let rate = rate?;
    if let Some(recording) = recording {
        measured
            .cpu_shares
            .push(CpuShares::of_recording(&recording, agent_pid)?);
    }
    check(&rate, &context("new connections"))?;
    measured
        .connections_per_second
        .push(rate.done as f64 / rate.took.as_secs_f64());
    let mut made = rate.done;

    let phase = settings.phase;
    let bulk = in_pod(clients[0], move || traffic::bulk(server, phase)).await?;
    check(&bulk, &context("bulk"))?;
    measured
        .bits_per_second
        .push(bulk.bytes as f64 * 8.0 / bulk.took.as_secs_f64());
    made += 1;

    let count = settings.fresh_requests;
    let far = Instant::now() + Duration::from_secs(600);
    let fresh = in_pod(clients[1], move || {
        traffic::requests(server, far, count, true)
    })
    .await?;
    check(&fresh, &context("fresh-connection latency"))?;
    measured.fresh.extend(fresh.latencies);
    made += fresh.done;

    let count = settings.round_trips;
    let kept = in_pod(clients[2], move || traffic::ping_pong(server, count)).await?;
    check(&kept, &context("kept-open latency"))?;
    measured.kept_open.extend(kept.latencies);
    Ok(made + 1)
}

/// New connections from every client at once for `length`; the runs summed.
async fn connections(cluster: &Cluster, length: Duration) -> Result<Run> {
    let server = pod(cluster, SERVER)?.plan.ip;
    let until = Instant::now() + length;
    let mut runs = Vec::new();
    for client in CLIENTS {
        let inside = &pod(cluster, client)?.inside;
        runs.push(inside.run(move || traffic::requests(server, until, u64::MAX, false)));
    }
    let mut total = Run::default();
    for run in futures::future::join_all(runs).await {
        let run = run.map_err(|e| format!("client thread: {e}"))?;
        total.done += run.done;
        total.errors += run.errors;
        total.took = total.took.max(run.took);
    }
    Ok(total)
}

/// New connections while the flooder floods, and the NFLOG records the agent received and
/// lost meanwhile.
async fn flood_round(
    cluster: &Cluster,
    settings: Settings,
    targets: &[Ipv4Addr],
    mode: Mode,
    measured: &mut Measured,
) -> Result<()> {
    let node = &cluster.nodes[NODE];
    let before = flowlog_counts(node, mode).await?;
    let ramp = Duration::from_millis(200);
    let until = Instant::now() + ramp + settings.phase + ramp;
    let targets = targets.to_vec();
    let flooding = pod(cluster, FLOODER)?
        .inside
        .run(move || traffic::flood(&targets, FLOOD_PORT, until));
    let measuring = async {
        tokio::time::sleep(ramp).await;
        connections(cluster, settings.phase).await
    };
    let (flood, rate) = futures::join!(flooding, measuring);
    let flood = flood.map_err(|e| format!("flooder thread: {e}"))?;
    let rate = rate?;
    check(
        &rate,
        &format!("new connections under the flood ({})", mode.name()),
    )?;
    if flood.done == 0 {
        return Err("the flood sent nothing".into());
    }
    // Records of the flood's last packets may still be on their way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = flowlog_counts(node, mode).await?;
    measured
        .flood_connections_per_second
        .push(rate.done as f64 / rate.took.as_secs_f64());
    measured
        .flood_packets_per_second
        .push(flood.done as f64 / flood.took.as_secs_f64());
    measured.records += after.0 - before.0;
    measured.lost += after.1 - before.1;
    measured.flood_seconds += flood.took.as_secs_f64();
    measured.floods += 1;
    Ok(())
}

fn check(run: &Run, what: &str) -> Result<()> {
    if run.errors > 0 || run.done == 0 {
        return Err(format!(
            "{what}: {} done, {} failed: the allowed flow does not work",
            run.done, run.errors
        ));
    }
    Ok(())
}

async fn in_pod(
    pod: &crate::cluster::SimPod,
    job: impl FnOnce() -> Run + Send + 'static,
) -> Result<Run> {
    pod.inside
        .run(job)
        .await
        .map_err(|e| format!("{} thread: {e}", pod.identity))
}

fn pod<'a>(cluster: &'a Cluster, key: &str) -> Result<&'a crate::cluster::SimPod> {
    cluster
        .pod(key)
        .ok_or_else(|| format!("no pod {key} in the bench cluster"))
}

/// The real pods, all on node-1, outside the generated cluster's addresses.
fn plan() -> Vec<PodPlan> {
    let mut pods = vec![(SERVER, 10)];
    pods.extend(CLIENTS.iter().zip(20..).map(|(c, i)| (*c, i)));
    pods.push((FLOODER, 30));
    pods.into_iter()
        .map(|(key, host)| {
            let (namespace, name) = key.split_once('/').unwrap_or(("bench", key));
            PodPlan {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                ip: Ipv4Addr::new(10, 244, 100, host),
                service_ip: Ipv4Addr::new(10, 96, 100, host),
                node: NODE,
            }
        })
        .collect()
}

/// The generated cluster (whose `node-1` pods land on the simulator's node-1 as objects) plus
/// the bench namespaces, pods and policies, as one `List`: for [`Mode::Observe`] the bench
/// namespaces in observe mode, for [`Mode::Tiers`] with the ClusterNetworkPolicies.
fn manifest(cluster: &Cluster, mode: Mode) -> Value {
    let mut items: Vec<Value> = ScaleCluster::plain().objects().collect();
    if mode == Mode::Tiers {
        items.extend(ScaleCluster::cluster_policies(CLUSTER_POLICIES_PER_TIER));
    }
    let annotations = (mode == Mode::Observe).then(|| json!({OBSERVE_ANNOTATION: "true"}));
    for (namespace, team) in [("bench", "bench"), ("bench-flood", "flood")] {
        items.push(json!({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": namespace, "labels": {"team": team},
                                       "annotations": annotations}}));
    }
    for p in &cluster.pods {
        let role = match p.identity.as_str() {
            SERVER => "server",
            FLOODER => "flooder",
            _ => "client",
        };
        let ip = p.plan.ip.to_string();
        items.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": p.plan.namespace, "name": p.plan.name,
                         "labels": {"role": role}},
            "spec": {"nodeName": NODES[p.plan.node].0,
                     "containers": [{"name": "bench", "image": "bench"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
        }));
    }
    items.extend(bench_policies());
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// The bench namespace's policies. Rules of a pod's chain follow the policies' names, so the
/// `zz-` policies that allow the measured traffic come last.
fn bench_policies() -> Vec<Value> {
    let ports =
        json!([{"protocol": "TCP", "port": traffic::RR_PORT, "endPort": traffic::ECHO_PORT}]);
    let policy = |name: &str, spec: Value| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": name, "namespace": "bench"}, "spec": spec})
    };
    let server = json!({"matchLabels": {"role": "server"}});
    let client = json!({"matchLabels": {"role": "client"}});
    vec![
        policy(
            "default-deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                   "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns-0"}}}],
                               "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]}),
        ),
        policy(
            "a-from-monitoring",
            json!({"podSelector": server,
                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "team-7"}},
                                          "podSelector": {"matchLabels": {"app": "app-3"}}}],
                                "ports": [{"port": 9090}]}]}),
        ),
        policy(
            "b-from-ops",
            json!({"podSelector": server,
                   "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}], "ports": ports}]}),
        ),
        policy(
            "c-other-teams",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                   "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                                   {"key": "team", "operator": "In", "values": ["team-1", "team-2"]}]}}],
                                "ports": ports}],
                   "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "team-3"}}}],
                               "ports": [{"port": 8080}]}]}),
        ),
        policy(
            "zz-allow-clients",
            json!({"podSelector": server,
                   "ingress": [{"from": [{"podSelector": client}], "ports": ports}]}),
        ),
        policy(
            "zz-allow-to-server",
            json!({"podSelector": client, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"podSelector": server}], "ports": ports}]}),
        ),
    ]
}

/// Starts the agent on the node and waits until it is ready and its table is the compiled one.
async fn start_agent(
    cluster: &Cluster,
    manifests: &std::path::Path,
    expected: &Summary,
) -> Result<NetnsProcess> {
    let node = &cluster.nodes[NODE];
    let (program, args) = agent::command(
        node.name,
        &SourceArgs::Manifests(manifests.to_owned()),
        agent::RESYNC_INTERVAL_SECS,
    )?;
    let log = cluster.scratch().join("agent-bench.log");
    let mut process = NetnsProcess::spawn(node.netns.name(), &program, args, log)?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if agent::ready(&node.inside).await {
            let listing = nft::list_table(node.netns.name()).await?;
            if nft::applied(listing.as_deref(), expected)?.is_empty() {
                return Ok(process);
            }
        }
        if let Some(status) = process.exited() {
            return Err(format!(
                "the agent exited ({status})\n{}",
                process.log_tail(20)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the agent did not load the benchmark's table within {READY_TIMEOUT:?}\n{}",
                process.log_tail(20)
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the agent's table if there is one (the agent is gone by then: its drop kills it).
async fn delete_table(cluster: &Cluster) -> Result<()> {
    let netns = cluster.nodes[NODE].netns.name();
    if nft::list_table(netns).await?.is_some() {
        nft::run(netns, &["delete", "table", TABLE_FAMILY, TABLE_NAME], None).await?;
    }
    Ok(())
}

/// The rules before the allowing one in the server's ingress chain and client-0's egress
/// chain, checked to be last before the default deny; a line for the report.
async fn check_layout(cluster: &Cluster) -> Result<String> {
    let netns = cluster.nodes[NODE].netns.name();
    let mut walked = Vec::new();
    for (chain, allowing) in [
        ("in_bench_server", "bench/zz-allow-clients ingress[0]"),
        ("eg_bench_client-0", "bench/zz-allow-to-server egress[0]"),
    ] {
        let listing = nft::run(
            netns,
            &["list", "chain", TABLE_FAMILY, TABLE_NAME, chain],
            None,
        )
        .await?;
        let rules: Vec<&str> = listing
            .lines()
            .map(str::trim)
            .filter(|l| l.contains(" comment \""))
            .collect();
        let log = rules
            .iter()
            .position(|r| r.contains("log prefix"))
            .ok_or_else(|| format!("{chain}: no log rule\n{listing}"))?;
        // The allowing rule's IPv4 and IPv6 forms are the two rules before the log rule.
        let last_v4 = log
            .checked_sub(2)
            .and_then(|i| rules.get(i))
            .ok_or_else(|| format!("{chain}: too few rules\n{listing}"))?;
        let is_v4 = last_v4.contains("ip saddr") || last_v4.contains("ip daddr");
        if !is_v4 || !last_v4.contains(&format!("comment \"{allowing}\"")) {
            return Err(format!(
                "{chain}: the allowing rule {allowing:?} is not the last before the default deny\n{listing}"
            ));
        }
        walked.push(format!(
            "{chain}: {} rules, the allowing one at {}",
            rules.len(),
            log - 1
        ));
    }
    Ok(walked.join("; "))
}

/// Packets counted by the allowing rule of the server's ingress chain (0 without the agent).
async fn allowed_count(cluster: &Cluster, mode: Mode) -> Result<u64> {
    if mode == Mode::NoAgent {
        return Ok(0);
    }
    let netns = cluster.nodes[NODE].netns.name();
    let listing = nft::run(
        netns,
        &["list", "chain", TABLE_FAMILY, TABLE_NAME, "in_bench_server"],
        None,
    )
    .await?;
    listing
        .lines()
        .filter(|l| l.contains("comment \"bench/zz-allow-clients ingress[0]\""))
        .filter_map(|l| {
            l.split_once("counter packets ")?
                .1
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .reduce(|a, b| a + b)
        .ok_or_else(|| format!("no counted allowing rule in in_bench_server\n{listing}"))
}

/// The agent's NFLOG records received and lost so far (0 without the agent).
async fn flowlog_counts(node: &crate::cluster::Node, mode: Mode) -> Result<(u64, u64)> {
    if mode == Mode::NoAgent {
        return Ok((0, 0));
    }
    let (status, body) = agent::http_get(&node.inside, "/metrics").await?;
    if status != 200 {
        return Err(format!("GET /metrics: {status}"));
    }
    let metric = |name: &str| -> Result<u64> {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .ok_or_else(|| format!("no {name} in /metrics"))
    };
    Ok((
        metric("kube_nftpol_flowlog_records_total")?,
        metric("kube_nftpol_flowlog_lost_records_total")?,
    ))
}

/// The agent's user and system CPU time so far.
fn cpu_time(agent: &NetnsProcess) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", agent.pid()?)).ok()?;
    // Fields after the command (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}
