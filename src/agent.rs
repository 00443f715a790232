//! The node agent: wires the source, the control loop ([`control`]: snapshot, compile,
//! dataplane), the pod interface watcher, the drop log and the flow counters, and owns the
//! [`State`] they share with the HTTP endpoints.
//!
//! ```text
//! Kubernetes API or directory source --(complete snapshots, coalesced)--+
//! rtnetlink (pod veths, for anti-spoofing) ------------+--> compile(node) --> Dataplane::apply
//!                                       resync timer --> Dataplane::check (repair)
//! kernel NFLOG (drops, observed flows) --> decode, dedup, enrich with the snapshot --> stdout lines
//!                                                  \-> recent flows window --> /flows, /hints
//! rule counters (every few seconds, on scrape) --> flowmetrics --> /metrics
//! snapshots (at most once a minute, on the blocking pool) --> lint --> posture metric
//! applied snapshots --> conntrack: end what they deny (revoked sets, delete) --> revoke lines
//! ```
//!
//! Snapshots arrive on a `watch` channel, so a burst of changes collapses into the latest one
//! and an idle agent does no work. The first ruleset is applied only after the first complete
//! load; `/readyz` turns ready once it is verified in the kernel. A failed apply leaves the
//! previous ruleset enforcing and is retried on the next change or resync. On SIGTERM or
//! SIGINT the agent stops and leaves its table in place: a restarted agent takes it over in
//! one transaction, so a restart never opens traffic.

mod bindings;
mod control;
mod drop_log;
mod posture;
mod recent_flows;
mod revocation;
mod state;

pub use control::{ApplyKind, ApplyLabels, ControlMetrics};
pub use drop_log::{DropLogMetrics, DropLogOptions};
pub use posture::{FindingLabels, PostureMetrics, PostureOptions};
pub use recent_flows::{MAX_FLOWS as MAX_RECENT_FLOWS, Occupancy, RecentFlows, Report};
pub use revocation::{REVOKED_TIMEOUT, RevocationMetrics, RevokedLabels, revocation_line};
pub use state::{Metrics, State};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::access::{self, Access, Reviewer};
use crate::compile::Options;
use crate::dataplane::Dataplane;
use crate::dataplane::nft::Nft;
use crate::events::Events;
use crate::flowmetrics::{self, FlowCounters};
use crate::model::PodInterfaces;
use crate::source::{ChangeClock, directory, kubernetes};

/// Tables of other policy engines that AND their verdicts with ours when both run.
const OTHER_ENGINE_TABLES: &[&str] = &["inet kindnet-network-policies"];

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node whose pods this agent polices.
    pub node_name: String,
    /// Where the cluster is read from.
    pub source: Source,
    /// Compiler options (NFLOG group, log rate).
    pub compile: Options,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub metrics_addr: SocketAddr,
    /// How often the table is read back and repaired if someone changed it.
    pub resync_interval: Duration,
    /// How drops are logged (dedup window, format).
    pub drop_log: DropLogOptions,
    /// Who may read `/flows` and `/hints`.
    pub flows_auth: access::Mode,
    /// How the cluster's posture is linted for the metric.
    pub posture: PostureOptions,
}

/// Where the agent reads the cluster from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The Kubernetes API, with the client configuration of `kubeconfig`, or else the standard
    /// one (`KUBECONFIG`, `~/.kube/config`, in-cluster service account).
    Kubernetes {
        /// An explicit kubeconfig file.
        kubeconfig: Option<PathBuf>,
    },
    /// A directory of manifests, checked for changes every `poll_interval`.
    Manifests {
        /// The directory (or file).
        path: PathBuf,
        /// How often the files' metadata is checked.
        poll_interval: Duration,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kubernetes { kubeconfig: None } => f.write_str("kubernetes"),
            Self::Kubernetes {
                kubeconfig: Some(path),
            } => write!(f, "kubernetes ({})", path.display()),
            Self::Manifests { path, .. } => write!(f, "manifests {}", path.display()),
        }
    }
}

/// A Kubernetes client from an explicit kubeconfig, or the standard configuration.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = kube_config(kubeconfig).await?;
    kube::Client::try_from(config).context("creating the Kubernetes client")
}

/// The Kubernetes client configuration of an explicit kubeconfig, or the standard one
/// (in-cluster, `KUBECONFIG`, `~/.kube/config`).
pub async fn kube_config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes client configuration (in-cluster, KUBECONFIG or ~/.kube/config); pass --kubeconfig or --manifests")?,
    })
}

/// Runs the agent until SIGTERM or SIGINT, sharing `state` with whoever serves it (the HTTP
/// endpoints).
pub async fn run(config: Config, state: Arc<State>) -> anyhow::Result<()> {
    let metrics = state.metrics().clone();
    let nft = Nft::default();
    warn_about_other_engines(&nft).await;

    let (interfaces_tx, interfaces_rx) = watch::channel(PodInterfaces::new());
    let (bridged_tx, bridged_rx) = watch::channel(Vec::new());
    let interfaces = tokio::spawn(crate::dataplane::interfaces::watch_with_bridges(
        interfaces_tx,
        Some(bridged_tx),
    ));
    let (tx, rx) = watch::channel(None);
    state.recent_flows().follow(rx.clone());
    let clock = Arc::new(ChangeClock::default());
    let mut events = None;
    let source = match &config.source {
        Source::Kubernetes { kubeconfig } => {
            let client = kube_client(kubeconfig.as_deref()).await?;
            state.set_access(match config.flows_auth {
                access::Mode::Kubernetes => Access::kubernetes(
                    Reviewer::new(client.clone(), &config.node_name, metrics.access.clone()),
                    metrics.access.clone(),
                ),
                access::Mode::Open => Access::open(metrics.access.clone()),
            });
            let writer = Events::spawn(client.clone(), config.node_name.clone(), metrics.events);
            events = Some(writer.clone());
            tokio::spawn(kubernetes::watch(
                client,
                tx,
                Arc::clone(&clock),
                metrics.source,
                writer,
            ))
        }
        Source::Manifests {
            path,
            poll_interval,
        } => {
            // No API server to review readers' tokens with.
            state.set_access(match config.flows_auth {
                access::Mode::Kubernetes => Access::no_api_server(metrics.access.clone()),
                access::Mode::Open => Access::open(metrics.access.clone()),
            });
            tokio::spawn(directory::watch(
                path.clone(),
                *poll_interval,
                tx,
                Arc::clone(&clock),
                metrics.source,
            ))
        }
    };
    let drops = tokio::spawn(drop_log::run(
        config.compile.nflog_group,
        config.drop_log,
        rx.clone(),
        metrics.drop_log,
        Arc::clone(&state),
        events,
    ));
    let flows = Arc::new(FlowCounters::new(
        nft.kernel().clone(),
        &metrics.flows,
        rx.clone(),
    ));
    // Before the first apply: what a previous agent's rules counted is not reported as new.
    flows.baseline().await;
    state.set_flow_counters(Arc::clone(&flows));
    let flow_counters = tokio::spawn(flowmetrics::run(flows));
    let posture = tokio::spawn(posture::run(
        rx.clone(),
        config.posture.clone(),
        metrics.posture,
        Arc::clone(&state),
    ));
    let (applied_tx, applied_rx) = watch::channel(None);
    let revocation = config.compile.revoke_established.then(|| {
        tokio::spawn(revocation::run(
            revocation::Revoker {
                node: config.node_name.clone(),
                audit_all: config.compile.audit_all,
                format: config.drop_log.format,
                nft: nft.clone(),
                metrics: metrics.revocation.clone(),
                state: Arc::clone(&state),
            },
            applied_rx,
        ))
    });
    info!(node = %config.node_name, source = %config.source, addr = %config.metrics_addr, "agent started");

    let result = control::control_loop(
        &config,
        rx,
        control::PodLinks {
            interfaces: interfaces_rx,
            bridged: bridged_rx,
        },
        Dataplane::new(nft),
        &state,
        &clock,
        &applied_tx,
    )
    .await;
    if let Some(revocation) = revocation {
        revocation.abort();
    }
    interfaces.abort();
    drops.abort();
    flow_counters.abort();
    posture.abort();
    source.abort();
    info!("agent stopped; the table stays in place and keeps enforcing");
    result
}

async fn warn_about_other_engines(nft: &Nft) {
    match nft.list_tables().await {
        Ok(tables) => {
            for table in tables
                .iter()
                .filter(|t| OTHER_ENGINE_TABLES.contains(&t.as_str()))
            {
                warn!(%table, "another NetworkPolicy engine runs on this node; its verdicts and ours both apply (turn it off: see docs/agent.md, section kind)");
            }
        }
        Err(error) => warn!(%error, "cannot list nftables tables"),
    }
}
