//! Both renderings of first lines and summaries, on the documented example drop (`docs/observability.md`), and reading
//! lines back as `suggest` and `explain --drop-log` do.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
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
fn record() -> FlowLine {
    FlowLine {
        ts: rfc3339_millis(at(0)),
        action: Action::Deny,
        direction: Direction::Egress,
        pod: pod("payments", "payments-api-0", "payments-api"),
        peer: Peer::Pod(pod("shop", "backend-5c8b6-qx2lp", "backend")),
        protocol: IpProtocol::Tcp,
        port: Some(9090),
        source_port: Some(46356),
        source: Some("10.244.1.20".parse().unwrap()),
        destination: Some("10.244.1.11".parse().unwrap()),
        policies: vec![
            "payments/allow-dns".into(),
            "payments/default-deny-all".into(),
        ],
        allowed_by: None,
        tier: None,
        cluster_policy: None,
        count: 1,
        first_ts: None,
        last_ts: None,
    }
}

#[test]
fn a_first_line_in_json_is_the_record_with_a_count_of_one() {
    let line = record().render(Format::Json).unwrap();
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
    let line = record().summary(3, at(1_000), at(9_500));
    let json: serde_json::Value =
        serde_json::from_str(&line.render(Format::Json).unwrap()).unwrap();
    let mut expected = serde_json::to_value(record()).unwrap();
    let object = expected.as_object_mut().unwrap();
    object.remove("source_port");
    object.remove("count");
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
        record().render(Format::Text).unwrap(),
        "2026-11-23T13:47:44.351Z DENY egress payments/payments-api-0 -> \
         shop/backend-5c8b6-qx2lp tcp/9090 (policies: payments/allow-dns, \
         payments/default-deny-all)"
    );
    assert_eq!(
        record()
            .summary(3, at(1_000), at(9_500))
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
        ingress.to_text(),
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
        icmp.to_text(),
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
    audited.action = Action::Audit;
    let text = audited.to_text();
    assert!(
        text.starts_with("2026-11-23T13:47:44.351Z AUDIT egress "),
        "{text}"
    );
}

/// The documented example line, as the agent writes it.
const LINE: &str = r#"{"ts":"2026-11-23T13:47:44.351Z","action":"deny","direction":"egress","pod":{"namespace":"payments","name":"payments-api-0","labels":{"app":"payments-api"}},"peer":{"namespace":"shop","name":"backend-5c8b6-qx2lp","labels":{"app":"backend"}},"protocol":"tcp","port":9090,"source_port":46356,"source":"10.244.1.20","destination":"10.244.1.11","policies":["payments/allow-dns","payments/default-deny-all"],"count":1}"#;

fn read(line: &str) -> FlowLine {
    FlowLine::parse(line).unwrap().unwrap()
}

#[test]
fn a_written_line_reads_back_as_itself() {
    let first = record();
    assert_eq!(read(&first.render(Format::Json).unwrap()), first);
    let summary = record().summary(3, at(1_000), at(9_500));
    assert_eq!(read(&summary.render(Format::Json).unwrap()), summary);
    assert_eq!(read(LINE), first);
}

#[test]
fn kubectl_prefixes_and_timestamps_are_skipped() {
    for prefix in [
        "[pod/kube-nftpol-x2v/agent] ",
        "2026-11-23T13:47:44.351Z ",
        "  ",
    ] {
        assert_eq!(read(&format!("{prefix}{LINE}\r")), read(LINE), "{prefix:?}");
    }
}

#[test]
fn lines_that_are_not_flow_lines_are_not_errors() {
    for line in [
        "",
        "2026-11-23T13:47:44Z  INFO kube_nftpol::agent: agent started",
        "{not json",
        "[1, 2]",
        r#"{"level":"info","msg":"hello"}"#,
        r#"{"action":"reject","direction":"egress"}"#,
    ] {
        assert_eq!(FlowLine::parse(line), Ok(None), "{line:?}");
    }
}

#[test]
fn unknown_fields_counts_and_audit_are_read() {
    let line = LINE
        .replace(r#""action":"deny""#, r#""action":"audit""#)
        .replace(
            r#""count":1"#,
            r#""count":17,"first_ts":"2026-11-23T13:40:00Z","extra":{"a":[1]}"#,
        );
    let read = read(&line);
    assert_eq!(read.action, Action::Audit);
    assert_eq!(read.count, 17);
    assert_eq!(read.first_ts.as_deref(), Some("2026-11-23T13:40:00Z"));
    assert_eq!(read.port, Some(9090));
    // A count of 0, or none (older agents), still stands for one packet.
    assert_eq!(
        self::read(&LINE.replace(r#""count":1"#, r#""count":0"#)).count,
        1
    );
    assert_eq!(self::read(&LINE.replace(r#","count":1"#, "")).count, 1);
}

#[test]
fn external_peers_owners_and_unknown_pods_are_read() {
    let line = r#"{"action":"deny","direction":"ingress","pod":{"namespace":"a","name":"p","labels":{},"owner":{"kind":"StatefulSet","name":"db"},"unknown":true},"peer":{"ip":"2001:db8::1"},"protocol":"icmpv6"}"#;
    let read = read(line);
    assert_eq!(read.direction, Direction::Ingress);
    assert!(read.pod.unknown);
    assert_eq!(read.pod.owner.unwrap().kind, "StatefulSet");
    assert_eq!(
        read.peer,
        Peer::External {
            ip: "2001:db8::1".parse().unwrap()
        }
    );
    assert_eq!(read.protocol, IpProtocol::Icmpv6);
    assert_eq!((read.port, read.source, read.ts.as_str()), (None, None, ""));
}

#[test]
fn the_packets_addresses_are_read_when_present() {
    let without = LINE.replace(r#""source":"10.244.1.20","#, "");
    assert_eq!(read(&without).source, None);
    let bad = LINE.replace(r#""source":"10.244.1.20""#, r#""source":"ten""#);
    assert!(matches!(
        FlowLine::parse(&bad),
        Err(LineError::Malformed(_))
    ));
}

#[test]
fn protocols_are_read_by_name_in_any_case_or_by_number() {
    let with = |protocol: &str| read(&LINE.replace(r#""tcp""#, protocol)).protocol;
    assert_eq!(with(r#""UDP""#), IpProtocol::Udp);
    assert_eq!(with(r#""sctp""#), IpProtocol::Sctp);
    assert_eq!(with(r#""icmp""#), IpProtocol::Icmp);
    assert_eq!(with(r#""47""#), IpProtocol::Other(47));
    assert_eq!(with("6"), IpProtocol::Tcp);
}

#[test]
fn malformed_flow_lines_are_errors() {
    for (from, to) in [
        (r#""direction":"egress""#, r#""direction":"sideways""#),
        (r#""protocol":"tcp""#, r#""protocol":"carrier-pigeon""#),
        (r#""port":9090"#, r#""port":70000"#),
        (r#""peer":{"namespace":"shop","#, r#""peer":{"ip":"nope","#),
        (r#""namespace":"payments","#, ""),
        (r#""direction":"egress","#, ""),
    ] {
        let line = LINE.replace(from, to);
        assert!(
            matches!(FlowLine::parse(&line), Err(LineError::Malformed(_))),
            "{to}: {:?}",
            FlowLine::parse(&line)
        );
    }
}

#[test]
fn an_allowed_line_names_its_rule_and_reads_back() {
    let mut allowed = record();
    allowed.action = Action::Allow;
    allowed.policies = vec!["payments/egress-to-shop".into()];
    allowed.allowed_by = Some(AllowedBy {
        policy: "payments/egress-to-shop".into(),
        rule: 1,
    });
    let json = allowed.render(Format::Json).unwrap();
    assert!(
        json.contains(r#""action":"allow","#) && json.contains(
            r#""policies":["payments/egress-to-shop"],"allowed_by":{"policy":"payments/egress-to-shop","rule":1},"count":1}"#
        ),
        "{json}"
    );
    assert_eq!(read(&json), allowed);
    assert_eq!(
        allowed.to_text(),
        "2026-11-23T13:47:44.351Z ALLOW egress payments/payments-api-0 -> \
         shop/backend-5c8b6-qx2lp tcp/9090 (allowed by payments/egress-to-shop egress[1])"
    );
    let mut open = allowed.clone();
    open.policies.clear();
    open.allowed_by = None;
    assert!(
        open.to_text().ends_with("tcp/9090 (not isolated)"),
        "{}",
        open.to_text()
    );
    assert!(!Action::Allow.is_denied() && Action::Audit.is_denied() && Action::Deny.is_denied());
}
