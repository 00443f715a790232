//! `GET /flows`: the agent's window of recent distinct flows ([`crate::agent::RecentFlows`]),
//! as JSON: [`NodeFlows`] (the node, `capacity`, `kept`, `evicted`, and the flows as flow
//! lines, [`crate::flow_line::FlowLine`]). Read-only; only readers the cluster allows get here
//! ([`super::auth`]).
//!
//! Query parameter: `namespace=NS`, only the flows of pods of that namespace (authorised in
//! that namespace).

use std::sync::Arc;

use axum::extract::{Query, State as Extract};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::agent::State;
#[cfg(doc)]
use crate::flows::NodeFlows;

/// The query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct FlowsQuery {
    /// Only the flows of pods of this namespace.
    pub namespace: Option<String>,
}

/// The `/flows` handler.
pub async fn flows(
    Extract(state): Extract<Arc<State>>,
    Query(query): Query<FlowsQuery>,
) -> Response {
    // Thousands of flows to copy and encode: keep it off the async workers.
    let body = tokio::task::spawn_blocking(move || {
        let flows = state.recent_flows().flows(query.namespace.as_deref());
        serde_json::to_string(&flows).map(|mut text| {
            text.push('\n');
            text
        })
    })
    .await;
    match body {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
