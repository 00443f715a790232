//! The page's API: the graph as loaded ([`graph`]), and for a selection of flows the policies
//! that allow exactly them with the preview of what those policies would block
//! ([`selection`], computed by [`select`]).
//!
//! A selection is the flows left unticked, by id: the suggestions are
//! [`hints::suggest_observed`] with `--include-external` and an `--exclude flow=ID` for each,
//! as `suggest --observed` computes them; the preview adds them to the cluster and marks every
//! edge with what they change ([`crate::graph::Graph::preview`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::View;
use crate::graph::{Change, Graph, PreviewSummary};
use crate::hints::{self, Exclude, render};

/// The answer of `GET /api/graph`.
#[derive(Debug, Serialize)]
pub struct GraphAnswer<'a> {
    /// Where the flows and the cluster came from.
    pub origin: &'a str,
    /// What is wrong with the input, one sentence each.
    pub problems: &'a [String],
    /// The graph.
    pub graph: &'a Graph,
}

/// The body of `POST /api/selection`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionRequest {
    /// The flows to leave out, by id (unticked).
    #[serde(default)]
    pub excluded: Vec<String>,
}

/// The answer of `POST /api/selection`.
#[derive(Debug, Serialize)]
pub struct SelectionAnswer {
    /// The policies, as `suggest` prints them: comments, then one document per policy.
    pub yaml: String,
    /// How many policies.
    pub policies: usize,
    /// Policies that isolate a side no policy isolates today.
    pub isolating: usize,
    /// What could not be suggested, and why.
    pub issues: Vec<String>,
    /// How many edges each change marks.
    pub preview: PreviewSummary,
    /// Each edge's change, by flow id.
    pub changes: BTreeMap<String, Change>,
}

/// `GET /api/graph`.
pub async fn graph(State(view): State<Arc<View>>) -> Response {
    Json(GraphAnswer {
        origin: &view.origin,
        problems: &view.problems,
        graph: &view.graph,
    })
    .into_response()
}

/// `POST /api/selection`: JSON in, JSON out; 400 for a body that is not a selection, 415 for
/// another content type.
pub async fn selection(State(view): State<Arc<View>>, headers: HeaderMap, body: Bytes) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the selection as application/json\n",
        )
            .into_response();
    }
    let request: SelectionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a selection: {error}\n"),
            )
                .into_response();
        }
    };
    // Suggesting and evaluating every flow is CPU work: off the async threads.
    match tokio::task::spawn_blocking(move || select(&view, &request.excluded)).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(message)) => (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("computing the selection failed: {error}\n"),
        )
            .into_response(),
    }
}

/// The policies for every flow of `view` but `excluded` (flow ids), and their preview.
pub fn select(view: &View, excluded: &[String]) -> Result<SelectionAnswer, String> {
    let exclude = excluded
        .iter()
        .map(|id| {
            format!("flow={id}")
                .parse::<Exclude>()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let suggestions =
        hints::suggest_observed(&view.lines, view.snapshot.as_ref(), None, &exclude, true);
    let yaml = render::to_yaml(&suggestions).map_err(|e| format!("encoding the policies: {e}"))?;
    let mut issues: Vec<String> = suggestions.issues.iter().map(|i| i.to_string()).collect();
    let mut candidate = view.today.clone();
    for suggestion in &suggestions.suggestions {
        if let Err(error) = candidate.upsert_network_policy(&suggestion.policy) {
            issues.push(format!("{}: not previewed: {error}", suggestion.workload));
        }
    }
    let mut graph = view.graph.clone();
    graph.preview(&view.today, &candidate);
    Ok(SelectionAnswer {
        yaml,
        policies: suggestions.suggestions.len(),
        isolating: suggestions
            .suggestions
            .iter()
            .filter(|s| s.isolates)
            .count(),
        issues,
        preview: graph.preview.unwrap_or_default(),
        changes: graph
            .edges
            .into_iter()
            .map(|edge| (edge.id, edge.preview.unwrap_or(Change::Unknown)))
            .collect(),
    })
}
