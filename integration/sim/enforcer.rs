//! What puts policy into the nodes' kernels, pluggable:
//!
//! - [`Mode::Static`]: `kube-nftpol compile --manifests DIR --node NODE`, loaded into each node
//!   namespace with `nft -f` (the old table deleted and the new one loaded in the same
//!   transaction). Tests the compiler and the manifest loader on real packets.
//! - [`Mode::Dataplane`]: the library's [`Dataplane`] in this process, driving `nft` inside
//!   each node namespace: full replace first, incremental updates after, as the agent does.
//!   A "restart" drops it and starts a fresh one over the table it left.
//! - [`Mode::ApiAgent`]: `kube-nftpol agent --kubeconfig` processes reading the cluster from a
//!   real kube-apiserver, which this harness fills as kubelet and CNI would ([`crate::api`]).
//! - [`Mode::Agent`]: `kube-nftpol agent` processes, one per node ([`crate::agent`]), which
//!   find changes in the manifest directory themselves. A restart is SIGKILL and a new
//!   process.
//!
//! Whatever the mode, [`Enforcer::apply`] writes the case's manifests and returns once every
//! node's table holds what the compiler makes of the case ([`crate::nft::applied`]), checked
//! by reading the kernel back, never by trusting the enforcer.

use std::time::{Duration, Instant};

use kube_nftpol::compile::{self, Options, Ruleset, TABLE_FAMILY, TABLE_NAME};
use kube_nftpol::dataplane::Dataplane;
use kube_nftpol::dataplane::nft::Nft;
use kube_nftpol::dataplane::readback::Summary;
use kube_nftpol::source::manifests;

use crate::agent::{self, NetnsProcess};
use crate::api::{ApiCluster, Relay};
use crate::cluster::Cluster;
use crate::conformance_data::Case;
use crate::{Result, error_chain, nft};
use serde_json::Value;

/// How long an enforcer may take to bring the kernel to a new state.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// Which enforcer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `kube-nftpol compile` output loaded with `nft -f`.
    Static,
    /// The library's dataplane, in process.
    Dataplane,
    /// `kube-nftpol agent` processes.
    Agent,
    /// `kube-nftpol agent --kubeconfig` processes and a real API server.
    ApiAgent,
    /// The agent as `deploy/daemonset.yaml` runs it (arguments, environment, capabilities),
    /// with a real API server.
    Container,
}

impl Mode {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Static => "static compile",
            Self::Dataplane => "in-process dataplane",
            Self::Agent => "agent",
            Self::ApiAgent => "agent with the API server",
            Self::Container => "agent as the DaemonSet runs it",
        }
    }
}

enum Running {
    Static,
    /// One per node; empty while "stopped".
    Dataplane(Vec<Dataplane>),
    /// One per node.
    Agent(Vec<NetnsProcess>),
    /// One agent and one relay per node, and the API server they read.
    ApiAgent {
        agents: Vec<NetnsProcess>,
        api: Box<ApiCluster>,
        _relays: Vec<Relay>,
        container: bool,
    },
}

/// The enforcer of one cluster.
pub struct Enforcer {
    mode: Mode,
    running: Running,
    resync_interval_secs: u64,
}

impl Enforcer {
    /// Starts enforcing `case` on every node and waits until the kernels hold it.
    pub async fn start(mode: Mode, cluster: &Cluster, case: &Case) -> Result<Self> {
        Self::start_with_resync(mode, cluster, case, agent::RESYNC_INTERVAL_SECS).await
    }

    /// [`Self::start`], with agents that check and repair their table every
    /// `resync_interval_secs` (agent modes but [`Mode::Container`]).
    pub async fn start_with_resync(
        mode: Mode,
        cluster: &Cluster,
        case: &Case,
        resync_interval_secs: u64,
    ) -> Result<Self> {
        let running = Self::running(mode, cluster).await?;
        let mut this = Self {
            mode,
            running,
            resync_interval_secs,
        };
        cluster.write_manifests(case)?;
        this.resume(cluster, case).await?;
        Ok(this)
    }

    /// [`Self::start`] for a cluster described by its objects (Namespaces, Nodes, Pods with
    /// status, policies of every kind) rather than by an upstream case.
    pub async fn start_objects(mode: Mode, cluster: &Cluster, objects: &[Value]) -> Result<Self> {
        let running = Self::running(mode, cluster).await?;
        let mut this = Self {
            mode,
            running,
            resync_interval_secs: agent::RESYNC_INTERVAL_SECS,
        };
        cluster.write_objects(objects)?;
        let expected = expected_from_objects(cluster, objects, this.learns_veths())?;
        this.resume_with(cluster, objects, &expected).await?;
        Ok(this)
    }

    /// [`Self::apply`] for a cluster described by its objects.
    pub async fn apply_objects(
        &mut self,
        cluster: &Cluster,
        objects: &[Value],
    ) -> Result<Duration> {
        let started = Instant::now();
        cluster.write_objects(objects)?;
        let expected = expected_from_objects(cluster, objects, self.learns_veths())?;
        self.act(cluster, objects, &expected).await?;
        self.wait_applied(cluster, &expected).await?;
        Ok(started.elapsed())
    }

    async fn running(mode: Mode, cluster: &Cluster) -> Result<Running> {
        Ok(match mode {
            Mode::Static => Running::Static,
            Mode::Dataplane => Running::Dataplane(Vec::new()),
            Mode::Agent => Running::Agent(Vec::new()),
            Mode::ApiAgent | Mode::Container => {
                let api = ApiCluster::start().await?;
                let mut relays = Vec::new();
                for node in &cluster.nodes {
                    relays.push(Relay::start(node.netns.name(), api.addr()?).await?);
                }
                Running::ApiAgent {
                    agents: Vec::new(),
                    api: Box::new(api),
                    _relays: relays,
                    container: mode == Mode::Container,
                }
            }
        })
    }

    /// Makes the nodes enforce `case`: writes its manifests, has the enforcer act, and waits
    /// until every node's table holds the compiled case. Returns how long that took.
    pub async fn apply(&mut self, cluster: &Cluster, case: &Case) -> Result<Duration> {
        let started = Instant::now();
        cluster.write_manifests(case)?;
        let learns_veths = self.learns_veths();
        let expected = cluster.expected(case, learns_veths);
        check_manifests(cluster, case, &expected, learns_veths)?;
        self.act(cluster, &cluster.objects(case), &expected).await?;
        self.wait_applied(cluster, &expected).await?;
        Ok(started.elapsed())
    }

    /// Has the enforcer take the manifests just written (`objects`, for the API server).
    async fn act(
        &mut self,
        cluster: &Cluster,
        objects: &[Value],
        expected: &[Ruleset],
    ) -> Result<()> {
        match &mut self.running {
            Running::Static => load_static(cluster).await?,
            Running::Dataplane(planes) => {
                for (plane, wanted) in planes.iter_mut().zip(expected) {
                    plane
                        .apply(wanted)
                        .await
                        .map_err(|e| format!("dataplane apply: {}", error_chain(&e)))?;
                }
            }
            // The agents notice the new files themselves.
            Running::Agent(_) => {}
            Running::ApiAgent { api, .. } => api.sync(objects).await?,
        }
        Ok(())
    }

    /// Stops enforcing without touching the kernel: SIGKILL for agents, dropping the
    /// dataplane; nothing for static loads. The tables stay in force.
    pub fn stop(&mut self) {
        match &mut self.running {
            Running::Static => {}
            Running::Dataplane(planes) => planes.clear(),
            Running::Agent(agents) | Running::ApiAgent { agents, .. } => {
                agents.iter_mut().for_each(NetnsProcess::kill)
            }
        }
    }

    /// Starts again after [`Self::stop`] (or for the first time) with the manifests of `case`
    /// in place, and waits until the kernels hold it (agents: `/readyz` first).
    pub async fn resume(&mut self, cluster: &Cluster, case: &Case) -> Result<()> {
        let learns_veths = self.learns_veths();
        let expected = cluster.expected(case, learns_veths);
        check_manifests(cluster, case, &expected, learns_veths)?;
        self.resume_with(cluster, &cluster.objects(case), &expected)
            .await
    }

    async fn resume_with(
        &mut self,
        cluster: &Cluster,
        objects: &[Value],
        expected: &[Ruleset],
    ) -> Result<()> {
        match &mut self.running {
            Running::Static => load_static(cluster).await?,
            Running::Dataplane(planes) => {
                planes.clear();
                for (node, wanted) in cluster.nodes.iter().zip(expected) {
                    let mut plane = Dataplane::new(Nft::in_netns(node.netns.name()));
                    plane.apply(wanted).await.map_err(|e| {
                        format!(
                            "dataplane first apply on {}: {}",
                            node.name,
                            error_chain(&e)
                        )
                    })?;
                    planes.push(plane);
                }
            }
            Running::Agent(agents) => {
                let source = agent::SourceArgs::Manifests(cluster.manifests());
                start_agents(cluster, agents, &source, self.resync_interval_secs)?;
                wait_ready(cluster, agents).await?;
            }
            Running::ApiAgent {
                agents,
                api,
                container,
                ..
            } => {
                api.sync(objects).await?;
                let source = if *container {
                    agent::SourceArgs::Container(api.service_account_kubeconfig(cluster.scratch())?)
                } else {
                    agent::SourceArgs::Kubeconfig(api.agent_kubeconfig(cluster.scratch())?)
                };
                start_agents(cluster, agents, &source, self.resync_interval_secs)?;
                wait_ready(cluster, agents).await?;
            }
        }
        self.wait_applied(cluster, expected).await
    }

    /// The API server, in [`Mode::ApiAgent`].
    pub fn api(&self) -> Option<&ApiCluster> {
        match &self.running {
            Running::ApiAgent { api, .. } => Some(api),
            _ => None,
        }
    }

    /// The API server, in [`Mode::ApiAgent`], to stop and start it.
    pub fn api_mut(&mut self) -> Option<&mut ApiCluster> {
        match &mut self.running {
            Running::ApiAgent { api, .. } => Some(api),
            _ => None,
        }
    }

    /// The agent processes, in the agent modes.
    pub fn agents(&mut self) -> &mut [NetnsProcess] {
        match &mut self.running {
            Running::Agent(agents) | Running::ApiAgent { agents, .. } => agents,
            _ => &mut [],
        }
    }

    /// Whether this enforcer knows the pods' veths (the agent learns them from routes and the
    /// in-process dataplane is given them); `kube-nftpol compile` does not.
    fn learns_veths(&self) -> bool {
        !matches!(self.running, Running::Static)
    }

    /// Polls every node's table until it holds the expected ruleset.
    async fn wait_applied(&mut self, cluster: &Cluster, expected: &[Ruleset]) -> Result<()> {
        let deadline = Instant::now() + APPLY_TIMEOUT;
        let summaries: Vec<Summary> = expected.iter().map(Summary::of).collect();
        loop {
            let mut pending = Vec::new();
            for (node, summary) in cluster.nodes.iter().zip(&summaries) {
                let listing = nft::list_table(node.netns.name()).await?;
                let differences = nft::applied(listing.as_deref(), summary)?;
                if !differences.is_empty() {
                    pending.push((node.name, differences));
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if let Running::Agent(agents) | Running::ApiAgent { agents, .. } = &mut self.running {
                for a in agents.iter_mut() {
                    if let Some(status) = a.exited() {
                        return Err(format!("the agent exited ({status})\n{}", a.log_tail(30)));
                    }
                }
            }
            if Instant::now() > deadline {
                let mut report = format!(
                    "{}: the kernel did not reach the expected tables within {APPLY_TIMEOUT:?}:",
                    self.mode.name()
                );
                for (node, differences) in pending {
                    report.push_str(&format!("\n  {node}:"));
                    for d in differences.iter().take(10) {
                        report.push_str(&format!("\n    {d}"));
                    }
                }
                if let Running::Agent(agents) | Running::ApiAgent { agents, .. } = &self.running {
                    for a in agents {
                        report.push('\n');
                        report.push_str(&a.log_tail(20));
                    }
                }
                return Err(report);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What each node must hold for a cluster given as objects: the manifest loader's snapshot of
/// them (the manifests just written), compiled for each node.
fn expected_from_objects(
    cluster: &Cluster,
    objects: &[Value],
    learns_veths: bool,
) -> Result<Vec<Ruleset>> {
    let loaded = manifests::load_dir(&cluster.manifests())
        .map_err(|e| format!("the written manifests do not load: {e}"))?;
    let from_objects = crate::cnp_data::load(objects)?;
    let compile_all = |snapshot: &kube_nftpol::Snapshot| -> Vec<Ruleset> {
        cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                let interfaces = cluster.interfaces(index, learns_veths);
                compile::compile_with_interfaces(
                    snapshot,
                    node.name,
                    &interfaces,
                    &Options::default(),
                )
            })
            .collect()
    };
    let expected = compile_all(&from_objects.snapshot);
    if compile_all(&loaded.snapshot) != expected {
        return Err(format!(
            "the manifests compile differently from the objects (warnings: {:?})",
            loaded.warnings
        ));
    }
    Ok(expected)
}

/// The manifests just written must mean what the case means: the loader's snapshot compiles
/// to the same rulesets as [`Case::snapshot_with`] (guards the manifest writer, and the
/// expectation the tables are compared with).
fn check_manifests(
    cluster: &Cluster,
    case: &Case,
    expected: &[Ruleset],
    learns_veths: bool,
) -> Result<()> {
    let loaded = manifests::load_dir(&cluster.manifests())
        .map_err(|e| format!("{}: the written manifests do not load: {e}", case.name))?;
    for (index, (node, wanted)) in cluster.nodes.iter().zip(expected).enumerate() {
        let interfaces = cluster.interfaces(index, learns_veths);
        let from_files = compile::compile_with_interfaces(
            &loaded.snapshot,
            node.name,
            &interfaces,
            &Options::default(),
        );
        if &from_files != wanted {
            return Err(format!(
                "{}: the manifests compile differently from the case on {} (warnings: {:?})",
                case.name, node.name, loaded.warnings
            ));
        }
    }
    Ok(())
}

/// `kube-nftpol compile` for each node, loaded in one transaction that deletes the old table.
async fn load_static(cluster: &Cluster) -> Result<()> {
    let manifests = cluster.manifests();
    for node in &cluster.nodes {
        let out = tokio::process::Command::new(agent::binary())
            .arg("compile")
            .arg("--manifests")
            .arg(&manifests)
            .args(["--node", node.name])
            .output()
            .await
            .map_err(|e| format!("cannot run kube-nftpol compile: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "kube-nftpol compile --node {} failed: {}",
                node.name,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // `table` first so `delete` finds one on the first load.
        let script = format!(
            "table {TABLE_FAMILY} {TABLE_NAME}\ndelete table {TABLE_FAMILY} {TABLE_NAME}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        nft::apply(node.netns.name(), &script).await?;
    }
    Ok(())
}

/// Starts one agent per node the first time, and restarts killed ones after that.
fn start_agents(
    cluster: &Cluster,
    agents: &mut Vec<NetnsProcess>,
    source: &agent::SourceArgs,
    resync_interval_secs: u64,
) -> Result<()> {
    if agents.is_empty() {
        for node in &cluster.nodes {
            let log = cluster.scratch().join(format!("agent-{}.log", node.name));
            let (program, args) = agent::command(node.name, source, resync_interval_secs)?;
            agents.push(NetnsProcess::spawn(node.netns.name(), &program, args, log)?);
        }
    } else {
        for a in agents.iter_mut().filter(|a| a.pid().is_none()) {
            a.start()?;
        }
    }
    Ok(())
}

/// Waits until every agent answers `/readyz` with 200.
async fn wait_ready(cluster: &Cluster, agents: &mut [NetnsProcess]) -> Result<()> {
    let deadline = Instant::now() + APPLY_TIMEOUT;
    for (node, a) in cluster.nodes.iter().zip(agents.iter_mut()) {
        loop {
            if agent::ready(&node.inside).await {
                break;
            }
            if let Some(status) = a.exited() {
                return Err(format!(
                    "the agent on {} exited ({status})\n{}",
                    node.name,
                    a.log_tail(30)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the agent on {} is not ready after {APPLY_TIMEOUT:?}\n{}",
                    node.name,
                    a.log_tail(30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
