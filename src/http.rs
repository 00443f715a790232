//! The agent's HTTP endpoints, read-only:
//!
//! - `GET /healthz`: 200 while the process serves requests (liveness).
//! - `GET /readyz`: 200 once the first complete ruleset is in the kernel, 503 before (the latch
//!   never goes back: a later failed apply leaves the previous ruleset enforcing).
//! - `GET /hints`: NetworkPolicies suggested from recent denied flows ([`hints`]).
//! - `GET /metrics`: the OpenMetrics text of [`crate::metrics::Metrics`], with the flow
//!   counters read from the table first unless they are fresh ([`crate::flowmetrics`]).
//!
//! Nothing here can change enforcement: every route is `GET` (and `HEAD`); other methods get
//! 405 and other paths 404 (the DaemonSet suite of the node simulator checks both).

pub mod hints;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::flowmetrics::{FlowCounters, SCRAPE_MIN_AGE};
use crate::metrics::Metrics;

/// How long a scrape waits for the flow counters before it serves the last values.
const SCRAPE_REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoints read.
#[derive(Debug)]
pub struct Shared {
    /// Released once the first ruleset is verified in the kernel.
    pub ready: AtomicBool,
    /// The metrics.
    pub metrics: Metrics,
    /// Recent denied flows, for `/hints`.
    pub hints: hints::RecentDrops,
    /// The flow counters a scrape refreshes, once the agent has set them up.
    pub flows: OnceLock<Arc<FlowCounters>>,
}

impl Shared {
    /// Not ready, fresh metrics.
    pub fn new(metrics: Metrics) -> Self {
        let evicted = metrics.hints.evicted_flows.clone();
        Self {
            ready: AtomicBool::new(false),
            metrics,
            hints: hints::RecentDrops::new(hints::MAX_FLOWS, evicted),
            flows: OnceLock::new(),
        }
    }

    /// Releases the readiness latch.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

/// The router, for serving and for tests.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/hints", get(hints::hints))
        .with_state(shared)
}

/// Binds `addr` and serves until the task is dropped.
pub async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    axum::serve(listener, router(shared))
        .await
        .context("serving HTTP")
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first ruleset\n",
        )
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if let Some(flows) = shared.flows.get() {
        // A slow `nft` must not hold the scrape: serve the last values then.
        let refresh = flows.refresh_if_older(SCRAPE_MIN_AGE);
        let _ = tokio::time::timeout(SCRAPE_REFRESH_TIMEOUT, refresh).await;
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}
