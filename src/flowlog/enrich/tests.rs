use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

use super::*;
use crate::flow_line::{AllowedBy, FlowLine};
use crate::model::{IpProtocol, ObjectKey, Owner, PodPhase};

/// The record as the agent's text drop log writes it.
fn text(line: FlowLine) -> String {
    line.to_text()
}

fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Pod {
    Pod {
        key: ObjectKey::new(ns, name),
        labels: [("app".to_string(), app.to_string())].into(),
        node: Some("node-1".into()),
        ips: vec![ip.parse().unwrap()],
        phase: PodPhase::Active,
        host_network: false,
        terminating: false,
        ports: Vec::new(),
        owner: None,
    }
}

fn policy(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap()
}

/// shop/backend-0 (10.244.1.11) isolated for ingress by two policies and for egress by one;
/// payments/api-0 (10.244.1.20) owned by a StatefulSet; shop/frontend-0 not isolated.
fn snapshot() -> Snapshot {
    let mut s = Snapshot::new();
    s.upsert_pod(pod("shop", "backend-0", "backend", "10.244.1.11"));
    s.upsert_pod(pod("shop", "frontend-0", "frontend", "10.244.1.12"));
    let mut api = pod("payments", "api-0", "api", "10.244.1.20");
    api.owner = Some(Owner {
        kind: "StatefulSet".into(),
        name: "api".into(),
    });
    s.upsert_pod(api);
    for policy in [
        policy(
            "shop",
            "default-deny-ingress",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ),
        policy(
            "shop",
            "backend-from-frontend",
            json!({"podSelector": {"matchLabels": {"app": "backend"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}]}]}),
        ),
        policy(
            "shop",
            "backend-egress",
            json!({"podSelector": {"matchLabels": {"app": "backend"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}),
        ),
        // Another namespace's policy never isolates shop's pods.
        policy(
            "payments",
            "deny-all",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ),
    ] {
        s.upsert_network_policy(&policy).unwrap();
    }
    s
}

fn packet(direction: Direction, pod: &str, source: &str, destination: &str) -> LoggedPacket {
    let (namespace, name) = pod.split_once('/').unwrap();
    LoggedPacket {
        kind: LogKind::Denied,
        direction,
        pod: ObjectKey::new(namespace, name),
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
        protocol: IpProtocol::Tcp,
        source_port: Some(51000),
        destination_port: Some(9090),
    }
}

/// 2025-01-02T03:04:05.678Z.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_735_787_045_678)
}

#[test]
fn an_ingress_drop_from_a_pod_names_both_pods_and_the_isolating_policies() {
    let record = enrich(
        &packet(
            Direction::Ingress,
            "shop/backend-0",
            "10.244.1.20",
            "10.244.1.11",
        ),
        &snapshot(),
        now(),
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&serde_json::to_string(&record).unwrap())
            .unwrap(),
        json!({
            "ts": "2025-01-02T03:04:05.678Z",
            "action": "deny",
            "direction": "ingress",
            "pod": {"namespace": "shop", "name": "backend-0", "labels": {"app": "backend"}},
            "peer": {"namespace": "payments", "name": "api-0", "labels": {"app": "api"},
                     "owner": {"kind": "StatefulSet", "name": "api"}},
            "protocol": "tcp",
            "port": 9090,
            "source_port": 51000,
            "source": "10.244.1.20",
            "destination": "10.244.1.11",
            "policies": ["shop/backend-from-frontend", "shop/default-deny-ingress"],
            "count": 1,
        })
    );
}

#[test]
fn the_json_form_is_one_line_with_keys_in_a_fixed_order() {
    let mut denied = packet(
        Direction::Egress,
        "shop/backend-0",
        "10.244.1.11",
        "203.0.113.7",
    );
    denied.protocol = IpProtocol::Icmp;
    denied.source_port = None;
    denied.destination_port = None;
    let line = serde_json::to_string(&enrich(&denied, &snapshot(), now())).unwrap();
    assert_eq!(
        line,
        concat!(
            r#"{"ts":"2025-01-02T03:04:05.678Z","action":"deny","direction":"egress","#,
            r#""pod":{"namespace":"shop","name":"backend-0","labels":{"app":"backend"}},"#,
            r#""peer":{"ip":"203.0.113.7"},"protocol":"icmp","source":"10.244.1.11","#,
            r#""destination":"203.0.113.7","policies":["shop/backend-egress"],"count":1}"#,
        )
    );
}

#[test]
fn a_pod_missing_from_the_snapshot_is_marked_unknown_with_no_policies() {
    let record = enrich(
        &packet(
            Direction::Ingress,
            "shop/gone-0",
            "10.244.1.20",
            "10.244.1.99",
        ),
        &snapshot(),
        now(),
    );
    assert!(record.pod.unknown);
    assert_eq!(record.pod.name, "gone-0");
    assert!(record.policies.is_empty());
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
    assert_eq!(json["pod"]["unknown"], true);
    assert!(text(record).contains("shop/gone-0 (unknown)"));
}

#[test]
fn a_pod_name_cut_by_the_prefix_limit_is_found_through_its_address() {
    // 17 bytes of `knp:deny:ingress:`, 5 of `shop/`: 105 bytes of the name fit in 127.
    let long_name = format!("backend-{}", "x".repeat(150));
    let mut s = snapshot();
    s.upsert_pod(pod("shop", &long_name, "backend", "10.244.1.30"));
    let cut = &long_name[..127 - "knp:deny:ingress:shop/".len()];
    let record = enrich(
        &packet(
            Direction::Ingress,
            &format!("shop/{cut}"),
            "10.244.1.20",
            "10.244.1.30",
        ),
        &s,
        now(),
    );
    assert_eq!(record.pod.name, long_name);
    assert!(!record.pod.unknown);
    assert_eq!(record.policies.len(), 2);

    // A short name that merely starts another pod's name is not a cut name.
    let record = enrich(
        &packet(
            Direction::Ingress,
            "shop/backend",
            "10.244.1.20",
            "10.244.1.11",
        ),
        &s,
        now(),
    );
    assert!(record.pod.unknown);
}

#[test]
fn peers_that_are_not_policy_endpoints_are_external_addresses() {
    let mut s = snapshot();
    let mut host = pod("kube-system", "proxy", "proxy", "192.168.0.10");
    host.host_network = true;
    s.upsert_pod(host);
    let mut done = pod("shop", "job-1", "job", "10.244.1.40");
    done.phase = PodPhase::Finished;
    s.upsert_pod(done);
    for source in ["192.168.0.10", "10.244.1.40", "203.0.113.7"] {
        let record = enrich(
            &packet(Direction::Ingress, "shop/backend-0", source, "10.244.1.11"),
            &s,
            now(),
        );
        assert_eq!(
            record.peer,
            Peer::External {
                ip: source.parse().unwrap()
            }
        );
    }
}

#[test]
fn the_text_form_reads_as_one_line() {
    let s = snapshot();
    let ingress = enrich(
        &packet(
            Direction::Ingress,
            "shop/backend-0",
            "10.244.1.20",
            "10.244.1.11",
        ),
        &s,
        now(),
    );
    assert_eq!(
        text(ingress),
        "2025-01-02T03:04:05.678Z DENY ingress payments/api-0 -> shop/backend-0 tcp/9090 \
         (policies: shop/backend-from-frontend, shop/default-deny-ingress)"
    );
    let mut v6 = packet(
        Direction::Egress,
        "shop/backend-0",
        "fd00::b",
        "2001:db8::1",
    );
    v6.protocol = IpProtocol::Udp;
    v6.destination_port = Some(53);
    let mut s6 = s.clone();
    let mut backend = s6
        .pod(&ObjectKey::new("shop", "backend-0"))
        .unwrap()
        .clone();
    backend.ips.push("fd00::b".parse().unwrap());
    s6.upsert_pod(backend);
    assert_eq!(
        text(enrich(&v6, &s6, now())),
        "2025-01-02T03:04:05.678Z DENY egress shop/backend-0 -> 2001:db8::1 udp/53 \
         (policies: shop/backend-egress)"
    );
}

#[test]
fn timestamps_before_the_epoch_print_as_the_epoch() {
    assert_eq!(
        rfc3339_millis(SystemTime::UNIX_EPOCH - Duration::from_secs(1)),
        "1970-01-01T00:00:00.000Z"
    );
    assert_eq!(
        rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_nanos(1_999_999)),
        "1970-01-01T00:00:00.001Z"
    );
}

#[test]
fn the_example_cluster_logs_a_denied_call_from_payments_to_the_shop_backend() {
    let loaded = crate::source::manifests::load_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples"),
    )
    .unwrap();
    let denied = LoggedPacket {
        kind: LogKind::Denied,
        direction: Direction::Ingress,
        pod: ObjectKey::new("shop", "backend-5c8b6-qx2lp"),
        source: "10.244.1.20".parse().unwrap(),
        destination: "10.244.1.11".parse().unwrap(),
        protocol: IpProtocol::Tcp,
        source_port: Some(40000),
        destination_port: Some(9090),
    };
    let record = enrich(&denied, &loaded.snapshot, now());
    assert!(!record.pod.unknown);
    let Peer::Pod(peer) = &record.peer else {
        panic!("{:?}", record.peer);
    };
    assert_eq!(peer.namespace, "payments");
    assert!(
        record
            .policies
            .contains(&"shop/default-deny-ingress".to_string()),
        "{:?}",
        record.policies
    );
}

#[test]
fn an_audited_packet_is_recorded_with_the_audit_action() {
    let mut audited = packet(
        Direction::Ingress,
        "shop/backend-0",
        "10.244.1.20",
        "10.244.1.11",
    );
    audited.kind = LogKind::Audited;
    let record = enrich(&audited, &snapshot(), now());
    assert_eq!(record.action, Action::Audit);
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
    assert_eq!(json["action"], "audit");
    assert_eq!(json["pod"]["name"], "backend-0");
}

#[test]
fn a_pod_name_cut_by_the_audit_prefix_limit_is_found_through_its_address() {
    // The audit prefix is one byte longer than the deny prefix: one byte less of the name.
    let long_name = format!("backend-{}", "x".repeat(150));
    let mut s = snapshot();
    s.upsert_pod(pod("shop", &long_name, "backend", "10.244.1.30"));
    let cut = &long_name[..127 - "knp:audit:ingress:shop/".len()];
    let mut audited = packet(
        Direction::Ingress,
        &format!("shop/{cut}"),
        "10.244.1.20",
        "10.244.1.30",
    );
    audited.kind = LogKind::Audited;
    let record = enrich(&audited, &s, now());
    assert_eq!(record.pod.name, long_name);
    assert_eq!(record.action, Action::Audit);
}

#[test]
fn an_allowed_first_packet_names_the_rule_evaluate_finds() {
    // frontend-0 -> backend-0: backend's ingress isolated by two policies, allowed by
    // backend-from-frontend's first rule.
    let mut allowed = packet(
        Direction::Ingress,
        "shop/backend-0",
        "10.244.1.12",
        "10.244.1.11",
    );
    allowed.kind = LogKind::Allowed;
    let line = enrich(&allowed, &snapshot(), now());
    assert_eq!(line.action, Action::Allow);
    assert_eq!(
        line.allowed_by,
        Some(AllowedBy {
            policy: "shop/backend-from-frontend".into(),
            rule: 0
        })
    );
    assert_eq!(
        line.policies,
        ["shop/backend-from-frontend", "shop/default-deny-ingress"]
    );
    assert_eq!(
        text(line),
        "2025-01-02T03:04:05.678Z ALLOW ingress shop/frontend-0 -> shop/backend-0 tcp/9090 \
         (allowed by shop/backend-from-frontend ingress[0])"
    );
}

#[test]
fn a_first_packet_of_a_pod_no_policy_isolates_is_allowed_with_no_policy() {
    let mut open = packet(
        Direction::Egress,
        "shop/frontend-0",
        "10.244.1.12",
        "10.244.1.11",
    );
    open.kind = LogKind::NotIsolated;
    let line = enrich(&open, &snapshot(), now());
    assert_eq!(line.action, Action::Allow);
    assert!(line.policies.is_empty() && line.allowed_by.is_none());
    assert!(text(line).ends_with("tcp/9090 (not isolated)"));
}

#[test]
fn an_allowed_flow_without_ports_names_no_rule() {
    // ICMP: policies allow it by peer only; evaluate needs a port, so no rule is named.
    let mut icmp = packet(
        Direction::Egress,
        "shop/backend-0",
        "10.244.1.11",
        "10.1.2.3",
    );
    icmp.kind = LogKind::Allowed;
    icmp.protocol = IpProtocol::Icmp;
    icmp.source_port = None;
    icmp.destination_port = None;
    let line = enrich(&icmp, &snapshot(), now());
    assert_eq!((line.action, line.allowed_by), (Action::Allow, None));
    assert_eq!(line.policies, ["shop/backend-egress"]);
}

/// The Admin tier denies shop's egress to 169.254.169.254 (rule 1, "no-imds"); the Baseline
/// tier denies egress to payments (frontend-0 is not isolated for egress).
fn with_tiers() -> Snapshot {
    let mut s = snapshot();
    for object in [
        json!({"metadata": {"name": "guardrails"},
               "spec": {"tier": "Admin", "priority": 10, "subject": {"namespaces": {}},
                        "egress": [{"action": "Accept", "to": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}}]},
                                   {"name": "no-imds", "action": "Deny",
                                    "to": [{"networks": ["169.254.169.254/32"]}]}]}}),
        json!({"metadata": {"name": "baseline"},
               "spec": {"tier": "Baseline", "priority": 0, "subject": {"namespaces": {}},
                        "egress": [{"action": "Deny", "to": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "payments"}}}]}]}}),
    ] {
        let object: crate::policy::cluster::api::ClusterNetworkPolicy =
            serde_json::from_value(object).unwrap();
        s.upsert_cluster_network_policy(&object).unwrap();
    }
    s
}

#[test]
fn a_tier_deny_names_its_tier_and_rule_and_reads_back() {
    let mut denied = packet(
        Direction::Egress,
        "shop/frontend-0",
        "10.244.1.12",
        "169.254.169.254",
    );
    denied.kind = LogKind::TierDenied(crate::model::Tier::Admin);
    denied.destination_port = Some(80);
    let record = enrich(&denied, &with_tiers(), now());
    let json = serde_json::to_string(&record).unwrap();
    assert!(
        json.contains(r#""tier":"Admin","cluster_policy":{"name":"guardrails","priority":10,"rule":1,"rule_name":"no-imds"}"#),
        "{json}"
    );
    assert_eq!(record.action, Action::Deny);
    assert_eq!(FlowLine::parse(&json).unwrap(), Some(record.clone()));
    assert_eq!(
        text(record),
        "2025-01-02T03:04:05.678Z DENY egress shop/frontend-0 -> 169.254.169.254 tcp/80 \
         (denied by Admin ClusterNetworkPolicy guardrails egress[1] \"no-imds\", priority 10)"
    );
    // Audited: the same rule, action audit.
    let mut audited = denied.clone();
    audited.kind = LogKind::TierAudited(crate::model::Tier::Admin);
    let record = enrich(&audited, &with_tiers(), now());
    assert_eq!(record.action, Action::Audit);
    assert_eq!(record.cluster_policy.unwrap().name, "guardrails");
    // The snapshot moved on (the policy is gone): the tier the kernel logged, no rule.
    let record = enrich(&denied, &snapshot(), now());
    assert_eq!(record.tier, Some(crate::model::Tier::Admin));
    assert_eq!(record.cluster_policy, None);
    // A Baseline deny of egress.
    let mut baseline = packet(
        Direction::Egress,
        "shop/frontend-0",
        "10.244.1.12",
        "10.244.1.20",
    );
    baseline.kind = LogKind::TierDenied(crate::model::Tier::Baseline);
    let record = enrich(&baseline, &with_tiers(), now());
    assert_eq!(record.tier, Some(crate::model::Tier::Baseline));
    assert_eq!(record.cluster_policy.unwrap().name, "baseline");
}

#[test]
fn lines_without_a_tier_read_and_write_as_before() {
    let line = r#"{"ts":"2025-01-02T03:04:05.678Z","action":"deny","direction":"egress","pod":{"namespace":"a","name":"p"},"peer":{"ip":"10.0.0.1"},"protocol":"tcp","port":80,"policies":["a/x"],"count":1}"#;
    let parsed = FlowLine::parse(line).unwrap().unwrap();
    assert_eq!((parsed.tier, parsed.cluster_policy.as_ref()), (None, None));
    let written = serde_json::to_string(&parsed).unwrap();
    assert!(
        !written.contains("tier") && !written.contains("cluster_policy"),
        "{written}"
    );
}
