//! Tests of the page's server over real HTTP on loopback: the files and their headers, the
//! `Host` check, the API's answers and refusals, and a selection's policies and preview. What
//! a browser does with them is `integration/ui_browser.rs`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::api::select;
use super::*;
use crate::graph::Change;

/// shop, observed, with web (10.0.0.1) and api (10.0.0.2), no policy; a denied flow from
/// other/cron; web talks to api on 8080 (logged at both ends) and to an external address.
const LINES: &str = r#"
{"action":"allow","direction":"egress","pod":{"namespace":"shop","name":"web-1","labels":{"app":"web"}},"peer":{"namespace":"shop","name":"api-1","labels":{"app":"api"}},"protocol":"tcp","port":8080,"source":"10.0.0.1","destination":"10.0.0.2","policies":[]}
{"action":"allow","direction":"ingress","pod":{"namespace":"shop","name":"api-1","labels":{"app":"api"}},"peer":{"namespace":"shop","name":"web-1","labels":{"app":"web"}},"protocol":"tcp","port":8080,"source":"10.0.0.1","destination":"10.0.0.2","policies":[]}
{"action":"allow","direction":"egress","pod":{"namespace":"shop","name":"web-1","labels":{"app":"web"}},"peer":{"ip":"203.0.113.5"},"protocol":"tcp","port":443,"source":"10.0.0.1","destination":"203.0.113.5","policies":[]}
"#;

fn view() -> View {
    let input = crate::cli::flow_source::read_lines(LINES.as_bytes()).unwrap();
    View::new(Observation {
        lines: input.flow_lines().cloned().collect(),
        snapshot: None,
        origin: "flows from test".into(),
        problems: vec!["line 9: malformed drop record: port".into()],
    })
}

/// Serves `view` on a free loopback port.
async fn serve_view(view: View) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, view, std::future::pending()));
    addr
}

struct Answer {
    status: u16,
    headers: String,
    body: String,
}

/// One HTTP/1.1 request (`METHOD PATH`, more header lines), `Connection: close`, read to
/// the end.
async fn request(addr: SocketAddr, host: &str, head: &str, headers: &str, body: &str) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let text = format!(
        "{head} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (headers, body) = answer.split_once("\r\n\r\n").unwrap();
    Answer {
        status: headers[9..12].parse().unwrap(),
        headers: headers.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, &addr.to_string(), &format!("GET {path}"), "", "").await
}

async fn post(addr: SocketAddr, content_type: &str, body: &str) -> Answer {
    let headers = format!("Content-Type: {content_type}\r\n");
    request(
        addr,
        &addr.to_string(),
        "POST /api/selection",
        &headers,
        body,
    )
    .await
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_their_types_and_a_strict_policy() {
    let addr = serve_view(view()).await;
    for (path, content_type, contains) in [
        ("/", "text/html", "app.js"),
        ("/app.js", "text/javascript", "api/selection"),
        ("/app.css", "text/css", "--deny"),
        ("/vendor/cytoscape.min.js", "text/javascript", "cytoscape"),
        ("/vendor/cytoscape-dagre.min.js", "text/javascript", "dagre"),
        ("/vendor/LICENSES.txt", "text/plain", "MIT"),
    ] {
        let answer = get(addr, path).await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(
            answer
                .headers
                .contains(&format!("content-type: {content_type}")),
            "{path}: {}",
            answer.headers
        );
        assert!(answer.body.contains(contains), "{path}");
        assert!(
            answer
                .headers
                .contains("content-security-policy: default-src 'self'")
        );
        assert!(answer.headers.contains("x-content-type-options: nosniff"));
    }
    assert_eq!(get(addr, "/nothing").await.status, 404);
}

#[tokio::test]
async fn another_host_name_is_refused_so_rebinding_cannot_read_the_flows() {
    let addr = serve_view(view()).await;
    let answer = request(addr, "attacker.example:80", "GET /api/graph", "", "").await;
    assert_eq!(answer.status, 421);
    assert!(!answer.body.contains("shop"), "{}", answer.body);
    let localhost = format!("localhost:{}", addr.port());
    assert_eq!(
        request(addr, &localhost, "GET /api/graph", "", "")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_graph_api_answers_the_graph_its_origin_and_the_problems() {
    let addr = serve_view(view()).await;
    let answer = get(addr, "/api/graph").await;
    assert_eq!(answer.status, 200);
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(json["origin"], "flows from test");
    assert_eq!(json["problems"][0], "line 9: malformed drop record: port");
    assert_eq!(json["graph"]["edges"].as_array().unwrap().len(), 2);
    assert_eq!(json["graph"]["nodes"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn bad_selections_are_refused_with_a_reason() {
    let addr = serve_view(view()).await;
    let answer = post(addr, "text/plain", r#"{"excluded":[]}"#).await;
    assert_eq!(answer.status, 415);
    let answer = post(addr, "application/json", r#"{"excluded":"all"}"#).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.body.starts_with("not a selection: "),
        "{}",
        answer.body
    );
    let answer = post(addr, "application/json", r#"{"excluded":["not-hex"]}"#).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.body.contains("a flow id is hexadecimal"),
        "{}",
        answer.body
    );
    let answer = post(addr, "application/json", r#"{"excluded":[]}"#).await;
    assert_eq!(answer.status, 200);
    assert_eq!(get(addr, "/api/selection").await.status, 405);
}

#[test]
fn an_unticked_flow_leaves_its_rule_out_and_the_preview_marks_it_blocked() {
    let view = view();
    let edge = |port| {
        view.graph
            .edges
            .iter()
            .find(|e| e.port == Some(port))
            .unwrap()
    };
    let (to_api, external) = (edge(8080), edge(443));

    let all = select(&view, &[]).unwrap();
    assert!(all.yaml.contains("port: 8080"), "{}", all.yaml);
    assert!(all.yaml.contains("203.0.113.5/32"), "{}", all.yaml);
    assert_eq!(all.changes[&to_api.id], Change::Kept);
    assert_eq!(all.changes[&external.id], Change::Kept);
    assert_eq!(all.preview.newly_denied, 0);

    let some = select(&view, std::slice::from_ref(&to_api.id)).unwrap();
    assert!(!some.yaml.contains("port: 8080"), "{}", some.yaml);
    assert!(
        some.yaml.contains(&to_api.id),
        "the header lists it: {}",
        some.yaml
    );
    assert_eq!(some.changes[&to_api.id], Change::NewlyDenied);
    assert_eq!(some.changes[&external.id], Change::Kept);
    assert_eq!(some.preview.newly_denied, 1);
    // Without manifests only the sides with a ticked flow get a policy: web's egress, to the
    // external address, which blocks web -> api (and without the cluster, whether it isolates
    // something new is unknown).
    assert_eq!((some.policies, some.isolating), (1, 0));
}
