//! The window: which lines are one flow, what an entry keeps, the bound and the evictions.

use super::*;
use crate::flow_line::{AllowedBy, Peer, PodInfo};
use crate::model::{Direction, IpProtocol};

fn pod(name: &str) -> PodInfo {
    PodInfo {
        namespace: "ns".to_owned(),
        name: name.to_owned(),
        labels: [("app".to_owned(), name.to_owned())].into(),
        owner: None,
        unknown: false,
    }
}

/// A first-packet line: `pod` sending to 203.0.113.1 on TCP `port` at second `at`.
fn line(pod_name: &str, port: u16, action: Action, at: u32) -> FlowLine {
    FlowLine {
        ts: ts(at),
        action,
        direction: Direction::Egress,
        pod: pod(pod_name),
        peer: Peer::External {
            ip: "203.0.113.1".parse().unwrap(),
        },
        protocol: IpProtocol::Tcp,
        port: Some(port),
        source_port: Some(40000),
        source: Some("10.0.0.1".parse().unwrap()),
        destination: Some("203.0.113.1".parse().unwrap()),
        policies: vec!["ns/deny".to_owned()],
        allowed_by: None,
        tier: None,
        cluster_policy: None,
        count: 1,
        first_ts: None,
        last_ts: None,
    }
}

fn ts(second: u32) -> String {
    format!("2026-01-01T00:{:02}:{:02}.000Z", second / 60, second % 60)
}

/// A kept line's count, first and last time seen.
fn seen(line: &FlowLine) -> (u64, &str, &str) {
    let first = line.first_ts.as_deref().unwrap_or_default();
    (
        line.count,
        first,
        line.last_ts.as_deref().unwrap_or_default(),
    )
}

fn ports(window: &Window) -> Vec<(String, u16)> {
    window
        .flows()
        .map(|f| (f.pod.name.clone(), f.port.unwrap()))
        .collect()
}

#[test]
fn lines_of_one_flow_are_one_entry_with_all_their_packets_and_first_and_last_time() {
    let mut window = Window::new(10);
    window.record(line("a", 80, Action::Deny, 1));
    let mut summary = line("a", 80, Action::Deny, 9);
    summary.count = 4;
    summary.first_ts = Some(ts(2));
    summary.last_ts = Some(ts(9));
    summary.source_port = None;
    summary.pod.labels.insert("new".into(), "label".into());
    window.record(summary);
    assert_eq!(window.len(), 1);
    let kept = window.flows().next().unwrap();
    assert_eq!(seen(kept), (5, ts(1).as_str(), ts(9).as_str()));
    assert_eq!(kept.ts, ts(9));
    assert_eq!(kept.pod.labels["new"], "label", "the latest line's labels");
    assert_eq!(
        kept.source_port, None,
        "repeats come from many source ports"
    );
}

#[test]
fn a_flow_seen_once_keeps_its_source_port_and_gets_its_times() {
    let mut window = Window::new(10);
    window.record(line("a", 80, Action::Allow, 3));
    let kept = window.flows().next().unwrap();
    assert_eq!(seen(kept), (1, ts(3).as_str(), ts(3).as_str()));
    assert_eq!(kept.source_port, Some(40000));
}

#[test]
fn a_line_older_than_the_entry_adds_its_packets_but_not_its_fields() {
    let mut window = Window::new(10);
    window.record(line("a", 80, Action::Deny, 20));
    let mut late = line("a", 80, Action::Deny, 5);
    late.policies = vec!["ns/old".to_owned()];
    window.record(late);
    let kept = window.flows().next().unwrap();
    assert_eq!(seen(kept), (2, ts(5).as_str(), ts(20).as_str()));
    assert_eq!(kept.policies, ["ns/deny"]);
}

#[test]
fn actions_rules_ports_peers_and_directions_tell_flows_apart_source_ports_do_not() {
    let mut window = Window::new(100);
    window.record(line("a", 80, Action::Deny, 1));
    let mut other_source_port = line("a", 80, Action::Deny, 2);
    other_source_port.source_port = Some(50000);
    window.record(other_source_port);
    assert_eq!(window.len(), 1);

    window.record(line("a", 80, Action::Audit, 3));
    window.record(line("a", 81, Action::Deny, 3));
    let mut ingress = line("a", 80, Action::Deny, 3);
    ingress.direction = Direction::Ingress;
    window.record(ingress);
    let mut other_peer = line("a", 80, Action::Deny, 3);
    other_peer.peer = Peer::External {
        ip: "203.0.113.2".parse().unwrap(),
    };
    window.record(other_peer);
    let mut pod_peer = line("a", 80, Action::Deny, 3);
    pod_peer.peer = Peer::Pod(pod("b"));
    window.record(pod_peer);
    for rule in [0, 1] {
        let mut allowed = line("a", 80, Action::Allow, 3);
        allowed.allowed_by = Some(AllowedBy {
            policy: "ns/allow".to_owned(),
            rule,
        });
        window.record(allowed);
    }
    let mut not_isolated = line("a", 80, Action::Allow, 3);
    not_isolated.policies.clear();
    window.record(not_isolated);
    assert_eq!(window.len(), 9);
    assert_eq!(window.kept(Action::Allow), 3);
    assert_eq!(window.kept(Action::Deny), 5);
    assert_eq!(window.kept(Action::Audit), 1);
}

#[test]
fn when_full_the_least_recently_seen_flow_is_evicted_and_counted_by_action() {
    let mut window = Window::new(2);
    assert_eq!(window.record(line("a", 1, Action::Allow, 1)), None);
    assert_eq!(window.record(line("b", 1, Action::Deny, 2)), None);
    // `a` is seen again, so `b` is now the oldest.
    assert_eq!(window.record(line("a", 1, Action::Allow, 3)), None);
    assert_eq!(
        window.record(line("c", 1, Action::Allow, 4)),
        Some(Action::Deny)
    );
    assert_eq!(ports(&window), [("a".into(), 1), ("c".into(), 1)]);
    assert_eq!(window.evicted(), 1);
    assert_eq!(window.len(), window.capacity());
    assert_eq!(window.kept(Action::Deny), 0);
    assert_eq!(window.kept(Action::Allow), 2);
}

#[test]
fn a_flood_of_new_flows_stays_within_the_capacity() {
    let mut window = Window::new(100);
    for port in 1..=10_000 {
        window.record(line("scanner", port, Action::Allow, 1));
    }
    assert_eq!(window.len(), 100);
    assert_eq!(window.indexed(), 100, "the age index holds no evicted key");
    assert_eq!(window.evicted(), 9_900);
    assert_eq!(window.kept(Action::Allow), 100);
    // The most recent ones are kept.
    assert!(window.flows().all(|f| f.port.unwrap() > 9_900));
}

#[test]
fn zero_capacity_keeps_nothing_and_counts_everything() {
    let mut window = Window::new(0);
    assert_eq!(
        window.record(line("a", 1, Action::Deny, 1)),
        Some(Action::Deny)
    );
    assert!(window.is_empty());
    assert_eq!(window.evicted(), 1);
}
