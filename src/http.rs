//! The agent's HTTP endpoints, read-only:
//!
//! - `GET /healthz`: 200 while the process serves requests (liveness).
//! - `GET /readyz`: 200 once the first complete ruleset is in the kernel, 503 before (the latch
//!   never goes back: a later failed apply leaves the previous ruleset enforcing).
//! - `GET /flows`: the agent's recent distinct flows ([`flows`]); readers need a Kubernetes
//!   bearer token the cluster allows ([`auth`], [`crate::access`]).
//! - `GET /hints`: NetworkPolicies suggested from recent denied flows ([`hints`]); the same
//!   readers.
//! - `GET /metrics`: the OpenMetrics text of the agent's registry ([`crate::metrics`]), with
//!   the flow counters read from the table first unless they are fresh
//!   ([`crate::flowmetrics`]).
//!
//! Everything served comes from the agent's [`State`], through its read methods. Nothing here
//! can change enforcement: every route is `GET` (and `HEAD`); other methods get 405 (before any
//! token is checked) and other paths 404 (the DaemonSet suite of the node simulator checks
//! both). `/healthz`, `/readyz` and `/metrics` ask for no token.

pub mod auth;
pub mod flows;
pub mod hints;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State as Extract;
use axum::handler::Handler as _;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::agent::State;

/// How long a scrape waits for the flow counters before it serves the last values.
const SCRAPE_REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// The router, for serving and for tests.
pub fn router(state: Arc<State>) -> Router {
    // The check wraps the readers' handlers themselves, so a method they do not answer gets
    // 405 whoever sends it, and a path that is not theirs 404.
    let check = middleware::from_fn_with_state(Arc::clone(&state), auth::require_reader);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/flows", get(flows::flows.layer(check.clone())))
        .route("/hints", get(hints::hints.layer(check)))
        .with_state(state)
}

/// Binds `addr` and serves until the task is dropped.
pub async fn serve(addr: SocketAddr, state: Arc<State>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    axum::serve(listener, router(state))
        .await
        .context("serving HTTP")
}

async fn readyz(Extract(state): Extract<Arc<State>>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first ruleset\n",
        )
    }
}

async fn metrics(Extract(state): Extract<Arc<State>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.encode_metrics(SCRAPE_REFRESH_TIMEOUT).await,
    )
}
