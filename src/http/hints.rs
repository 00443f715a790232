//! `GET /hints`: NetworkPolicies suggested from the denied flows this agent saw recently
//! ([`crate::agent::RecentFlows`]: each request suggests against the agent's current
//! snapshot). Read-only: nothing here changes enforcement.
//!
//! Query parameters: `namespace=NS` (only pods of that namespace), `format=json` (the default:
//! the [`hints::Suggestions`] report plus `recent_flows`) or `format=yaml` (for `kubectl apply
//! -f -`).

use std::sync::Arc;

use axum::extract::{Query, State as Extract};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::agent::State;
use crate::hints::render;

/// The query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct HintsQuery {
    /// Only pods of this namespace.
    pub namespace: Option<String>,
    /// `json` (default) or `yaml`.
    pub format: Option<String>,
}

/// The `/hints` handler.
pub async fn hints(
    Extract(state): Extract<Arc<State>>,
    Query(query): Query<HintsQuery>,
) -> Response {
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
    let report = tokio::task::spawn_blocking(move || {
        state.recent_flows().report(query.namespace.as_deref())
    })
    .await;
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

    use tokio::sync::watch;

    use super::*;
    use crate::agent::MAX_RECENT_FLOWS as MAX_FLOWS;
    use crate::flow_line::FlowLine;
    use crate::flowlog::decode::LoggedPacket;
    use crate::flowlog::enrich;
    use crate::model::{Direction, IpProtocol, ObjectKey, Pod, Snapshot};
    use crate::source::manifests::Loaded;

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
        let packet = LoggedPacket {
            direction,
            pod: ObjectKey::new(namespace, name),
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
            protocol: IpProtocol::Tcp,
            source_port: Some(40000),
            destination_port: Some(port),
            kind: crate::compile::LogKind::Denied,
        };
        enrich::enrich(&packet, snapshot, SystemTime::UNIX_EPOCH)
    }

    /// An agent's state that saw web -> api:8080 twice and api -> db:5432.
    fn shared(capacity: usize) -> (Arc<State>, watch::Sender<Option<Arc<Loaded>>>) {
        let snapshot = snapshot();
        let shared = State::with_recent_flows(capacity);
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
            shared.recent_flows().record(&record);
        }
        let (tx, rx) = watch::channel(Some(Arc::new(Loaded {
            snapshot,
            ..Loaded::default()
        })));
        shared.recent_flows().follow(rx);
        (Arc::new(shared), tx)
    }

    async fn get(
        shared: &Arc<State>,
        namespace: Option<&str>,
        format: Option<&str>,
    ) -> (StatusCode, String, String) {
        let query = HintsQuery {
            namespace: namespace.map(str::to_owned),
            format: format.map(str::to_owned),
        };
        let response = hints(Extract(Arc::clone(shared)), Query(query)).await;
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
        let metrics = shared.encode_metrics(std::time::Duration::ZERO).await;
        assert!(
            metrics.contains("kube_nftpol_hints_evicted_flows_total 1\n"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn hints_without_a_snapshot_yet_trust_the_drop_log() {
        let shared = Arc::new(State::new());
        let snapshot = snapshot();
        shared.recent_flows().record(&record(
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
