//! The page of `kube-nftpol ui`: the flow graph by namespace, the flows as a table with a
//! checkbox each, the NetworkPolicies that allow exactly the ticked flows, and what those
//! policies would block among the observed flows. Served on loopback by axum, from files
//! embedded in the binary ([`assets`]); nothing is fetched from elsewhere, at build or run time.
//!
//! Endpoints, all reading the [`View`] loaded at start (nothing here writes anywhere):
//!
//! - `GET /`, `/app.js`, `/app.css`, `/vendor/...`: the page and the vendored graph layout
//!   library with its licences ([`assets`]).
//! - `GET /api/graph`: the [`crate::graph::Graph`] of the flows, where they came from and the
//!   problems with the input ([`api::GraphAnswer`]).
//! - `POST /api/selection` with `{"excluded": [FLOW_ID, ...]}`: the policies for every flow but
//!   those, as YAML, and the preview of what they would change ([`api::SelectionAnswer`]).
//!   The same suggestion code as `suggest --observed --include-external --exclude flow=ID`.
//!
//! Every answer is checked by [`guard`]: the `Host` header must name the address served (a web
//! page elsewhere cannot reach it through DNS rebinding), and the page may load only its own
//! files.

pub mod api;
pub mod assets;
pub mod guard;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};

use crate::cli::flow_source::Observation;
use crate::flow_line::FlowLine;
use crate::graph::{self, Graph};
use crate::model::Snapshot;

/// What the page shows, read once at start.
#[derive(Debug)]
pub struct View {
    /// The distinct flow lines.
    lines: Vec<FlowLine>,
    /// The cluster from `--manifests`, when given: suggestions are checked against it.
    snapshot: Option<Snapshot>,
    /// The cluster the preview evaluates on: the snapshot, else the one the lines describe
    /// ([`graph::cluster_of`]).
    today: Snapshot,
    /// The graph of the lines.
    graph: Graph,
    /// Where the flows and the cluster came from.
    origin: String,
    /// What is wrong with the input, for the page.
    problems: Vec<String>,
}

impl View {
    /// The view of an observation.
    pub fn new(observation: Observation) -> Self {
        let graph = graph::build(&observation.lines, observation.snapshot.as_ref());
        let today = observation
            .snapshot
            .clone()
            .unwrap_or_else(|| graph::cluster_of(&observation.lines));
        Self {
            lines: observation.lines,
            snapshot: observation.snapshot,
            today,
            graph,
            origin: observation.origin,
            problems: observation.problems,
        }
    }
}

/// The router: the page, its assets and the API, behind the guard for `hosts` (the
/// `Host` values the served address is reached by).
pub fn router(view: Arc<View>, hosts: guard::Hosts) -> Router {
    let mut router = Router::new()
        .route("/api/graph", get(api::graph))
        .route("/api/selection", post(api::selection));
    for asset in assets::ASSETS {
        router = router.route(asset.path, get(move || async move { asset.response() }));
    }
    router
        .with_state(view)
        .layer(axum::middleware::from_fn_with_state(hosts, guard::check))
}

/// Serves the page on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    view: View,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("reading the bound address")?;
    axum::serve(listener, router(Arc::new(view), guard::Hosts::of(addr)))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the page")
}

#[cfg(test)]
mod tests;
