//! Both renderings of first lines and summaries, on the README's example drop.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
use crate::flowlog::decode::IpProtocol;
use crate::flowlog::enrich::Action;
use crate::model::Labels;

/// 2026-11-23T13:47:44.351Z.
fn at(millis_after: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_441_664_351 + millis_after)
}

fn pod(namespace: &str, name: &str, app: &str) -> PodInfo {
    PodInfo {
        namespace: namespace.into(),
        name: name.into(),
        labels: Labels::from([("app".to_string(), app.to_string())]),
        owner: None,
        unknown: false,
    }
}

/// payments/payments-api-0 (10.244.1.20) calling shop/backend on 9090, denied by its egress.
fn record() -> DropRecord {
    DropRecord {
        ts: rfc3339_millis(at(0)),
        action: Action::Deny,
        direction: Direction::Egress,
        pod: pod("payments", "payments-api-0", "payments-api"),
        peer: Peer::Pod(pod("shop", "backend-5c8b6-qx2lp", "backend")),
        protocol: IpProtocol::Tcp,
        port: Some(9090),
        source_port: Some(46356),
        source: "10.244.1.20".parse().unwrap(),
        destination: "10.244.1.11".parse().unwrap(),
        policies: vec![
            "payments/allow-dns".into(),
            "payments/default-deny-all".into(),
        ],
    }
}

#[test]
fn a_first_line_in_json_is_the_record_with_a_count_of_one() {
    let line = DropLine::first(record()).render(Format::Json).unwrap();
    assert_eq!(
        line,
        concat!(
            r#"{"ts":"2026-11-23T13:47:44.351Z","action":"deny","direction":"egress","#,
            r#""pod":{"namespace":"payments","name":"payments-api-0","labels":{"app":"payments-api"}},"#,
            r#""peer":{"namespace":"shop","name":"backend-5c8b6-qx2lp","labels":{"app":"backend"}},"#,
            r#""protocol":"tcp","port":9090,"source_port":46356,"source":"10.244.1.20","#,
            r#""destination":"10.244.1.11","policies":["payments/allow-dns","payments/default-deny-all"],"#,
            r#""count":1}"#,
        )
    );
}

#[test]
fn a_summary_in_json_has_the_count_first_and_last_times_and_no_source_port() {
    let line = DropLine::summary(record(), 3, at(1_000), at(9_500));
    let json: serde_json::Value =
        serde_json::from_str(&line.render(Format::Json).unwrap()).unwrap();
    let mut expected = serde_json::to_value(record()).unwrap();
    let object = expected.as_object_mut().unwrap();
    object.remove("source_port");
    object.insert("ts".into(), json!("2026-11-23T13:47:53.851Z"));
    object.insert("count".into(), json!(3));
    object.insert("first_ts".into(), json!("2026-11-23T13:47:45.351Z"));
    object.insert("last_ts".into(), json!("2026-11-23T13:47:53.851Z"));
    assert_eq!(json, expected);
    let text = line.render(Format::Json).unwrap();
    assert!(
        text.ends_with(
            r#""count":3,"first_ts":"2026-11-23T13:47:45.351Z","last_ts":"2026-11-23T13:47:53.851Z"}"#
        ),
        "{text}"
    );
}

#[test]
fn the_text_form_reads_source_to_destination_with_the_policies() {
    assert_eq!(
        DropLine::first(record()).render(Format::Text).unwrap(),
        "2026-11-23T13:47:44.351Z DENY egress payments/payments-api-0 -> \
         shop/backend-5c8b6-qx2lp tcp/9090 (policies: payments/allow-dns, \
         payments/default-deny-all)"
    );
    assert_eq!(
        DropLine::summary(record(), 3, at(1_000), at(9_500))
            .render(Format::Text)
            .unwrap(),
        "2026-11-23T13:47:53.851Z DENY egress payments/payments-api-0 -> \
         shop/backend-5c8b6-qx2lp tcp/9090 (policies: payments/allow-dns, \
         payments/default-deny-all) x3 since 2026-11-23T13:47:45.351Z"
    );
}

#[test]
fn in_text_ingress_arrows_still_point_from_source_to_destination() {
    let mut ingress = record();
    ingress.direction = Direction::Ingress;
    ingress.pod = pod("shop", "backend-5c8b6-qx2lp", "backend");
    ingress.peer = Peer::Pod(pod("payments", "payments-api-0", "payments-api"));
    ingress.policies = vec!["shop/default-deny-ingress".into()];
    assert_eq!(
        DropLine::first(ingress).to_text(),
        "2026-11-23T13:47:44.351Z DENY ingress payments/payments-api-0 -> \
         shop/backend-5c8b6-qx2lp tcp/9090 (policies: shop/default-deny-ingress)"
    );
}

#[test]
fn in_text_external_peers_are_addresses_and_portless_protocols_have_no_port() {
    let mut icmp = record();
    icmp.peer = Peer::External {
        ip: "2001:db8::1".parse().unwrap(),
    };
    icmp.protocol = IpProtocol::Icmpv6;
    icmp.port = None;
    icmp.source_port = None;
    icmp.pod.unknown = true;
    icmp.policies.clear();
    assert_eq!(
        DropLine::first(icmp).to_text(),
        "2026-11-23T13:47:44.351Z DENY egress payments/payments-api-0 (unknown) -> 2001:db8::1 \
         icmpv6 (no isolating policy in the snapshot)"
    );
}

#[test]
fn the_default_format_is_json() {
    assert_eq!(Format::default(), Format::Json);
}

#[test]
fn in_text_an_audited_drop_says_audit() {
    let mut audited = record();
    audited.action = crate::flowlog::enrich::Action::Audit;
    let text = DropLine::first(audited).to_text();
    assert!(
        text.starts_with("2026-11-23T13:47:44.351Z AUDIT egress "),
        "{text}"
    );
}
