//! The node agent: source, snapshot, compile, dataplane, in one loop.
//!
//! ```text
//! Kubernetes API or directory source --(complete snapshots, coalesced)--+
//! rtnetlink (pod veths, for anti-spoofing) ------------+--> compile(node) --> Dataplane::apply
//!                                       resync timer --> Dataplane::check (repair)
//! kernel NFLOG (default-deny drops) --> decode, dedup, enrich with the snapshot --> stdout lines
//!                                                                      \-> /hints aggregate
//! rule counters (every few seconds, on scrape) --> flowmetrics --> /metrics
//! ```
//!
//! Snapshots arrive on a `watch` channel, so a burst of changes collapses into the latest one
//! and an idle agent does no work. The first ruleset is applied only after the first complete
//! load; `/readyz` turns ready once it is verified in the kernel. A failed apply leaves the
//! previous ruleset enforcing and is retried on the next change or resync. On SIGTERM or
//! SIGINT the agent stops and leaves its table in place: a restarted agent takes it over in
//! one transaction, so a restart never opens traffic.

mod bindings;
mod denied_events;
mod drop_log;

use bindings::Bindings;
use denied_events::DeniedEvents;
pub use drop_log::DropLogOptions;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::compile::{self, Options, PodInterfaces, Ruleset};
use crate::dataplane::nft::Nft;
use crate::dataplane::{Applied, Check, Dataplane};
use crate::flowmetrics::{self, FlowCounters};
use crate::http::{self, Shared};
use crate::metrics::{ApplyKind, ApplyLabels, Metrics};
use crate::source::manifests::Loaded;
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
    let config = match kubeconfig {
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
    };
    kube::Client::try_from(config).context("creating the Kubernetes client")
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::new(Metrics::new()));
    let nft = Nft::default();
    warn_about_other_engines(&nft).await;

    let http_shared = Arc::clone(&shared);
    let addr = config.metrics_addr;
    let http = tokio::spawn(async move {
        if let Err(error) = http::serve(addr, http_shared).await {
            error!(error = %format!("{error:#}"), "HTTP endpoints stopped");
        }
    });

    let (interfaces_tx, interfaces_rx) = watch::channel(PodInterfaces::new());
    let (bridged_tx, bridged_rx) = watch::channel(Vec::new());
    let interfaces = tokio::spawn(crate::dataplane::interfaces::watch_with_bridges(
        interfaces_tx,
        Some(bridged_tx),
    ));
    let (tx, rx) = watch::channel(None);
    shared.hints.follow(rx.clone());
    let clock = Arc::new(ChangeClock::default());
    let mut denied_events = None;
    let source = match &config.source {
        Source::Kubernetes { kubeconfig } => {
            let client = kube_client(kubeconfig.as_deref()).await?;
            denied_events = Some(DeniedEvents::spawn(
                client.clone(),
                config.node_name.clone(),
                Arc::clone(&shared),
            ));
            tokio::spawn(kubernetes::watch(
                client,
                config.node_name.clone(),
                tx,
                Arc::clone(&clock),
                Arc::clone(&shared),
            ))
        }
        Source::Manifests {
            path,
            poll_interval,
        } => tokio::spawn(directory::watch(
            path.clone(),
            *poll_interval,
            tx,
            Arc::clone(&clock),
            Arc::clone(&shared),
        )),
    };
    let drops = tokio::spawn(drop_log::run(
        config.compile.nflog_group,
        config.drop_log,
        rx.clone(),
        Arc::clone(&shared),
        denied_events,
    ));
    let flows = Arc::new(FlowCounters::new(
        nft.kernel().clone(),
        &shared.metrics.flows,
        rx.clone(),
    ));
    // Before the first apply: what a previous agent's rules counted is not reported as new.
    flows.baseline().await;
    let _ = shared.flows.set(Arc::clone(&flows));
    let flow_counters = tokio::spawn(flowmetrics::run(flows));
    info!(node = %config.node_name, source = %config.source, %addr, "agent started");

    let result = control_loop(
        &config,
        rx,
        interfaces_rx,
        bridged_rx,
        Dataplane::new(nft),
        &shared,
        &clock,
    )
    .await;
    interfaces.abort();
    drops.abort();
    flow_counters.abort();
    source.abort();
    http.abort();
    info!("agent stopped; the table stays in place and keeps enforcing");
    result
}

async fn control_loop(
    config: &Config,
    mut snapshots: watch::Receiver<Option<Arc<Loaded>>>,
    mut interfaces: watch::Receiver<PodInterfaces>,
    mut bridged: watch::Receiver<Vec<IpAddr>>,
    mut dataplane: Dataplane,
    shared: &Shared,
    clock: &ChangeClock,
) -> anyhow::Result<()> {
    let mut resync = tokio::time::interval(config.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    let mut desired: Option<Ruleset> = None;
    let mut loaded: Option<Arc<Loaded>> = None;
    let mut interfaces_open = true;
    let mut bridged_open = true;
    let mut bridges_reported = false;
    let mut bindings = Bindings::default();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the source stopped");
                }
                loaded = snapshots.borrow_and_update().clone();
                let Some(current) = &loaded else { continue };
                let ruleset = compile_node(config, current, &mut bindings, &interfaces.borrow(), &bridged.borrow());
                let enforced = apply(&mut dataplane, &ruleset, shared).await;
                if enforced && let Some(seen) = clock.take() {
                    let latency = seen.elapsed();
                    shared.metrics.source.programming_latency.observe(latency.as_secs_f64());
                    debug!(micros = latency.as_micros(), "change enforced");
                }
                desired = Some(ruleset);
            }
            changed = interfaces.changed(), if loaded.is_some() && interfaces_open => {
                if changed.is_err() {
                    // The watcher only stops when the agent does; keep enforcing meanwhile.
                    warn!("the pod interface watcher stopped");
                    interfaces_open = false;
                    continue;
                }
                let Some(current) = &loaded else { continue };
                let ruleset = compile_node(
                    config,
                    current,
                    &mut bindings,
                    &interfaces.borrow_and_update(),
                    &bridged.borrow(),
                );
                apply(&mut dataplane, &ruleset, shared).await;
                desired = Some(ruleset);
            }
            changed = bridged.changed(), if bridged_open => {
                if changed.is_err() {
                    bridged_open = false;
                    continue;
                }
                let addresses = bridged.borrow_and_update().clone();
                if !addresses.is_empty() && !bridges_reported {
                    bridges_reported = true;
                    report_bridge_cni(addresses.len());
                }
                let Some(current) = &loaded else { continue };
                let ruleset =
                    compile_node(config, current, &mut bindings, &interfaces.borrow(), &addresses);
                apply(&mut dataplane, &ruleset, shared).await;
                desired = Some(ruleset);
            }
            _ = resync.tick() => {
                if bindings.rebind_pending() && let Some(current) = &loaded {
                    let ruleset = compile_node(config, current, &mut bindings, &interfaces.borrow(), &bridged.borrow());
                    apply(&mut dataplane, &ruleset, shared).await;
                    desired = Some(ruleset);
                }
                match dataplane.check().await {
                    Ok(Check::Repaired) => {
                        shared.metrics.dataplane.repairs.inc();
                    }
                    Ok(Check::Intact) => debug!("table intact"),
                    Ok(Check::NotInstalled) => {
                        // The last apply failed: try again with what we want.
                        if let Some(ruleset) = &desired {
                            apply(&mut dataplane, ruleset, shared).await;
                        }
                    }
                    Err(error) => {
                        shared.metrics.dataplane.apply_errors.inc();
                        warn!(error = %format!("{:#}", anyhow::Error::from(error)), "table check failed");
                    }
                }
            }
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Says once what the agent does for pods behind a bridge (a bridge CNI such as flannel's):
/// what it enforces and what it cannot, and whether br_netfilter sends bridged traffic through
/// the hooks at all.
fn report_bridge_cni(addresses: usize) {
    warn!(
        addresses,
        "pods behind a bridge (bridge CNI): policies are enforced by address; anti-spoofing and \
         the reused-address guards need a routed veth per pod and do not cover them; \
         starting_pods drops the bridge's unclaimed addresses while an isolated pod starts"
    );
    // Per network namespace; the agent runs in the node's (hostNetwork).
    const BR_NETFILTER: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    match std::fs::read_to_string(BR_NETFILTER) {
        Ok(value) if value.trim() == "1" => {}
        Ok(value) => error!(
            value = value.trim(),
            "net.bridge.bridge-nf-call-iptables is not 1: packets between pods on one bridge \
             skip the ip and inet hooks, and no policy applies to them (modprobe br_netfilter; \
             sysctl -w net.bridge.bridge-nf-call-iptables=1)"
        ),
        Err(error) => error!(
            %error,
            "no {BR_NETFILTER} (br_netfilter not loaded): packets between pods on one bridge skip \
             the ip and inet hooks, and no policy applies to them"
        ),
    }
}

/// Compiles this node's ruleset, with the learned veths filtered through the sticky bindings.
fn compile_node(
    config: &Config,
    loaded: &Loaded,
    bindings: &mut Bindings,
    learned: &PodInterfaces,
    bridged: &[IpAddr],
) -> Ruleset {
    let mut interfaces =
        bindings.update(&loaded.snapshot, &config.node_name, learned, Instant::now());
    // The other veths as the routes say: the compiler drops those whose address no pod owns
    // yet while an isolated pod of this node waits for its IP (pods are plugged in before the
    // API reports their IP). A bound address keeps its binding.
    for (ip, veth) in learned {
        interfaces.entry(*ip).or_insert_with(|| veth.clone());
    }
    compile::compile_with_bridged(
        &loaded.snapshot,
        &config.node_name,
        &interfaces,
        bridged,
        &config.compile,
    )
}

/// Applies `ruleset`; true when the kernel now enforces it (applied or already there).
async fn apply(dataplane: &mut Dataplane, ruleset: &Ruleset, shared: &Shared) -> bool {
    let started = Instant::now();
    let metrics = &shared.metrics.dataplane;
    match dataplane.apply(ruleset).await {
        Ok(Applied::Unchanged) => {
            debug!("ruleset unchanged");
            shared.set_ready();
            true
        }
        Ok(applied) => {
            let kind = match applied {
                Applied::Full => ApplyKind::Full,
                Applied::Repaired => {
                    // Someone changed the table since the last check; counted as the resync
                    // would have counted it.
                    metrics.repairs.inc();
                    ApplyKind::Full
                }
                _ => ApplyKind::Incremental,
            };
            let seconds = started.elapsed().as_secs_f64();
            metrics.applies.get_or_create(&ApplyLabels { kind }).inc();
            metrics
                .apply_duration
                .get_or_create(&ApplyLabels { kind })
                .observe(seconds);
            let chains = ruleset.chains.len();
            let elements = ruleset.sets.iter().map(|s| s.elements.len()).sum::<usize>()
                + ruleset.maps.iter().map(|m| m.elements.len()).sum::<usize>();
            metrics
                .chains
                .set(i64::try_from(chains).unwrap_or(i64::MAX));
            metrics
                .set_elements
                .set(i64::try_from(elements).unwrap_or(i64::MAX));
            match &applied {
                Applied::Incremental(touched) => debug!(
                    chains = ?touched.chains,
                    sets = touched.sets.len(),
                    maps = ?touched.maps,
                    millis = started.elapsed().as_millis(),
                    "ruleset updated"
                ),
                _ => info!(
                    chains,
                    elements,
                    millis = started.elapsed().as_millis(),
                    "ruleset applied"
                ),
            }
            shared.set_ready();
            true
        }
        Err(error) => {
            metrics.apply_errors.inc();
            error!(error = %format!("{:#}", anyhow::Error::from(error)), "cannot apply the ruleset; the previous one stays");
            if dataplane.installed().is_some() {
                shared.set_ready();
            }
            false
        }
    }
}

async fn warn_about_other_engines(nft: &Nft) {
    match nft.list_tables().await {
        Ok(tables) => {
            for table in tables
                .iter()
                .filter(|t| OTHER_ENGINE_TABLES.contains(&t.as_str()))
            {
                warn!(%table, "another NetworkPolicy engine runs on this node; its verdicts and ours both apply (turn it off: see the README)");
            }
        }
        Err(error) => warn!(%error, "cannot list nftables tables"),
    }
}
