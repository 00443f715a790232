//! Benchmark: how fast changes made through a real kube-apiserver
//! reach the kernel at cluster scale, and what the agent costs in memory and CPU.
//!
//! One agent (`kube-nftpol agent --kubeconfig`) runs on simulated `node-1` with three real pods
//! (namespaces, veths, servers): `ns-5/bench-server`, `ns-5/bench-client` and
//! `monitoring/scraper`. The same operations run twice in one run, first on an almost empty
//! cluster (those pods, `ns-5`'s two policies and one egress policy for the client: the
//! baseline), then with the shared cluster at scale loaded through the API
//! (the test-support crate's `ScaleCluster`: 10,000 pods in 500 namespaces, 110 of them on `node-1`,
//! 1,000 policies; created with many requests in parallel, pods given `podIP` through the
//! status subresource as a kubelet does):
//!
//! - (a) a new policy selecting `bench-server` that admits `bench-client`: from just before
//!   the create request until a real TCP connection from the client gets through (probes every
//!   few milliseconds; each iteration first checks the connection is denied). Then the policy
//!   is deleted, timed until its rule is gone from the server's chain (read back).
//! - (b) the scraper labelled `role: monitoring`, which makes it a peer of 100 policies (every
//!   fifth namespace's allow policy admits it): until it connects to `bench-server`. Then the
//!   label is removed, timed until its address has left every peer set (read back).
//! - (c) 100 pods created at once on `node-1` (create and status, all in parallel): until all
//!   100 addresses are in the `ingress4` dispatch map (read back); then deleted, until gone.
//! - full resync: the agent killed and started again, with its table in place (a restart) and
//!   with the table deleted (a new node): from the start until `/readyz` says the complete
//!   table is verified in the kernel; the test then checks the table is exactly the compiled
//!   cluster.
//! - revocation at scale: the node's conntrack table filled with 10,000 established
//!   connections that the policies allow ([`tracked`]), then (a) and (b) again: their latency
//!   beside the same without them, the revocation passes' mean time (each lists and judges
//!   every entry), and that not one connection was ended.
//! - footprint: the agent's VmRSS and VmHWM, its CPU time (its own and its `nft` children's,
//!   from `/proc/PID/stat`) while the cluster loads, while idle, and during (a) to (c).
//!
//! The tiers' variant (`programming_latency_with_100_cluster_policies_at_cluster_scale`) installs
//! the ClusterNetworkPolicy CRD first, loads 100 ClusterNetworkPolicies (50 per tier,
//! `ScaleCluster::cluster_policies`) with the cluster at scale, and adds:
//! - (d) a new Admin ClusterNetworkPolicy that accepts `bench-client` into `bench-server`
//!   (which `ns-5`'s NetworkPolicies deny): until a real connection gets through; then deleted,
//!   until its rule is gone from the server's Admin chain (read back).
//!
//! After each phase the node's table is compared with what the compiler makes of the objects
//! in the API, so a fast answer is also a right one. Results go to stderr as tables, each scale
//! figure with its ratio to the baseline measured in the same run. Nothing is asserted about
//! timings (`docs/benchmarks.md` has the targets).
//!
//! Run (root, kube-apiserver built): `cargo test --release --test sim -- --ignored --exact
//! bench::programming::programming_latency_and_footprint_at_cluster_scale --nocapture`;
//! `KNP_BENCH_QUICK=1` runs it at a tenth of the scale with fewer repetitions (about a minute).
//! `KNP_BENCH_PERF=DIR` also records the agent with `perf record -g` while it idles at scale,
//! during the measurements at scale and during each full resync without a table
//! (`DIR/idle.data`, `DIR/scale.data`, `DIR/resync.data`, the last one kept; read them with
//! `perf report -i`) and keeps its log (`DIR/agent.log`; `RUST_LOG=kube_nftpol=debug` adds a
//! line per apply).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as networking;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kube_nftpol::compile::{self, Options, Ruleset, TABLE_FAMILY, TABLE_NAME};
use kube_nftpol::dataplane::readback::{self, Summary};
use kube_nftpol::source::manifests;
use serde_json::{Value, json};
use socket2::{Domain, Type};
use tokio::net::TcpSocket;
use tokio::time::timeout;

use crate::agent::{self, NetnsProcess, SourceArgs};
use crate::api::{ApiCluster, Relay};
use crate::bench::profile::{Profile, Target};
use crate::bench::tracked;
use crate::bench::usage::{Usage, memory_kib};
use crate::cluster::{Cluster, NODES, PodPlan};
use crate::setns::InNetns;
use crate::{Result, begin, nft, runtime, say};
use kube_nftpol_test_support::scale_cluster::{
    MONITORING_LABEL, MONITORING_NAMESPACE, ScaleCluster,
};

/// The namespace of the real server and client pods (one of the generated ones: its default
/// deny and allow policy apply to them).
const BENCH_NS: usize = 5;
/// The node the agent runs on (index into [`NODES`]): `node-1`.
const NODE: usize = 0;
/// Where the generated pods' addresses start (outside the simulator's node CIDRs).
const SCALE_FIRST_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 2);
/// How long a probe waits for the SYN-ACK before trying again with a new connection.
const PROBE_WAIT: Duration = Duration::from_millis(3);
/// How long a probe waits to call a connection denied.
const DENIED_WAIT: Duration = Duration::from_millis(30);
/// How often the table is read back while waiting.
const READBACK_EVERY: Duration = Duration::from_millis(5);
/// The longest any one operation may take before the benchmark gives up.
const LIMIT: Duration = Duration::from_secs(30);
/// How long the agent may lag behind the API after the cluster is loaded.
const LOAD_LIMIT: Duration = Duration::from_secs(600);
/// Parallel requests while loading the cluster.
const PARALLEL_WRITES: usize = 48;
/// Pods created at once in (c).
const BURST: usize = 100;

/// How big and how long.
#[derive(Debug, Clone, Copy)]
struct Settings {
    namespaces: usize,
    reps_a: usize,
    reps_b: usize,
    bursts: usize,
    idle: Duration,
    quick: bool,
    /// ClusterNetworkPolicies per tier loaded with the cluster at scale; with any, (d) runs.
    cluster_policies: usize,
}

impl Settings {
    fn from_env() -> Self {
        if std::env::var("KNP_BENCH_QUICK").is_ok_and(|v| v == "1") {
            Self {
                namespaces: 50,
                reps_a: 10,
                reps_b: 10,
                bursts: 1,
                idle: Duration::from_secs(3),
                quick: true,
                cluster_policies: 0,
            }
        } else {
            Self {
                namespaces: kube_nftpol_test_support::scale_cluster::NAMESPACES,
                reps_a: 60,
                reps_b: 60,
                bursts: 5,
                idle: Duration::from_secs(10),
                quick: false,
                cluster_policies: 0,
            }
        }
    }
}

#[test]
#[ignore = "benchmark: integration/bench/run.sh, or --ignored --exact (see the module doc)"]
fn programming_latency_and_footprint_at_cluster_scale() {
    let _serial = begin();
    runtime()
        .block_on(run(Settings::from_env()))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The same with 100 ClusterNetworkPolicies (50 per tier) in the cluster at scale, and (d).
#[test]
#[ignore = "benchmark: integration/bench/run.sh tiers, or --ignored --exact (see the module doc)"]
fn programming_latency_with_100_cluster_policies_at_cluster_scale() {
    let _serial = begin();
    let settings = Settings {
        cluster_policies: 50,
        ..Settings::from_env()
    };
    runtime()
        .block_on(run(settings))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The real pods on `node-1`.
struct Real;

impl Real {
    const SERVER: (&str, &str, Ipv4Addr) = ("ns-5", "bench-server", Ipv4Addr::new(10, 244, 1, 10));
    const CLIENT: (&str, &str, Ipv4Addr) = ("ns-5", "bench-client", Ipv4Addr::new(10, 244, 1, 11));
    const SCRAPER: (&str, &str, Ipv4Addr) = (
        MONITORING_NAMESPACE,
        "scraper",
        Ipv4Addr::new(10, 244, 1, 12),
    );

    fn plan() -> Vec<PodPlan> {
        [Self::SERVER, Self::CLIENT, Self::SCRAPER]
            .iter()
            .map(|(namespace, name, ip)| {
                let [_, _, c, d] = ip.octets();
                PodPlan {
                    namespace: (*namespace).to_owned(),
                    name: (*name).to_owned(),
                    ip: *ip,
                    service_ip: Ipv4Addr::new(10, 96, c, d),
                    node: NODE,
                }
            })
            .collect()
    }

    fn server_addr() -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Self::SERVER.2, 80))
    }
}

/// Which samples of a [`Phase`] a row of the table shows.
type Samples = fn(&Phase) -> &Vec<Duration>;

/// What one benchmark run measured, for the tables.
#[derive(Default)]
struct Phase {
    new_policy: Vec<Duration>,
    policy_deleted: Vec<Duration>,
    label_added: Vec<Duration>,
    label_removed: Vec<Duration>,
    cluster_policy_added: Vec<Duration>,
    cluster_policy_deleted: Vec<Duration>,
    burst_created: Vec<Duration>,
    burst_created_after_writes: Vec<Duration>,
    burst_deleted: Vec<Duration>,
    resync_with_table: Duration,
    resync_without_table: Duration,
    /// A client's `GET /api/v1/pods?resourceVersion=0` (the agent's list), as text.
    pods_listed: Vec<Duration>,
    churn: Option<Usage>,
    fresh_memory_kib: (u64, u64),
}

/// The benchmark's world: API server, simulated node and pods, the agent, and the objects the
/// API holds (to compute the expected table).
struct Bench {
    api: ApiCluster,
    cluster: Cluster,
    agent: NetnsProcess,
    _relay: Relay,
    objects: Vec<Value>,
    settings: Settings,
}

async fn run(settings: Settings) -> Result<()> {
    let api = ApiCluster::start().await?;
    let cluster = Cluster::build(Real::plan()).await?;
    let node = &cluster.nodes[NODE];
    let relay = Relay::start(node.netns.name(), api.addr()?).await?;
    let mut objects = vec![
        namespace_object(
            &ScaleCluster::namespace_name(BENCH_NS),
            &ScaleCluster::namespace_labels(BENCH_NS),
        ),
        namespace_object(MONITORING_NAMESPACE, &Default::default()),
    ];
    objects.extend(real_pod_objects());
    objects.extend(
        ScaleCluster::with_monitoring(settings.namespaces, SCALE_FIRST_IP).policies(BENCH_NS),
    );
    objects.push(client_egress_policy());
    if settings.cluster_policies > 0 {
        api.install_crd()?;
    }
    // Namespaces first: the writes run in parallel, and a policy or pod in a namespace not yet
    // created is refused.
    let (namespaces, rest): (Vec<Value>, Vec<Value>) = objects
        .iter()
        .cloned()
        .partition(|o| o["kind"] == "Namespace");
    create_all(&api.client, &namespaces).await?;
    create_all(&api.client, &rest).await?;

    let kubeconfig = api.agent_kubeconfig(cluster.scratch())?;
    let (program, mut args) = agent::command(
        NODES[NODE].0,
        &SourceArgs::Kubeconfig(kubeconfig),
        agent::RESYNC_INTERVAL_SECS,
    )?;
    // Info lines carry the milestones of a start (listed, applied), shown after each resync.
    args.push("--log-level=info".into());
    let log = cluster.scratch().join("agent.log");
    let agent = NetnsProcess::spawn(node.netns.name(), &program, args, log)?;
    let mut bench = Bench {
        api,
        cluster,
        agent,
        _relay: relay,
        objects,
        settings,
    };
    bench.wait_ready(Instant::now()).await?;
    bench.wait_exact().await?;

    say("bench: baseline (almost empty cluster)");
    let baseline = bench.measure().await?;

    say("bench: loading the cluster at scale");
    let (load, load_usage) = bench.load_scale().await?;
    let converged_memory = bench.memory()?;
    let profile = Profile::start(Target::Process(bench.pid()?), "idle")?;
    let idle = bench.idle().await?;
    profile.stop();

    say("bench: at scale");
    let profile = Profile::start(Target::Process(bench.pid()?), "scale")?;
    let scale = bench.measure().await?;
    profile.stop();
    say("bench: at scale, with 10,000 tracked connections (revocation passes)");
    let tracked = bench.with_tracked_connections().await?;
    Profile::keep_log(&bench.cluster.scratch().join("agent.log"));
    bench.report(
        &baseline,
        &scale,
        load,
        &load_usage,
        converged_memory,
        &idle,
    );
    bench.report_tracked(&scale, &tracked);
    Ok(())
}

/// (a) and (b) again at scale with the node's conntrack table full, and what the revocation
/// passes they set off cost.
struct Tracked {
    entries: usize,
    inserted_in: Duration,
    phase: Phase,
    usage: Usage,
    passes: f64,
    mean_pass: f64,
    judged: f64,
    revoked: f64,
}

impl Bench {
    fn pid(&self) -> Result<u32> {
        self.agent
            .pid()
            .ok_or_else(|| "the agent is not running".to_owned())
    }

    fn memory(&self) -> Result<(u64, u64)> {
        memory_kib(self.pid()?)
    }

    fn node(&self) -> &crate::cluster::Node {
        &self.cluster.nodes[NODE]
    }

    fn pod(&self, (namespace, name, _): (&str, &str, Ipv4Addr)) -> Result<&InNetns> {
        self.cluster
            .pod(&format!("{namespace}/{name}"))
            .map(|p| &p.inside)
            .ok_or_else(|| format!("no pod {namespace}/{name}"))
    }

    /// The ruleset `node-1` should hold for the objects in the API.
    fn expected(&self) -> Result<Ruleset> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": self.objects});
        let loaded = manifests::load_str(&list.to_string(), "bench.json")
            .map_err(|e| format!("the benchmark's objects do not load: {e}"))?;
        let interfaces = self.cluster.interfaces(NODE, true);
        Ok(compile::compile_with_interfaces(
            &loaded.snapshot,
            NODES[NODE].0,
            &interfaces,
            &Options::default(),
        ))
    }

    /// Waits until the node's table is exactly the compiled objects.
    async fn wait_exact(&mut self) -> Result<()> {
        self.wait_exact_within(LIMIT).await
    }

    /// Waits until the node's table is exactly the compiled objects, at most `limit`.
    async fn wait_exact_within(&mut self, limit: Duration) -> Result<()> {
        let expected = Summary::of(&self.expected()?);
        let started = Instant::now();
        loop {
            let listing = nft::list_table(self.node().netns.name()).await?;
            let differences = nft::applied(listing.as_deref(), &expected)?;
            if differences.is_empty() {
                return Ok(());
            }
            self.check_agent()?;
            if started.elapsed() > limit {
                return Err(format!(
                    "the table is not the compiled cluster after {limit:?}:\n  {}\n{}",
                    differences
                        .iter()
                        .take(10)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n  "),
                    self.agent.log_tail(20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn check_agent(&mut self) -> Result<()> {
        match self.agent.exited() {
            Some(status) => Err(format!(
                "the agent exited ({status})\n{}",
                self.agent.log_tail(30)
            )),
            None => Ok(()),
        }
    }

    /// Polls `/readyz` until 200; the time since `started`.
    async fn wait_ready(&mut self, started: Instant) -> Result<Duration> {
        loop {
            if agent::ready(&self.node().inside).await {
                return Ok(started.elapsed());
            }
            self.check_agent()?;
            if started.elapsed() > LIMIT {
                return Err(format!(
                    "the agent is not ready after {LIMIT:?}\n{}",
                    self.agent.log_tail(20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The same pod list by `kubectl get --raw`, straight to the API server and from the
    /// node's namespace through the simulator's relay (the way the agent reaches the API).
    async fn say_relay_cost(&self) -> Result<()> {
        let kubectl = kube_nftpol_test_support::apiserver::bin_dir()?.join("kubectl");
        let relayed_config = self.cluster.scratch().join("agent-kubeconfig");
        let direct_config = self.api.server.kubeconfig_path();
        let list = ["get", "--raw", "/api/v1/pods?resourceVersion=0"];
        let mut times = Vec::new();
        for relayed in [false, true, false, true] {
            let mut command = if relayed {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", self.node().netns.name()])
                    .arg(&kubectl)
                    .arg("--kubeconfig")
                    .arg(&relayed_config);
                c
            } else {
                let mut c = tokio::process::Command::new(&kubectl);
                c.arg("--kubeconfig").arg(&direct_config);
                c
            };
            let started = Instant::now();
            let status = command
                .args(list)
                .stdout(std::process::Stdio::null())
                .status()
                .await
                .map_err(|e| format!("kubectl: {e}"))?;
            if !status.success() {
                return Err(format!("kubectl get --raw failed (relayed: {relayed})"));
            }
            times.push(format!(
                "{} {}",
                if relayed { "relayed" } else { "direct" },
                ms(started.elapsed())
            ));
        }
        say(&format!(
            "bench: kubectl get --raw of all pods: {}",
            times.join(", ")
        ));
        Ok(())
    }

    /// The agent's log lines of its last start that say where a full resync spends its time.
    fn say_start_milestones(&self) {
        let log = self.agent.log_tail(400);
        let last_start = log.rfind("agent started").unwrap_or(0);
        let start = log[..last_start].rfind('\n').map_or(0, |i| i + 1);
        for line in log[start..].lines().filter(|l| {
            [
                "agent started",
                "listed; enforcing",
                "ruleset applied",
                "ready",
            ]
            .iter()
            .any(|m| l.contains(m))
        }) {
            say(&format!("bench: resync: {line}"));
        }
    }

    /// (a), (b), (c), full resync, each verified against the compiled objects afterwards.
    async fn measure(&mut self) -> Result<Phase> {
        let mut phase = Phase::default();
        let before = Usage::of(self.pid()?)?;
        let started = Instant::now();
        self.new_policies(&mut phase).await?;
        self.wait_exact().await?;
        self.label_changes(&mut phase).await?;
        self.wait_exact().await?;
        if self.settings.cluster_policies > 0 {
            self.cluster_policy_changes(&mut phase).await?;
            self.wait_exact().await?;
        }
        self.bursts(&mut phase).await?;
        self.wait_exact().await?;
        let churn = Usage::of(self.pid()?)?.since(&before, started.elapsed());
        phase.churn = Some(churn);
        self.full_resyncs(&mut phase).await?;
        Ok(phase)
    }

    async fn new_policies(&mut self, phase: &mut Phase) -> Result<()> {
        let (namespace, _, _) = Real::SERVER;
        let api = Api::<networking::NetworkPolicy>::namespaced(self.api.client.clone(), namespace);
        let chain = self.chain_of(&new_policy(0))?;
        for i in 0..self.settings.reps_a {
            let policy = new_policy(i);
            let name = policy["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let client = self.pod(Real::CLIENT)?;
            if connects(client, Real::server_addr(), DENIED_WAIT).await? {
                return Err(format!(
                    "{name}: the client reaches the server before the policy exists"
                ));
            }
            let typed: networking::NetworkPolicy = decode(&policy)?;
            let started = Instant::now();
            api.create(&PostParams::default(), &typed)
                .await
                .map_err(|e| format!("creating {name}: {e}"))?;
            phase
                .new_policy
                .push(until_connects(client, Real::server_addr(), started).await?);

            let comment = format!("{namespace}/{name} ingress[0]");
            let started = Instant::now();
            api.delete(&name, &DeleteParams::default())
                .await
                .map_err(|e| format!("deleting {name}: {e}"))?;
            let netns = self.node().netns.name().to_owned();
            phase.policy_deleted.push(
                until_listed(&netns, "chain", &chain, started, |summary| {
                    summary
                        .chains
                        .get(&chain)
                        .is_some_and(|rules| rules.iter().all(|(c, _)| *c != comment))
                })
                .await?,
            );
        }
        Ok(())
    }

    /// The chain the first rule of `policy` lands in, from the compiler.
    fn chain_of(&mut self, policy: &Value) -> Result<String> {
        self.objects.push(policy.clone());
        let ruleset = self.expected();
        self.objects.pop();
        let comment = format!(
            "{}/{} ingress[0]",
            policy["metadata"]["namespace"].as_str().unwrap_or_default(),
            policy["metadata"]["name"].as_str().unwrap_or_default()
        );
        ruleset?
            .chains
            .iter()
            .find(|c| {
                c.rules
                    .iter()
                    .any(|r| r.comment.as_deref() == Some(&comment))
            })
            .map(|c| c.name.clone())
            .ok_or_else(|| format!("no chain has a rule {comment}"))
    }

    /// (d): an Admin ClusterNetworkPolicy accepting the client into the server, created and
    /// deleted `reps_a` times.
    async fn cluster_policy_changes(&mut self, phase: &mut Phase) -> Result<()> {
        use kube_nftpol::source::kubernetes::ClusterPolicyObject;
        let api = Api::<ClusterPolicyObject>::all(self.api.client.clone());
        let (namespace, server, _) = Real::SERVER;
        let chain = format!("admin-in_{namespace}_{server}");
        for i in 0..self.settings.reps_a {
            let name = format!("bench-accept-{i}");
            let object = json!({
                "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
                "metadata": {"name": name},
                "spec": {"tier": "Admin", "priority": 1,
                         "subject": {"pods": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                                              "podSelector": {"matchLabels": {"bench": "server"}}}},
                         "ingress": [{"action": "Accept",
                                      "from": [{"pods": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                                                         "podSelector": {"matchLabels": {"bench": "client"}}}}]}]},
            });
            let client = self.pod(Real::CLIENT)?;
            if connects(client, Real::server_addr(), DENIED_WAIT).await? {
                return Err(format!(
                    "{name}: the client reaches the server before it exists"
                ));
            }
            let typed: ClusterPolicyObject = decode(&object)?;
            let started = Instant::now();
            api.create(&PostParams::default(), &typed)
                .await
                .map_err(|e| format!("creating {name}: {e}"))?;
            phase
                .cluster_policy_added
                .push(until_connects(client, Real::server_addr(), started).await?);

            let comment = format!("cnp Admin Accept ingress[0] {name}");
            let started = Instant::now();
            api.delete(&name, &DeleteParams::default())
                .await
                .map_err(|e| format!("deleting {name}: {e}"))?;
            let netns = self.node().netns.name().to_owned();
            phase
                .cluster_policy_deleted
                .push(until_rule_gone(&netns, &chain, &comment, started).await?);
        }
        Ok(())
    }

    async fn label_changes(&mut self, phase: &mut Phase) -> Result<()> {
        let (namespace, name, ip) = Real::SCRAPER;
        let (key, value) = MONITORING_LABEL;
        let sets = self.peer_sets_with_label(ip)?;
        let pods = Api::<core::Pod>::namespaced(self.api.client.clone(), namespace);
        let netns = self.node().netns.name().to_owned();
        let ip_text = ip.to_string();
        for _ in 0..self.settings.reps_b {
            let scraper = self.pod(Real::SCRAPER)?;
            if connects(scraper, Real::server_addr(), DENIED_WAIT).await? {
                return Err("the scraper reaches the server before it is labelled".into());
            }
            let started = Instant::now();
            pods.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
            )
            .await
            .map_err(|e| format!("labelling the scraper: {e}"))?;
            phase
                .label_added
                .push(until_connects(scraper, Real::server_addr(), started).await?);

            let started = Instant::now();
            pods.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {key: null}}})),
            )
            .await
            .map_err(|e| format!("unlabelling the scraper: {e}"))?;
            let mut slowest = Duration::ZERO;
            for set in &sets {
                let took = until_listed(&netns, "set", set, started, |summary| {
                    summary.sets.get(set).is_some_and(|e| !e.contains(&ip_text))
                })
                .await?;
                slowest = slowest.max(took);
            }
            phase.label_removed.push(slowest);
        }
        Ok(())
    }

    /// The node's peer sets that hold `ip` once the scraper carries the monitoring label.
    fn peer_sets_with_label(&mut self, ip: Ipv4Addr) -> Result<Vec<String>> {
        let (namespace, name, _) = Real::SCRAPER;
        let labelled = self.objects.iter_mut().find(|o| {
            o["kind"] == "Pod"
                && o["metadata"]["namespace"] == namespace
                && o["metadata"]["name"] == name
        });
        let labelled = labelled.ok_or("the scraper is not among the objects")?;
        let (key, value) = MONITORING_LABEL;
        labelled["metadata"]["labels"][key] = json!(value);
        let ruleset = self.expected();
        if let Some(pod) = self.objects.iter_mut().find(|o| {
            o["kind"] == "Pod"
                && o["metadata"]["namespace"] == namespace
                && o["metadata"]["name"] == name
        }) && let Some(labels) = pod["metadata"]["labels"].as_object_mut()
        {
            labels.remove(key);
        }
        let sets: Vec<String> = ruleset?
            .sets
            .iter()
            .filter(|s| s.name.starts_with("np_"))
            .filter(|s| {
                s.elements
                    .iter()
                    .any(|e| matches!(e, compile::SetElement::Address(a) if *a == std::net::IpAddr::V4(ip)))
            })
            .map(|s| s.name.clone())
            .collect();
        if sets.is_empty() {
            return Err("no peer set of the node holds the labelled scraper".into());
        }
        Ok(sets)
    }

    async fn bursts(&mut self, phase: &mut Phase) -> Result<()> {
        let netns = self.node().netns.name().to_owned();
        for round in 0..self.settings.bursts {
            let pods: Vec<Value> = (0..BURST).map(|i| burst_pod(round, i)).collect();
            let ips: Vec<String> = pods
                .iter()
                .map(|p| p["status"]["podIP"].as_str().unwrap_or_default().to_owned())
                .collect();
            let holds = |summary: &Summary, present: bool| {
                let elements = summary.maps.get("ingress4").map_or(&[][..], Vec::as_slice);
                ips.iter().all(|ip| {
                    let prefix = format!("{ip} : ");
                    elements.iter().any(|e| e.starts_with(&prefix)) == present
                })
            };
            let started = Instant::now();
            create_all(&self.api.client, &pods).await?;
            let written = started.elapsed();
            let took = until_listed(&netns, "map", "ingress4", started, |s| holds(s, true)).await?;
            phase.burst_created.push(took);
            phase
                .burst_created_after_writes
                .push(took.saturating_sub(written));

            let started = Instant::now();
            futures::stream::iter(&pods)
                .map(|p| {
                    let name = p["metadata"]["name"].as_str().unwrap_or_default();
                    self.api.force_delete("ns-5", name)
                })
                .buffer_unordered(BURST)
                .try_collect::<Vec<()>>()
                .await?;
            phase
                .burst_deleted
                .push(until_listed(&netns, "map", "ingress4", started, |s| holds(s, false)).await?);
        }
        Ok(())
    }

    async fn full_resyncs(&mut self, phase: &mut Phase) -> Result<()> {
        // What no agent can beat: the API server answering the list a start begins with.
        for _ in 0..3 {
            let request = http::Request::get("/api/v1/pods?resourceVersion=0")
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            let started = Instant::now();
            let text = self
                .api
                .client
                .request_text(request)
                .await
                .map_err(|e| format!("listing pods: {e}"))?;
            phase.pods_listed.push(started.elapsed());
            if text.len() < 100 {
                return Err(format!("listing pods: {text}"));
            }
        }
        self.say_relay_cost().await?;
        self.agent.kill();
        let started = Instant::now();
        self.agent.start()?;
        phase.resync_with_table = self.wait_ready(started).await?;
        self.say_start_milestones();
        self.wait_exact().await?;

        self.agent.kill();
        nft::run(
            self.node().netns.name(),
            &["delete", "table", TABLE_FAMILY, TABLE_NAME],
            None,
        )
        .await?;
        let started = Instant::now();
        self.agent.start()?;
        let profile = Profile::start(Target::Process(self.pid()?), "resync")?;
        phase.resync_without_table = self.wait_ready(started).await?;
        profile.stop();
        self.say_start_milestones();
        self.wait_exact().await?;
        phase.fresh_memory_kib = self.memory()?;
        Ok(())
    }

    /// Creates the cluster at scale (all but `ns-5`, there already) with many requests in
    /// parallel; returns how long until the table held all of it, and the agent's CPU meanwhile.
    async fn load_scale(&mut self) -> Result<(Duration, Usage)> {
        let scale = ScaleCluster::with_monitoring(self.settings.namespaces, SCALE_FIRST_IP);
        let namespaces: Vec<Value> = (0..scale.namespaces)
            .filter(|n| *n != BENCH_NS)
            .map(|n| {
                namespace_object(
                    &ScaleCluster::namespace_name(n),
                    &ScaleCluster::namespace_labels(n),
                )
            })
            .collect();
        let mut rest: Vec<Value> = (0..scale.namespaces)
            .filter(|n| *n != BENCH_NS)
            .flat_map(|n| scale.policies(n))
            .collect();
        rest.extend(ScaleCluster::cluster_policies(
            self.settings.cluster_policies,
        ));
        rest.extend(scale.pods().map(|p| p.object()));
        let before = Usage::of(self.pid()?)?;
        let started = Instant::now();
        create_all(&self.api.client, &namespaces).await?;
        create_all(&self.api.client, &rest).await?;
        let written = started.elapsed();
        self.objects.extend(namespaces);
        self.objects.extend(rest);
        self.wait_exact_within(LOAD_LIMIT).await?;
        let converged = started.elapsed();
        say(&format!(
            "bench: {} objects written in {:.1} s; the table held them all {:.1} s after the first write",
            self.objects.len(),
            written.as_secs_f64(),
            converged.as_secs_f64()
        ));
        let usage = Usage::of(self.pid()?)?.since(&before, converged);
        Ok((converged, usage))
    }

    /// Fills the node's conntrack table with [`tracked::ENTRIES`] allowed connections and runs
    /// (a) and (b) again: their latency beside the same at scale without them, the revocation
    /// passes' count and mean time, and that none of the connections was ended.
    async fn with_tracked_connections(&mut self) -> Result<Tracked> {
        let scale = ScaleCluster::with_monitoring(self.settings.namespaces, SCALE_FIRST_IP);
        let entries = if self.settings.quick {
            tracked::ENTRIES / 10
        } else {
            tracked::ENTRIES
        };
        let connections = tracked::allowed_connections(scale, NODES[NODE].0, entries);
        let inserted_in = tracked::insert(self.node().netns.name(), &connections)?;
        let inside = &self.cluster.nodes[NODE].inside;
        let before = tracked::Passes::read(inside).await?;
        let usage_before = Usage::of(self.pid()?)?;
        let started = Instant::now();
        let mut phase = Phase::default();
        self.new_policies(&mut phase).await?;
        self.wait_exact().await?;
        self.label_changes(&mut phase).await?;
        self.wait_exact().await?;
        let usage = Usage::of(self.pid()?)?.since(&usage_before, started.elapsed());
        let after = tracked::Passes::read(&self.cluster.nodes[NODE].inside).await?;
        let (passes, mean_pass) = after.since(&before);
        Ok(Tracked {
            entries: connections.len(),
            inserted_in,
            phase,
            usage,
            passes,
            mean_pass,
            judged: after.connections,
            revoked: after.revoked - before.revoked,
        })
    }

    fn report_tracked(&self, scale: &Phase, tracked: &Tracked) {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "
revocation at scale: {} allowed connections tracked on the node (inserted in {:.1} s); the last pass judged {} entries",
            tracked.entries,
            tracked.inserted_in.as_secs_f64(),
            tracked.judged
        );
        let _ = writeln!(
            out,
            "| operation (until) | n | at scale p50 / p99 | with the connections p50 / p99 | p99 ratio | target |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
        let rows: [(&str, Samples); 2] = [
            (
                "(a) new policy selecting a local pod (a probe connects)",
                |p| &p.new_policy,
            ),
            (
                "(b) peer of 100 policies labelled (a probe connects)",
                |p| &p.label_added,
            ),
        ];
        for (what, get) in rows {
            let (s, t) = (get(scale), get(&tracked.phase));
            let _ = writeln!(
                out,
                "| {what} | {} | {} / {} | {} / {} | {:.2} | unchanged within noise |",
                t.len(),
                ms(percentile(s, 0.5)),
                ms(percentile(s, 0.99)),
                ms(percentile(t, 0.5)),
                ms(percentile(t, 0.99)),
                ratio(percentile(t, 0.99), percentile(s, 0.99)),
            );
        }
        let _ = writeln!(
            out,
            "| revocation passes (after each change) | {} | | mean {:.1} ms each | | |",
            tracked.passes,
            tracked.mean_pass * 1000.0
        );
        let _ = writeln!(
            out,
            "| CPU during those changes (agent + its nft) | | | {} | | |",
            tracked.usage
        );
        let _ = writeln!(
            out,
            "| connections ended (all were allowed) | | | {} | | 0 |",
            tracked.revoked
        );
        say(&out);
    }

    /// The agent's CPU over the idle period.
    async fn idle(&mut self) -> Result<Usage> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = Usage::of(self.pid()?)?;
        tokio::time::sleep(self.settings.idle).await;
        Ok(Usage::of(self.pid()?)?.since(&before, self.settings.idle))
    }

    fn report(
        &self,
        baseline: &Phase,
        scale: &Phase,
        load: Duration,
        load_usage: &Usage,
        converged_memory: (u64, u64),
        idle: &Usage,
    ) {
        let pods = self.objects.iter().filter(|o| o["kind"] == "Pod").count();
        let policies = self
            .objects
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy")
            .count();
        let cluster_policies = self
            .objects
            .iter()
            .filter(|o| o["kind"] == "ClusterNetworkPolicy")
            .count();
        let namespaces = self
            .objects
            .iter()
            .filter(|o| o["kind"] == "Namespace")
            .count();
        let local = self
            .objects
            .iter()
            .filter(|o| o["kind"] == "Pod" && o["spec"]["nodeName"] == NODES[NODE].0)
            .count();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nprogramming latency{}: one agent on {} against kube-apiserver v1.20.2; at scale {pods} pods ({local} on the node, 3 of them real), {namespaces} namespaces, {policies} policies, {cluster_policies} cluster policies",
            if self.settings.quick {
                " (KNP_BENCH_QUICK)"
            } else {
                ""
            },
            NODES[NODE].0
        );
        let _ = writeln!(
            out,
            "| operation (until) | n | baseline p50 / p99 | at scale p50 / p99 | p99 ratio | target |"
        );
        let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
        let rows: [(&str, Samples, &str); 10] = [
            (
                "(a) new policy selecting a local pod (a probe connects)",
                |p| &p.new_policy,
                "p99 < 100 ms",
            ),
            (
                "(a) that policy deleted (its rule gone, read back)",
                |p| &p.policy_deleted,
                "",
            ),
            (
                "(b) peer of 100 policies labelled (a probe connects)",
                |p| &p.label_added,
                "p99 < 100 ms",
            ),
            (
                "(b) that label removed (out of every peer set, read back)",
                |p| &p.label_removed,
                "",
            ),
            (
                "(d) new Admin ClusterNetworkPolicy accepting a flow (a probe connects)",
                |p| &p.cluster_policy_added,
                "p99 < 100 ms",
            ),
            (
                "(d) that policy deleted (its rule gone, read back)",
                |p| &p.cluster_policy_deleted,
                "",
            ),
            (
                "(c) 100 pods created at once on the node (all in the map)",
                |p| &p.burst_created,
                "< 1 s",
            ),
            (
                "(c) the same, counted from the last API write",
                |p| &p.burst_created_after_writes,
                "",
            ),
            (
                "(c) those 100 pods deleted (all gone from the map)",
                |p| &p.burst_deleted,
                "",
            ),
            (
                "for reference: the API server lists all pods (resourceVersion=0, as text; p99 of 3 is the slowest)",
                |p| &p.pods_listed,
                "",
            ),
        ];
        for (what, get, target) in rows {
            let (b, s) = (get(baseline), get(scale));
            if s.is_empty() && b.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "| {what} | {} | {} / {} | {} / {} | {:.2} | {target} |",
                s.len(),
                ms(percentile(b, 0.5)),
                ms(percentile(b, 0.99)),
                ms(percentile(s, 0.5)),
                ms(percentile(s, 0.99)),
                ratio(percentile(s, 0.99), percentile(b, 0.99)),
            );
        }
        for (what, get) in [
            (
                "full resync: agent restarted, its table in place (until /readyz)",
                (|p: &Phase| p.resync_with_table) as fn(&Phase) -> Duration,
            ),
            (
                "full resync: agent started, no table (until /readyz)",
                |p| p.resync_without_table,
            ),
        ] {
            let (b, s) = (get(baseline), get(scale));
            let _ = writeln!(
                out,
                "| {what} | 1 | {} | {} | {:.2} | < 1 s |",
                ms(b),
                ms(s),
                ratio(s, b)
            );
        }
        let _ = writeln!(out, "\nagent footprint at scale");
        let _ = writeln!(out, "| what | figure | baseline | target |");
        let _ = writeln!(out, "| --- | --- | --- | --- |");
        let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
        let _ = writeln!(
            out,
            "| VmRSS / VmHWM, running agent after the load | {} / {} | | < 64 MiB |",
            mib(converged_memory.0),
            mib(converged_memory.1)
        );
        let _ = writeln!(
            out,
            "| VmRSS / VmHWM, fresh agent after a full resync | {} / {} | {} / {} | < 64 MiB |",
            mib(scale.fresh_memory_kib.0),
            mib(scale.fresh_memory_kib.1),
            mib(baseline.fresh_memory_kib.0),
            mib(baseline.fresh_memory_kib.1)
        );
        let _ = writeln!(
            out,
            "| CPU idle for {:?} (agent + its nft) | {} | | near zero |",
            self.settings.idle, idle
        );
        let _ = writeln!(
            out,
            "| CPU while the cluster loads ({:.1} s) | {} | | |",
            load.as_secs_f64(),
            load_usage
        );
        if let (Some(b), Some(s)) = (&baseline.churn, &scale.churn) {
            let _ = writeln!(out, "| CPU during (a) to (c) | {s} | {b} | |");
        }
        say(&out);
    }
}

/// Connects from `from` to `to`, waiting at most `wait` for the SYN-ACK.
async fn connects(from: &InNetns, to: SocketAddr, wait: Duration) -> Result<bool> {
    let socket = from
        .socket(Domain::IPV4, Type::STREAM, None)
        .await
        .map_err(|e| format!("probe socket: {e}"))?;
    let socket = TcpSocket::from_std_stream(socket.into());
    match timeout(wait, socket.connect(to)).await {
        Err(_) => Ok(false),
        Ok(Ok(_stream)) => Ok(true),
        Ok(Err(e)) => Err(format!("probe to {to}: {e}")),
    }
}

/// Probes until a connection gets through; the time since `started`.
async fn until_connects(from: &InNetns, to: SocketAddr, started: Instant) -> Result<Duration> {
    loop {
        if connects(from, to, PROBE_WAIT).await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > LIMIT {
            return Err(format!("no connection to {to} within {LIMIT:?}"));
        }
    }
}

/// Reads one object of the table back (`nft -j list KIND inet kube-nftpol NAME`) until `done`
/// holds; the time since `started`.
async fn until_listed(
    netns: &str,
    kind: &str,
    name: &str,
    started: Instant,
    done: impl Fn(&Summary) -> bool,
) -> Result<Duration> {
    loop {
        let listing = nft::run(
            netns,
            &["-j", "list", kind, TABLE_FAMILY, TABLE_NAME, name],
            None,
        )
        .await?;
        let (summary, _) = readback::parse(&listing).map_err(|e| format!("{kind} {name}: {e}"))?;
        if done(&summary) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > LIMIT {
            return Err(format!("{kind} {name} not as expected within {LIMIT:?}"));
        }
        tokio::time::sleep(READBACK_EVERY).await;
    }
}

/// Reads chain `chain` back until no rule has `comment` (or the chain is gone, as a tier chain
/// goes with the last policy of its tier); the time since `started`.
async fn until_rule_gone(
    netns: &str,
    chain: &str,
    comment: &str,
    started: Instant,
) -> Result<Duration> {
    loop {
        let args = ["-j", "list", "chain", TABLE_FAMILY, TABLE_NAME, chain];
        match nft::run(netns, &args, None).await {
            Ok(listing) => {
                let (summary, _) =
                    readback::parse(&listing).map_err(|e| format!("chain {chain}: {e}"))?;
                if summary
                    .chains
                    .get(chain)
                    .is_none_or(|rules| rules.iter().all(|(c, _)| c != comment))
                {
                    return Ok(started.elapsed());
                }
            }
            Err(error) if error.contains("No such file or directory") => {
                return Ok(started.elapsed());
            }
            Err(error) => return Err(error),
        }
        if started.elapsed() > LIMIT {
            return Err(format!(
                "chain {chain} still has {comment:?} after {LIMIT:?}"
            ));
        }
        tokio::time::sleep(READBACK_EVERY).await;
    }
}

/// Creates Namespace, Pod (then its status) and NetworkPolicy objects, many at once.
async fn create_all(client: &Client, items: &[Value]) -> Result<()> {
    futures::stream::iter(items)
        .map(|item| create(client, item))
        .buffer_unordered(PARALLEL_WRITES)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

async fn create(client: &Client, item: &Value) -> Result<()> {
    let params = PostParams::default();
    let namespace = item["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = item["metadata"]["name"].as_str().unwrap_or_default();
    let failed =
        |e: kube::Error| format!("creating {namespace}/{name}: {}", crate::error_chain(&e));
    match item["kind"].as_str() {
        Some("Namespace") => {
            Api::<core::Namespace>::all(client.clone())
                .create(&params, &decode(item)?)
                .await
                .map_err(failed)?;
        }
        Some("NetworkPolicy") => {
            Api::<networking::NetworkPolicy>::namespaced(client.clone(), namespace)
                .create(&params, &decode(item)?)
                .await
                .map_err(failed)?;
        }
        Some("ClusterNetworkPolicy") => {
            Api::<kube_nftpol::source::kubernetes::ClusterPolicyObject>::all(client.clone())
                .create(&params, &decode(item)?)
                .await
                .map_err(failed)?;
        }
        Some("Pod") => {
            let api = Api::<core::Pod>::namespaced(client.clone(), namespace);
            let mut pod: core::Pod = decode(item)?;
            pod.status = None;
            api.create(&params, &pod).await.map_err(failed)?;
            let status = json!({"status": {
                "phase": item["status"]["phase"],
                "podIP": item["status"]["podIP"],
                "podIPs": item["status"]["podIPs"],
            }});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .map_err(failed)?;
        }
        other => return Err(format!("cannot create a {other:?}")),
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(item: &Value) -> Result<T> {
    serde_json::from_value(item.clone()).map_err(|e| format!("{item}: {e}"))
}

fn namespace_object(name: &str, labels: &std::collections::BTreeMap<String, String>) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

/// A running pod with its status, as the simulator's kubelet reports it.
fn pod_object(
    namespace: &str,
    name: &str,
    labels: Value,
    node: &str,
    ip: Ipv4Addr,
    ports: Value,
) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "agnhost", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]},
    })
}

/// The three real pods, each serving `http` on port 80.
fn real_pod_objects() -> Vec<Value> {
    let ports = json!([{"name": "http", "containerPort": 80, "protocol": "TCP"}]);
    [
        (Real::SERVER, json!({"app": "app-0", "bench": "server"})),
        (Real::CLIENT, json!({"bench": "client"})),
        (Real::SCRAPER, json!({"bench": "scraper"})),
    ]
    .into_iter()
    .map(|((namespace, name, ip), labels)| {
        pod_object(namespace, name, labels, NODES[NODE].0, ip, ports.clone())
    })
    .collect()
}

/// `bench-client` may send to `bench-server` on port 80 (its namespace denies egress).
fn client_egress_policy() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "ns-5", "name": "bench-client-egress"},
        "spec": {"podSelector": {"matchLabels": {"bench": "client"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"podSelector": {"matchLabels": {"bench": "server"}}}],
                             "ports": [{"port": 80, "protocol": "TCP"}]}]}
    })
}

/// The policy of (a): `bench-server` admits `bench-client` on port 80.
fn new_policy(i: usize) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "ns-5", "name": format!("bench-new-{i}")},
        "spec": {"podSelector": {"matchLabels": {"bench": "server"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"bench": "client"}}}],
                              "ports": [{"port": 80, "protocol": "TCP"}]}]}
    })
}

/// Pod `i` of burst `round`: `ns-5/burst-R-I` on the node, address `10.101.R.(I+2)`.
fn burst_pod(round: usize, i: usize) -> Value {
    let ip = Ipv4Addr::new(10, 101, round as u8, (i + 2) as u8);
    let ports = json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]);
    let labels = json!({"app": format!("app-{}", i % 5)});
    pod_object(
        "ns-5",
        &format!("burst-{round}-{i}"),
        labels,
        NODES[NODE].0,
        ip,
        ports,
    )
}

/// The nearest-rank percentile `p` (0 to 1) of `samples`; zero for none.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn ratio(scale: Duration, baseline: Duration) -> f64 {
    scale.as_secs_f64() / baseline.as_secs_f64().max(1e-9)
}
