//! The node agent: source, snapshot, compile, dataplane, in one loop.
//!
//! ```text
//! directory source --(complete snapshots, coalesced)--+
//! rtnetlink (pod veths, for anti-spoofing) ------------+--> compile(node) --> Dataplane::apply
//!                                       resync timer --> Dataplane::check (repair)
//! kernel NFLOG (default-deny drops) --> decode, enrich with the snapshot --> stdout JSON lines
//! ```
//!
//! Snapshots arrive on a `watch` channel, so a burst of changes collapses into the latest one
//! and an idle agent does no work. The first ruleset is applied only after the first complete
//! load; `/readyz` turns ready once it is verified in the kernel. A failed apply leaves the
//! previous ruleset enforcing and is retried on the next change or resync. On SIGTERM or
//! SIGINT the agent stops and leaves its table in place: a restarted agent takes it over in
//! one transaction, so a restart never opens traffic.

mod drop_log;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::compile::{self, Options, PodInterfaces, Ruleset};
use crate::dataplane::nft::Nft;
use crate::dataplane::{Applied, Check, Dataplane};
use crate::http::{self, Shared};
use crate::metrics::{ApplyKind, ApplyLabels, Metrics};
use crate::source::directory;
use crate::source::manifests::Loaded;

/// Tables of other policy engines that AND their verdicts with ours when both run.
const OTHER_ENGINE_TABLES: &[&str] = &["inet kindnet-network-policies"];

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node whose pods this agent polices.
    pub node_name: String,
    /// The manifest directory to watch.
    pub manifests: PathBuf,
    /// Compiler options (NFLOG group, log rate).
    pub compile: Options,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub metrics_addr: SocketAddr,
    /// How often the table is read back and repaired if someone changed it.
    pub resync_interval: Duration,
    /// How often the manifest directory is checked for changes.
    pub manifests_poll_interval: Duration,
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
    let interfaces = tokio::spawn(crate::dataplane::interfaces::watch(interfaces_tx));
    let (tx, rx) = watch::channel(None);
    let source = tokio::spawn(directory::watch(
        config.manifests.clone(),
        config.manifests_poll_interval,
        tx,
        Arc::clone(&shared),
    ));
    let drops = tokio::spawn(drop_log::run(
        config.compile.nflog_group,
        rx.clone(),
        Arc::clone(&shared),
    ));
    info!(node = %config.node_name, manifests = %config.manifests.display(), %addr, "agent started");

    let result = control_loop(&config, rx, interfaces_rx, Dataplane::new(nft), &shared).await;
    interfaces.abort();
    drops.abort();
    source.abort();
    http.abort();
    info!("agent stopped; the table stays in place and keeps enforcing");
    result
}

async fn control_loop(
    config: &Config,
    mut snapshots: watch::Receiver<Option<Arc<Loaded>>>,
    mut interfaces: watch::Receiver<PodInterfaces>,
    mut dataplane: Dataplane,
    shared: &Shared,
) -> anyhow::Result<()> {
    let mut resync = tokio::time::interval(config.resync_interval);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    let mut desired: Option<Ruleset> = None;
    let mut loaded: Option<Arc<Loaded>> = None;
    let mut interfaces_open = true;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    anyhow::bail!("the manifest source stopped");
                }
                loaded = snapshots.borrow_and_update().clone();
                let Some(current) = &loaded else { continue };
                let ruleset = compile_node(config, current, &interfaces.borrow());
                apply(&mut dataplane, &ruleset, shared).await;
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
                let ruleset = compile_node(config, current, &interfaces.borrow_and_update());
                apply(&mut dataplane, &ruleset, shared).await;
                desired = Some(ruleset);
            }
            _ = resync.tick() => {
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

fn compile_node(config: &Config, loaded: &Loaded, interfaces: &PodInterfaces) -> Ruleset {
    compile::compile_with_interfaces(
        &loaded.snapshot,
        &config.node_name,
        interfaces,
        &config.compile,
    )
}

async fn apply(dataplane: &mut Dataplane, ruleset: &Ruleset, shared: &Shared) {
    let started = Instant::now();
    let metrics = &shared.metrics.dataplane;
    match dataplane.apply(ruleset).await {
        Ok(Applied::Unchanged) => debug!("ruleset unchanged"),
        Ok(applied) => {
            let kind = match applied {
                Applied::Full => ApplyKind::Full,
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
                Applied::Incremental(touched) => info!(
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
        }
        Err(error) => {
            metrics.apply_errors.inc();
            error!(error = %format!("{:#}", anyhow::Error::from(error)), "cannot apply the ruleset; the previous one stays");
        }
    }
    if dataplane.installed().is_some() {
        shared.set_ready();
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
