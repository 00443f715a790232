//! `GET /hints`: NetworkPolicies suggested from the denied flows this agent saw recently.
//!
//! [`RecentDrops`] holds the flows: the drop log hands it every record it writes, and it keeps
//! at most a fixed number of distinct flows (the least recently seen make room, counted in
//! `kube_nftpol_hints_evicted_flows_total`). Each request runs [`hints::suggest`] on them
//! against the agent's current snapshot, so flows that a policy allows by now drop out, and
//! selectors are checked against the cluster. Read-only: nothing here changes enforcement.
//!
//! Query parameters: `namespace=NS` (only pods of that namespace), `format=json` (the default:
//! the [`hints::Suggestions`] report plus `recent_flows`) or `format=yaml` (for `kubectl apply
//! -f -`).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Shared;
use crate::flow_line::FlowLine;
use crate::hints::{self, Aggregate, DeniedFlow, Options, Suggestions, render};
use crate::source::manifests::Loaded;

/// Distinct denied flows an agent keeps for `/hints` (a few hundred bytes each).
pub const MAX_FLOWS: usize = 4096;

/// The agent's recent denied flows, and where its current snapshot is.
#[derive(Debug)]
pub struct RecentDrops {
    flows: Mutex<Aggregate>,
    snapshots: OnceLock<watch::Receiver<Option<Arc<Loaded>>>>,
    evicted: Counter,
}

impl RecentDrops {
    /// Keeps at most `capacity` flows and counts evictions in `evicted`.
    pub fn new(capacity: usize, evicted: Counter) -> Self {
        Self {
            flows: Mutex::new(Aggregate::new(capacity)),
            snapshots: OnceLock::new(),
            evicted,
        }
    }

    /// Adds the flow of a drop record the drop log wrote.
    pub fn record(&self, record: &FlowLine) {
        let flow = DeniedFlow::from_line(record);
        // A panic elsewhere while holding the lock leaves the aggregate consistent (every
        // update completes before anything can panic), so a poisoned lock is still usable.
        let evicted = self
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(flow);
        self.evicted.inc_by(evicted);
    }

    /// Checks suggestions against the snapshots on `snapshots` (the agent's source). Only the
    /// first call counts.
    pub fn follow(&self, snapshots: watch::Receiver<Option<Arc<Loaded>>>) {
        // Set once at startup; a second source would be a bug, and the first one stays.
        let _ = self.snapshots.set(snapshots);
    }

    /// The suggestions for the flows kept now, and how many flows were kept and evicted.
    pub fn report(&self, namespace: Option<&str>) -> Report {
        let flows = self
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let loaded = self.snapshots.get().and_then(|rx| rx.borrow().clone());
        let options = Options {
            snapshot: loaded.as_deref().map(|l| &l.snapshot),
            namespace,
        };
        Report {
            recent_flows: RecentFlows {
                kept: flows.len(),
                capacity: flows.capacity(),
                evicted: flows.evicted(),
            },
            suggestions: hints::suggest(flows.flows(), &options),
        }
    }
}

/// What `/hints` serves as JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The agent's aggregate.
    pub recent_flows: RecentFlows,
    /// The suggestions, their counts and issues.
    #[serde(flatten)]
    pub suggestions: Suggestions,
}

/// The state of the agent's aggregate of denied flows.
#[derive(Debug, Serialize)]
pub struct RecentFlows {
    /// Distinct flows kept.
    pub kept: usize,
    /// The most it keeps.
    pub capacity: usize,
    /// Flows evicted to make room since the agent started.
    pub evicted: u64,
}

/// The query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct HintsQuery {
    /// Only pods of this namespace.
    pub namespace: Option<String>,
    /// `json` (default) or `yaml`.
    pub format: Option<String>,
}

/// The `/hints` handler.
pub async fn hints(State(shared): State<Arc<Shared>>, Query(query): Query<HintsQuery>) -> Response {
    let yaml = match query.format.as_deref() {
        None | Some("json") => false,
        Some("yaml") => true,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                "unknown format: use format=json or format=yaml\n",
            )
                .into_response();
        }
    };
    // Suggesting evaluates every flow against the snapshot: keep it off the async workers.
    let report =
        tokio::task::spawn_blocking(move || shared.hints.report(query.namespace.as_deref())).await;
    let Ok(report) = report else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let body = if yaml {
        render::to_yaml(&report.suggestions).map(|text| {
            let recent = &report.recent_flows;
            format!(
                "# From this agent's {} most recent distinct denied flows (at most {}; {} evicted).\n{text}",
                recent.kept, recent.capacity, recent.evicted
            )
        })
    } else {
        serde_json::to_string_pretty(&report).map(|mut text| {
            text.push('\n');
            text
        })
    };
    match body {
        Ok(body) => {
            let content_type = if yaml {
                "application/yaml; charset=utf-8"
            } else {
                "application/json"
            };
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use serde_json::json;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::flowlog::decode::DeniedPacket;
    use crate::flowlog::enrich;
    use crate::metrics::Metrics;
    use crate::model::{Direction, IpProtocol, ObjectKey, Pod, Snapshot};

    fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Pod {
        Pod::running(
            ObjectKey::new(ns, name),
            [("app".to_owned(), app.to_owned())].into(),
            "node-1",
            [ip.parse().unwrap()],
        )
    }

    /// shop/web (10.0.0.1) and shop/api (10.0.0.2), web isolated for egress; other/db
    /// (10.0.1.1) isolated for ingress.
    fn snapshot() -> Snapshot {
        let mut snapshot = Snapshot::new();
        snapshot.upsert_pod(pod("shop", "web", "web", "10.0.0.1"));
        snapshot.upsert_pod(pod("shop", "api", "api", "10.0.0.2"));
        snapshot.upsert_pod(pod("other", "db", "db", "10.0.1.1"));
        for (ns, types) in [("shop", "Egress"), ("other", "Ingress")] {
            let policy: NetworkPolicy = serde_json::from_value(json!({
                "metadata": {"name": "deny", "namespace": ns},
                "spec": {"podSelector": {}, "policyTypes": [types]},
            }))
            .unwrap();
            snapshot.upsert_network_policy(&policy).unwrap();
        }
        snapshot
    }

    fn record(
        snapshot: &Snapshot,
        direction: Direction,
        pod: &str,
        source: &str,
        destination: &str,
        port: u16,
    ) -> FlowLine {
        let (namespace, name) = pod.split_once('/').unwrap();
        let packet = DeniedPacket {
            direction,
            pod: ObjectKey::new(namespace, name),
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
            protocol: IpProtocol::Tcp,
            source_port: Some(40000),
            destination_port: Some(port),
            enforcement: crate::model::Enforcement::Enforce,
        };
        enrich::enrich(&packet, snapshot, SystemTime::UNIX_EPOCH)
    }

    /// An agent's shared state that saw web -> api:8080 twice and api -> db:5432.
    fn shared(capacity: usize) -> (Arc<Shared>, watch::Sender<Option<Arc<Loaded>>>) {
        let snapshot = snapshot();
        let mut shared = Shared::new(Metrics::new());
        shared.hints = RecentDrops::new(capacity, shared.metrics.hints.evicted_flows.clone());
        for record in [
            record(
                &snapshot,
                Direction::Egress,
                "shop/web",
                "10.0.0.1",
                "10.0.0.2",
                8080,
            ),
            record(
                &snapshot,
                Direction::Egress,
                "shop/web",
                "10.0.0.1",
                "10.0.0.2",
                8080,
            ),
            record(
                &snapshot,
                Direction::Ingress,
                "other/db",
                "10.0.0.2",
                "10.0.1.1",
                5432,
            ),
        ] {
            shared.hints.record(&record);
        }
        let (tx, rx) = watch::channel(Some(Arc::new(Loaded {
            snapshot,
            ..Loaded::default()
        })));
        shared.hints.follow(rx);
        (Arc::new(shared), tx)
    }

    async fn get(
        shared: &Arc<Shared>,
        namespace: Option<&str>,
        format: Option<&str>,
    ) -> (StatusCode, String, String) {
        let query = HintsQuery {
            namespace: namespace.map(str::to_owned),
            format: format.map(str::to_owned),
        };
        let response = hints(State(Arc::clone(shared)), Query(query)).await;
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn hints_serve_the_suggestions_as_json() {
        let (shared, _tx) = shared(MAX_FLOWS);
        let (status, content_type, body) = get(&shared, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            report["recent_flows"],
            json!({"kept": 2, "capacity": MAX_FLOWS, "evicted": 0})
        );
        assert_eq!(report["denied_flows"], 2);
        let names: Vec<&str> = report["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["policy"]["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["allow-db-ingress-hint", "allow-web-egress-hint"]);
        assert_eq!(report["suggestions"][1]["logged_drops"], 2);
    }

    #[tokio::test]
    async fn hints_filter_by_namespace_and_serve_yaml_that_loads() {
        let (shared, _tx) = shared(MAX_FLOWS);
        let (status, content_type, body) = get(&shared, Some("shop"), Some("yaml")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/yaml; charset=utf-8");
        assert!(
            body.starts_with(
                "# From this agent's 2 most recent distinct denied flows (at most 4096; 0 evicted).\n"
            ),
            "{body}"
        );
        let loaded = crate::source::manifests::load_str(&body, "hints.yaml").unwrap();
        let names: Vec<String> = loaded
            .snapshot
            .policies()
            .map(|p| p.key.to_string())
            .collect();
        assert_eq!(names, ["shop/allow-web-egress-hint"]);
        assert!(loaded.invalid_policies.is_empty());
    }

    #[tokio::test]
    async fn hints_leave_out_flows_the_current_snapshot_allows() {
        let (shared, tx) = shared(MAX_FLOWS);
        let mut now = snapshot();
        let allow: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "web-to-api", "namespace": "shop"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"podSelector": {}}]}]},
        }))
        .unwrap();
        now.upsert_network_policy(&allow).unwrap();
        tx.send_replace(Some(Arc::new(Loaded {
            snapshot: now,
            ..Loaded::default()
        })));
        let (_, _, body) = get(&shared, None, None).await;
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(report["no_longer_denied"], 1);
        assert_eq!(report["suggestions"].as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn hints_reject_unknown_formats() {
        let (shared, _tx) = shared(MAX_FLOWS);
        let (status, _, body) = get(&shared, None, Some("xml")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("format=yaml"), "{body}");
    }

    #[tokio::test]
    async fn evicted_flows_are_counted_in_the_report_and_the_metrics() {
        let (shared, _tx) = shared(1);
        let (_, _, body) = get(&shared, None, None).await;
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            report["recent_flows"],
            json!({"kept": 1, "capacity": 1, "evicted": 1})
        );
        let metrics = shared.metrics.encode();
        assert!(
            metrics.contains("kube_nftpol_hints_evicted_flows_total 1\n"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn hints_without_a_snapshot_yet_trust_the_drop_log() {
        let shared = Arc::new(Shared::new(Metrics::new()));
        let snapshot = snapshot();
        shared.hints.record(&record(
            &snapshot,
            Direction::Egress,
            "shop/web",
            "10.0.0.1",
            "203.0.113.9",
            443,
        ));
        let (status, _, body) = get(&shared, None, Some("yaml")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("cidr: \"203.0.113.9/32\""), "{body}");
    }

    #[tokio::test]
    async fn the_router_serves_hints_over_http() {
        let (shared, _tx) = shared(MAX_FLOWS);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server =
            tokio::spawn(async move { axum::serve(listener, super::super::router(shared)).await });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /hints?namespace=other&format=yaml HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        server.abort();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.contains("name: \"allow-db-ingress-hint\""),
            "{response}"
        );
        assert!(!response.contains("allow-web-egress-hint"), "{response}");
    }
}
