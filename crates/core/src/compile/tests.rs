use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

use super::rules::merge_ports;
use super::*;
use crate::model::{Enforcement, Labels, Namespace, ObjectKey, PodPhase, Protocol};

fn pod(ns: &str, name: &str, app: &str, node: &str, ip: &str) -> Pod {
    Pod::running(
        ObjectKey::new(ns, name),
        [("app".to_string(), app.to_string())].into(),
        node,
        [ip.parse().unwrap()],
    )
}

fn policy(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap()
}

fn allow_from_app_b() -> NetworkPolicy {
    policy(
        "web",
        "from-b",
        json!({"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]}),
    )
}

fn elements(ruleset: &Ruleset, set: &str) -> Vec<SetElement> {
    ruleset.set(set).unwrap().elements.clone()
}

fn addr(ip: &str) -> SetElement {
    SetElement::Address(ip.parse::<IpAddr>().unwrap())
}

#[test]
fn output_does_not_depend_on_the_order_objects_arrive_in() {
    let pods = [
        pod("web", "a1", "a", "n1", "10.0.0.1"),
        pod("web", "a2", "a", "n1", "10.0.0.2"),
        pod("web", "b1", "b", "n2", "10.0.0.3"),
        pod("api", "b2", "b", "n1", "10.0.0.4"),
    ];
    let policies = [
        allow_from_app_b(),
        policy(
            "web",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ),
        policy(
            "api",
            "x",
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}),
        ),
    ];
    let build = |order: &[usize]| {
        let mut s = Snapshot::new();
        for &i in order {
            s.upsert_pod(pods[i].clone());
        }
        for &i in order.iter().rev().filter(|i| **i < policies.len()) {
            s.upsert_network_policy(&policies[i]).unwrap();
        }
        s.upsert_namespace(Namespace::new("web", Default::default()));
        render_text::render(&compile(&s, "n1", &Options::default()))
    };
    let first = build(&[0, 1, 2, 3]);
    assert_eq!(first, build(&[3, 2, 1, 0]));
    assert_eq!(first, build(&[2, 0, 3, 1]));
    assert_eq!(
        first,
        build(&[0, 1, 2, 3]),
        "same input, byte-identical output"
    );
}

#[test]
fn only_this_nodes_isolated_pods_get_chains_but_peers_come_from_every_node() {
    let mut s = Snapshot::new();
    s.upsert_pod(pod("web", "a1", "a", "n1", "10.0.0.1"));
    s.upsert_pod(pod("web", "a2", "a", "n2", "10.0.0.2"));
    s.upsert_pod(pod("web", "b1", "b", "n2", "10.0.0.3"));
    s.upsert_pod(pod("web", "c1", "c", "n1", "10.0.0.5"));
    s.upsert_network_policy(&allow_from_app_b()).unwrap();
    let r = compile(&s, "n1", &Options::default());
    let pod_chains: Vec<&str> = r
        .chains
        .iter()
        .filter(|c| c.hook.is_none() && c.name != REVOKED_CHAIN)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(pod_chains, ["in_web_a1"]);
    assert_eq!(elements(&r, "np_web_from-b_in0_pods4"), [addr("10.0.0.3")]);
    let ingress = r.map("ingress4").unwrap();
    assert_eq!(
        ingress.elements,
        [(
            "10.0.0.1".parse().unwrap(),
            MapVerdict::Goto("in_web_a1".into())
        )]
    );
    assert!(r.map("egress4").unwrap().elements.is_empty());
}

#[test]
fn policies_selecting_no_local_pod_add_nothing_to_the_node() {
    let mut s = Snapshot::new();
    s.upsert_pod(pod("web", "a1", "a", "n2", "10.0.0.1"));
    s.upsert_pod(pod("web", "b1", "b", "n1", "10.0.0.3"));
    s.upsert_network_policy(&allow_from_app_b()).unwrap();
    let r = compile(&s, "n1", &Options::default());
    assert!(
        r.sets
            .iter()
            .all(|s| s.name.starts_with("pod_") || s.name.starts_with("revoked")),
        "only anti-spoofing and revoked sets"
    );
    assert!(
        r.chains
            .iter()
            .all(|c| c.hook.is_some() || c.name == REVOKED_CHAIN),
        "only the base chains and the revoked chain"
    );
}

#[test]
fn revocation_adds_empty_timeout_sets_and_the_reject_chains_and_nothing_else() {
    let mut s = Snapshot::new();
    s.upsert_pod(pod("web", "a1", "a", "n1", "10.0.0.1"));
    s.upsert_network_policy(&allow_from_app_b()).unwrap();
    let on = compile(&s, "n1", &Options::default());
    let off = compile(
        &s,
        "n1",
        &Options {
            revoke_established: false,
            ..Options::default()
        },
    );
    for family in Family::ALL {
        let set = on.set(&revoked_set_name(family)).unwrap();
        assert_eq!(set.kind, SetKind::Connections);
        assert!(set.elements.is_empty());
        assert!(off.set(&revoked_set_name(family)).is_none());
    }
    let forward = on.chain("forward").unwrap();
    assert_eq!(forward.hook, Some(Hook::Forward));
    assert_eq!(forward.rules.len(), 2);
    for (rule, family) in forward.rules.iter().zip(Family::ALL) {
        assert_eq!(
            rule.exprs,
            [
                Expr::CtNotAssured,
                Expr::ConnectionInSet(family, revoked_set_name(family)),
                Expr::Jump(REVOKED_CHAIN.into())
            ]
        );
    }
    // The input chain looks them up first, before the replies are accepted.
    assert_eq!(on.chain("input").unwrap().rules[..2], forward.rules[..]);
    let revoked = on.chain(REVOKED_CHAIN).unwrap();
    assert_eq!(revoked.rules[0].exprs, [Expr::TcpInitialSyn, Expr::Return]);
    assert_eq!(
        revoked.rules[1].exprs,
        [
            Expr::ProtocolIs(Protocol::Tcp),
            Expr::Counter,
            Expr::RejectWithTcpReset
        ]
    );
    assert_eq!(revoked.rules[2].exprs, [Expr::Counter, Expr::Reject]);
    // Without it: no forward chain, no revoked chain, the input chain as before; the rest is
    // the same table.
    assert!(off.chain("forward").is_none() && off.chain(REVOKED_CHAIN).is_none());
    assert_eq!(
        on.chain("input").unwrap().rules[2..],
        off.chain("input").unwrap().rules[..]
    );
    let others = |r: &Ruleset| -> Vec<Chain> {
        r.chains
            .iter()
            .filter(|c| !["forward", "input", REVOKED_CHAIN].contains(&c.name.as_str()))
            .cloned()
            .collect()
    };
    assert_eq!(others(&on), others(&off));
    assert_eq!(on.maps, off.maps);
}

#[test]
fn terminating_pods_stay_while_finished_and_host_network_pods_are_left_out() {
    let mut s = Snapshot::new();
    let mut terminating = pod("web", "b-old", "b", "n2", "10.0.0.7");
    terminating.terminating = true;
    let mut finished = pod("web", "b-done", "b", "n2", "10.0.0.8");
    finished.phase = PodPhase::Finished;
    let mut host = pod("web", "b-host", "b", "n2", "172.18.0.3");
    host.host_network = true;
    let mut local_finished = pod("web", "a-done", "a", "n1", "10.0.0.9");
    local_finished.phase = PodPhase::Finished;
    for p in [
        pod("web", "a1", "a", "n1", "10.0.0.1"),
        terminating,
        finished,
        host,
        local_finished,
    ] {
        s.upsert_pod(p);
    }
    s.upsert_network_policy(&allow_from_app_b()).unwrap();
    let r = compile(&s, "n1", &Options::default());
    assert_eq!(elements(&r, "np_web_from-b_in0_pods4"), [addr("10.0.0.7")]);
    assert!(
        r.chain("in_web_a-done").is_none(),
        "a finished pod is not policed"
    );
}

#[test]
fn an_ip_claimed_by_two_pods_is_dispatched_once() {
    let mut s = Snapshot::new();
    s.upsert_pod(pod("web", "a1", "a", "n1", "10.0.0.1"));
    s.upsert_pod(pod("web", "a2", "a", "n1", "10.0.0.1"));
    s.upsert_network_policy(&policy("web", "deny", json!({"podSelector": {}})))
        .unwrap();
    let r = compile(&s, "n1", &Options::default());
    assert_eq!(r.map("ingress4").unwrap().elements.len(), 1);
}

#[test]
fn long_names_are_bounded_stable_and_unique() {
    let long = "p".repeat(253);
    let mut s = Snapshot::new();
    s.upsert_pod(pod(&"n".repeat(63), &long, "a", "n1", "10.0.0.1"));
    s.upsert_pod(pod(
        &"n".repeat(63),
        &format!("{}q", &long[..252]),
        "a",
        "n1",
        "10.0.0.2",
    ));
    s.upsert_network_policy(&policy(
        &"n".repeat(63),
        &long,
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    ))
    .unwrap();
    let r = compile(&s, "n1", &Options::default());
    let names: Vec<&str> = r
        .chains
        .iter()
        .map(|c| c.name.as_str())
        .chain(r.sets.iter().map(|s| s.name.as_str()))
        .collect();
    assert!(
        names.iter().all(|n| n.len() <= names::MAX_NAME),
        "{names:?}"
    );
    let pod_chains: Vec<&&str> = names.iter().filter(|n| n.starts_with("in_")).collect();
    assert_eq!(pod_chains.len(), 2);
    assert_ne!(pod_chains[0], pod_chains[1]);
    assert_eq!(r, compile(&s, "n1", &Options::default()));
    for chain in &r.chains {
        for rule in &chain.rules {
            assert!(rule.comment.as_ref().is_none_or(|c| c.len() <= MAX_COMMENT));
            for e in &rule.exprs {
                if let Expr::Log { prefix, .. } = e {
                    assert!(prefix.len() <= MAX_LOG_PREFIX);
                    assert!(prefix.starts_with("knp:deny:ingress:nnn"));
                }
            }
        }
    }
}

#[test]
fn the_log_rule_uses_the_configured_group_and_rate() {
    let mut s = Snapshot::new();
    s.upsert_pod(pod("web", "a1", "a", "n1", "10.0.0.1"));
    s.upsert_network_policy(&policy("web", "deny", json!({"podSelector": {}})))
        .unwrap();
    let options = Options {
        nflog_group: 7,
        log_rate_per_second: 3,
        log_burst_packets: 4,
        ..Options::default()
    };
    let r = compile(&s, "n1", &options);
    let chain = r.chain("in_web_a1").unwrap();
    let log_rule = &chain.rules[chain.rules.len() - 2].exprs;
    assert_eq!(
        log_rule[0],
        Expr::Limit {
            rate_per_second: 3,
            burst_packets: 4
        }
    );
    assert_eq!(
        log_rule[1],
        Expr::Log {
            prefix: "knp:deny:ingress:web/a1".into(),
            group: 7
        }
    );
    assert_eq!(
        chain.rules.last().unwrap().exprs,
        [Expr::Counter, Expr::Drop]
    );
}

/// The last two rules of a chain: its log rule's prefix, and the final rule's exprs and
/// comment.
fn chain_tail(r: &Ruleset, chain: &str) -> (String, Vec<Expr>, String) {
    let rules = &r.chain(chain).unwrap().rules;
    let prefix = rules[rules.len() - 2]
        .exprs
        .iter()
        .find_map(|e| match e {
            Expr::Log { prefix, .. } => Some(prefix.clone()),
            _ => None,
        })
        .unwrap();
    let last = rules.last().unwrap();
    (prefix, last.exprs.clone(), last.comment.clone().unwrap())
}

fn audit_cluster(audited: &[&str]) -> Snapshot {
    let mut s = Snapshot::new();
    for ns in ["web", "api"] {
        let mut namespace = Namespace::new(ns, Labels::new());
        if audited.contains(&ns) {
            namespace.enforcement = Enforcement::Audit;
        }
        s.upsert_namespace(namespace);
        s.upsert_pod(pod(
            ns,
            "a",
            "a",
            "n1",
            if ns == "web" { "10.0.0.1" } else { "10.0.0.2" },
        ));
        let spec = json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]});
        s.upsert_network_policy(&policy(ns, "deny", spec)).unwrap();
    }
    s
}

#[test]
fn an_audited_namespace_logs_with_the_audit_prefix_and_lets_the_packet_on() {
    let r = compile(&audit_cluster(&["web"]), "n1", &Options::default());
    assert_eq!(
        chain_tail(&r, "in_web_a"),
        (
            "knp:audit:ingress:web/a".into(),
            vec![Expr::Counter, Expr::Accept],
            "audit ingress web/a".into()
        )
    );
    // Egress returns, so the destination's ingress chain still runs.
    assert_eq!(
        chain_tail(&r, "eg_web_a"),
        (
            "knp:audit:egress:web/a".into(),
            vec![Expr::Counter, Expr::Return],
            "audit egress web/a".into()
        )
    );
    // The other namespace enforces.
    assert_eq!(
        chain_tail(&r, "in_api_a"),
        (
            "knp:deny:ingress:api/a".into(),
            vec![Expr::Counter, Expr::Drop],
            "default deny ingress api/a".into()
        )
    );
    let log_comments = ["in_web_a", "in_api_a"].map(|c| {
        r.chain(c)
            .unwrap()
            .rules
            .iter()
            .rev()
            .nth(1)
            .unwrap()
            .comment
            .clone()
    });
    assert_eq!(
        log_comments,
        [Some("log audit".into()), Some("log default deny".into())]
    );
}

#[test]
fn the_audit_all_option_audits_every_namespace_and_changes_nothing_else() {
    let options = Options {
        audit_all: true,
        ..Options::default()
    };
    let all = compile(&audit_cluster(&[]), "n1", &options);
    assert_eq!(
        all,
        compile(&audit_cluster(&["web", "api"]), "n1", &Options::default())
    );
    let enforced = compile(&audit_cluster(&[]), "n1", &Options::default());
    for (a, e) in all.chains.iter().zip(&enforced.chains) {
        assert_eq!(a.name, e.name);
        let n = a.rules.len();
        let keep = if a.hook.is_none() && a.name != STARTING_PODS_CHAIN {
            n - 2
        } else {
            n
        };
        assert_eq!(a.rules[..keep], e.rules[..keep], "{}", a.name);
    }
    assert_eq!((all.sets, all.maps), (enforced.sets, enforced.maps));
}

/// `web` observed (annotation) or not, with pod `a` isolated for ingress by an allow from app
/// b, and pod `b` isolated by nothing; `api` never annotated.
fn observe_cluster(observed: bool) -> Snapshot {
    let mut s = Snapshot::new();
    let mut web = Namespace::new("web", Labels::new());
    web.observe = observed;
    s.upsert_namespace(web);
    s.upsert_pod(pod("web", "a", "a", "n1", "10.0.0.1"));
    s.upsert_pod(pod("web", "b", "b", "n1", "10.0.0.3"));
    s.upsert_pod(pod("api", "a", "a", "n1", "10.0.0.2"));
    s.upsert_network_policy(&allow_from_app_b()).unwrap();
    s
}

#[test]
fn an_observed_pods_allowing_rules_go_through_its_allow_log_chain() {
    let r = compile(&observe_cluster(true), "n1", &Options::default());
    let rules = &r.chain("in_web_a").unwrap().rules;
    let allowing: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.comment.as_deref() == Some("web/from-b ingress[0]"))
        .collect();
    assert!(!allowing.is_empty());
    for rule in allowing {
        assert_eq!(
            rule.exprs[rule.exprs.len() - 2..],
            [Expr::Counter, Expr::Goto("ai_web_a".into())]
        );
    }
    // Traffic to itself is exempt and not logged; the default deny still logs and drops.
    assert_eq!(rules[0].exprs.last(), Some(&Expr::Accept));
    assert_eq!(
        chain_tail(&r, "in_web_a").0,
        "knp:deny:ingress:web/a".to_owned()
    );
    let allow_log = r.chain("ai_web_a").unwrap();
    assert_eq!(
        allow_log.rules[0].exprs,
        [
            Expr::Limit {
                rate_per_second: 10,
                burst_packets: 20
            },
            Expr::Log {
                prefix: "knp:allow:ingress:web/a".into(),
                group: 100
            }
        ]
    );
    assert_eq!(allow_log.rules[1].exprs, [Expr::Accept]);
}

#[test]
fn an_observed_direction_no_policy_isolates_dispatches_to_its_open_log_chain() {
    let r = compile(&observe_cluster(true), "n1", &Options::default());
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // web/a is isolated for ingress only: its egress, and both directions of web/b, log open.
    assert_eq!(
        map_entries(&r, "egress4"),
        [
            (ip("10.0.0.1"), MapVerdict::Jump("oe_web_a".into())),
            (ip("10.0.0.3"), MapVerdict::Jump("oe_web_b".into())),
        ]
    );
    assert_eq!(
        map_entries(&r, "ingress4"),
        [
            (ip("10.0.0.1"), MapVerdict::Goto("in_web_a".into())),
            (ip("10.0.0.3"), MapVerdict::Goto("oi_web_b".into())),
        ]
    );
    let open = r.chain("oe_web_b").unwrap();
    assert_eq!(
        open.rules.len(),
        2,
        "to itself, a log rule and no verdict: {open:?}"
    );
    assert_eq!(
        open.rules[0].exprs,
        [
            Expr::AddressIs(AddrField::Destination, ip("10.0.0.3")),
            Expr::Return
        ]
    );
    assert!(open.rules[1].exprs.contains(&Expr::Log {
        prefix: "knp:open:egress:web/b".into(),
        group: 100
    }));
    // Namespace api is not observed: nothing of it is logged unless denied.
    assert!(r.chains.iter().all(|c| !c.name.contains("_api_")));
}

#[test]
fn observe_mode_adds_only_log_chains_and_changes_no_verdict() {
    let plain = compile(&observe_cluster(false), "n1", &Options::default());
    let observed = compile(&observe_cluster(true), "n1", &Options::default());
    let all = compile(
        &observe_cluster(false),
        "n1",
        &Options {
            observe_all: true,
            ..Options::default()
        },
    );
    // The agent's --observe also observes api.
    assert!(all.chain("oe_api_a").is_some());
    assert_eq!(plain.sets, observed.sets);
    for chain in &plain.chains {
        let other = observed.chain(&chain.name).unwrap();
        assert_eq!(chain.rules.len(), other.rules.len(), "{}", chain.name);
        for (a, b) in chain.rules.iter().zip(&other.rules) {
            let same_but_goto = a.exprs.len() == b.exprs.len()
                && a.exprs[..a.exprs.len() - 1] == b.exprs[..b.exprs.len() - 1]
                && matches!(b.exprs.last(), Some(Expr::Goto(_)));
            assert!(
                a == b || same_but_goto,
                "{}: {a:?} against {b:?}",
                chain.name
            );
        }
    }
    let added: Vec<&str> = observed
        .chains
        .iter()
        .map(|c| c.name.as_str())
        .filter(|name| plain.chain(name).is_none())
        .collect();
    assert_eq!(added, ["ai_web_a", "oe_web_a", "oe_web_b", "oi_web_b"]);
}

#[test]
fn port_lists_are_sorted_and_merged_per_protocol() {
    let p = |protocol, start, end| ProtocolPorts {
        protocol,
        start,
        end,
    };
    let merged = merge_ports(vec![
        p(Protocol::Udp, 53, 53),
        p(Protocol::Tcp, 90, 100),
        p(Protocol::Tcp, 80, 90),
        p(Protocol::Tcp, 101, 101),
        p(Protocol::Tcp, 200, 300),
        p(Protocol::Udp, 54, 60),
    ]);
    assert_eq!(
        merged,
        [
            p(Protocol::Tcp, 80, 101),
            p(Protocol::Tcp, 200, 300),
            p(Protocol::Udp, 53, 60)
        ]
    );
}

#[test]
fn rule_cost_depends_on_the_pods_own_policies_not_the_cluster() {
    // 200 policies in other namespaces and 2,000 pods elsewhere do not change a pod's chain.
    let mut small = Snapshot::new();
    small.upsert_pod(pod("web", "a1", "a", "n1", "10.0.0.1"));
    small.upsert_network_policy(&allow_from_app_b()).unwrap();
    let mut big = small.clone();
    for i in 0..2000u32 {
        big.upsert_pod(pod(
            &format!("ns{}", i % 100),
            &format!("p{i}"),
            "z",
            "n2",
            &format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256),
        ));
    }
    for i in 0..200 {
        big.upsert_network_policy(&policy(
            &format!("ns{}", i % 100),
            &format!("pol{i}"),
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
        ))
        .unwrap();
    }
    let chain = |s: &Snapshot| {
        compile(s, "n1", &Options::default())
            .chain("in_web_a1")
            .unwrap()
            .rules
            .len()
    };
    assert_eq!(chain(&small), chain(&big));
}

#[test]
fn anti_spoofing_lets_each_veth_send_from_all_of_its_pods_addresses_only() {
    let mut s = Snapshot::new();
    let mut dual = pod("web", "a", "a", "n1", "10.0.0.1");
    dual.ips.push("fd00::1".parse().unwrap());
    s.upsert_pod(dual);
    s.upsert_pod(pod("web", "b", "b", "n1", "10.0.0.2"));
    s.upsert_pod(pod("web", "remote", "b", "n2", "10.0.0.3"));
    let interfaces: PodInterfaces = [
        ("10.0.0.1".parse().unwrap(), "veth0a".to_string()),
        ("10.0.0.2".parse().unwrap(), "bad\"name".to_string()),
        ("10.0.0.3".parse().unwrap(), "veth0c".to_string()),
        ("10.9.9.9".parse().unwrap(), "veth0d".to_string()),
    ]
    .into();
    let r = compile_with_interfaces(&s, "n1", &interfaces, &Options::default());
    assert_eq!(
        elements(&r, "pod_ifaces"),
        [SetElement::Interface("veth0a".into())]
    );
    assert_eq!(
        elements(&r, "pod_iface_addrs4"),
        [SetElement::InterfaceAddress(
            "veth0a".into(),
            "10.0.0.1".parse().unwrap()
        )]
    );
    assert_eq!(
        elements(&r, "pod_iface_addrs6"),
        [SetElement::InterfaceAddress(
            "veth0a".into(),
            "fd00::1".parse().unwrap()
        )],
        "the IPv6 address is allowed although only the IPv4 route named the veth"
    );
    assert_eq!(
        elements(&r, "pod_addrs4"),
        [addr("10.0.0.1")],
        "only addresses paired with a veth"
    );
    assert_eq!(elements(&r, "pod_addrs6"), [addr("fd00::1")]);
    let chain = r.chain(ANTI_SPOOF_CHAIN).unwrap();
    assert_eq!(chain.hook, Some(Hook::Prerouting));
    // Every drop is counted; the accepts (which only end this chain) count nothing.
    for rule in &chain.rules {
        let counted_drop = rule.exprs.ends_with(&[Expr::Counter, Expr::Drop]);
        let plain_accept =
            rule.exprs.last() == Some(&Expr::Accept) && !rule.exprs.contains(&Expr::Counter);
        assert!(counted_drop || plain_accept, "{rule:?}");
    }
    assert_eq!(
        chain
            .rules
            .iter()
            .filter(|r| r.exprs.contains(&Expr::Drop))
            .count(),
        4
    );
    assert_eq!(r.chains[0].name, ANTI_SPOOF_CHAIN);
    assert_eq!(
        compile(&s, "n1", &Options::default())
            .set("pod_ifaces")
            .unwrap()
            .elements,
        [],
        "no interfaces known: nothing is checked, everything still policed by address"
    );
}

fn rule_texts(ruleset: &Ruleset, chain: &str) -> Vec<String> {
    ruleset
        .chain(chain)
        .unwrap()
        .rules
        .iter()
        .map(render_text::rule_text)
        .collect()
}

#[test]
fn a_paired_address_is_only_accepted_from_and_sent_to_its_own_veth() {
    let mut s = Snapshot::new();
    s.upsert_pod(pod("web", "a", "a", "n1", "10.0.0.1"));
    let interfaces: PodInterfaces = [("10.0.0.1".parse().unwrap(), "vetha".to_string())].into();
    let r = compile_with_interfaces(&s, "n1", &interfaces, &Options::default());
    assert_eq!(
        rule_texts(&r, ANTI_SPOOF_CHAIN),
        [
            "iifname . ip saddr @pod_iface_addrs4 accept comment \"own address from own veth\"",
            "iifname . ip6 saddr @pod_iface_addrs6 accept comment \"own address from own veth\"",
            "ip6 saddr :: accept comment \"link-scoped source\"",
            "ip6 saddr fe80::/10 accept comment \"link-scoped source\"",
            "meta nfproto ipv4 iifname @pod_ifaces counter drop \
             comment \"spoofed source address\"",
            "meta nfproto ipv6 iifname @pod_ifaces counter drop \
             comment \"spoofed source address\"",
            "ip saddr @pod_addrs4 counter drop comment \"pod address from another interface\"",
            "ip6 saddr @pod_addrs6 counter drop comment \"pod address from another interface\"",
        ]
    );
    let postrouting = rule_texts(&r, "postrouting");
    assert_eq!(
        postrouting[..3],
        [
            "ip daddr vmap @pod_dests4 comment \"paired pod address: its veth only\"",
            "ip6 daddr vmap @pod_dests6 comment \"paired pod address: its veth only\"",
            "ct state established,related accept comment \"replies\"",
        ],
        "the guard comes before replies: the previous owner's connections must not reach \
         the address's new pod"
    );
    assert_eq!(
        r.map("pod_dests4").unwrap().elements,
        [(
            "10.0.0.1".parse().unwrap(),
            MapVerdict::Jump("to_vetha".into())
        )]
    );
    assert_eq!(r.map("pod_dests6").unwrap().elements, []);
    assert_eq!(
        rule_texts(&r, "to_vetha"),
        ["oifname != \"vetha\" counter drop comment \"pod address behind another interface\""],
        "jumped to, so a packet through its veth goes on to the rest of postrouting"
    );
    assert_eq!(r.chain("to_vetha").unwrap().hook, None);
    assert!(
        rule_texts(&r, "input")
            .iter()
            .all(|rule| !rule.contains("pod_addrs")),
        "packets to the node are checked by source in prerouting"
    );
}

#[test]
fn a_sticky_pairing_keeps_the_address_paired_with_its_old_veth() {
    // Pod a is gone from the node's veths but still in the snapshot (terminating), and the
    // agent still pairs its address with the old veth: the guard keeps that pairing, so the
    // new veth behind the same address is not trusted with it.
    let mut s = Snapshot::new();
    let mut old = pod("web", "a", "a", "n1", "10.0.0.1");
    old.terminating = true;
    s.upsert_pod(old);
    let sticky: PodInterfaces = [("10.0.0.1".parse().unwrap(), "vethold".to_string())].into();
    let r = compile_with_interfaces(&s, "n1", &sticky, &Options::default());
    assert_eq!(elements(&r, "pod_addrs4"), [addr("10.0.0.1")]);
    assert_eq!(
        elements(&r, "pod_iface_addrs4"),
        [SetElement::InterfaceAddress(
            "vethold".into(),
            "10.0.0.1".parse().unwrap()
        )]
    );
    assert_eq!(
        elements(&r, "pod_ifaces"),
        [SetElement::Interface("vethold".into())]
    );
    assert_eq!(
        rule_texts(&r, "to_vethold"),
        ["oifname != \"vethold\" counter drop comment \"pod address behind another interface\""]
    );
}

#[test]
fn an_address_paired_with_several_veths_may_leave_through_any_of_them() {
    // A pod whose two addresses sit behind two veths (routes name both), and its IPv6
    // link-local address, which is unique per link only: no guard for that one.
    let mut s = Snapshot::new();
    let mut two = pod("web", "a", "a", "n1", "10.0.0.1");
    two.ips = vec![
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        "fe80::1".parse().unwrap(),
    ];
    s.upsert_pod(two);
    s.upsert_pod(pod("web", "b", "b", "n1", "10.0.0.3"));
    let interfaces: PodInterfaces = [
        ("10.0.0.1".parse().unwrap(), "vetha1".to_string()),
        ("10.0.0.2".parse().unwrap(), "vetha2".to_string()),
        ("10.0.0.3".parse().unwrap(), "vethb".to_string()),
    ]
    .into();
    let r = compile_with_interfaces(&s, "n1", &interfaces, &Options::default());
    let both = MapVerdict::Jump("to_vetha1_vetha2".into());
    assert_eq!(
        r.map("pod_dests4").unwrap().elements,
        [
            ("10.0.0.1".parse().unwrap(), both.clone()),
            ("10.0.0.2".parse().unwrap(), both),
            (
                "10.0.0.3".parse().unwrap(),
                MapVerdict::Jump("to_vethb".into())
            ),
        ]
    );
    assert_eq!(r.map("pod_dests6").unwrap().elements, []);
    assert_eq!(
        rule_texts(&r, "to_vetha1_vetha2"),
        ["oifname != { \"vetha1\", \"vetha2\" } counter drop \
          comment \"pod address behind another interface\""]
    );
    assert_eq!(
        r.chains
            .iter()
            .filter(|c| c.name.starts_with("to_"))
            .count(),
        2,
        "one guard chain per set of veths"
    );
}

#[test]
fn a_pod_packet_from_its_own_address_and_veth_is_accepted_by_the_first_lookup() {
    // Every packet entering the node walks `prerouting`. A pod's own packet must
    // meet its accept (one `iifname . saddr` lookup) before any other set lookup, and each
    // family's lookups must be behind that family's check, so the other family never pays
    // for them.
    let mut s = Snapshot::new();
    s.upsert_pod(pod("web", "a", "a", "n1", "10.0.0.1"));
    let interfaces: PodInterfaces = [("10.0.0.1".parse().unwrap(), "vetha".to_string())].into();
    let r = compile_with_interfaces(&s, "n1", &interfaces, &Options::default());
    let rules = &r.chain(ANTI_SPOOF_CHAIN).unwrap().rules;
    for (index, family) in Family::ALL.into_iter().enumerate() {
        assert_eq!(
            rules[index].exprs,
            [
                Expr::InterfaceSourceInSet(family, format!("pod_iface_addrs{}", family.suffix())),
                Expr::Accept
            ],
            "the paired-source accept of {family:?} is rule {index}"
        );
    }
    // What a pod's own IPv4 packet passes on its way there: nothing but the accept.
    assert_eq!(rules[0].exprs.len(), 2);
    // Every later rule that looks a set up first tests the family (through an `ip`/`ip6`
    // match, which nft guards with `meta nfproto`, or explicitly).
    for rule in &rules[2..] {
        let first = &rule.exprs[0];
        assert!(
            matches!(
                first,
                Expr::FamilyIs(_)
                    | Expr::AddressInSet(..)
                    | Expr::AddressIs(..)
                    | Expr::Ip6SourceLinkLocal
            ),
            "a bare interface lookup would run for both families: {rule:?}"
        );
    }
}

#[test]
fn link_scoped_pod_addresses_are_paired_but_not_guarded() {
    let mut s = Snapshot::new();
    let mut a = pod("web", "a", "a", "n1", "fd00::1");
    a.ips.push("fe80::1".parse().unwrap());
    s.upsert_pod(a);
    let interfaces: PodInterfaces = [("fd00::1".parse().unwrap(), "vetha".to_string())].into();
    let r = compile_with_interfaces(&s, "n1", &interfaces, &Options::default());
    assert_eq!(elements(&r, "pod_iface_addrs6").len(), 2);
    assert_eq!(
        elements(&r, "pod_addrs6"),
        [addr("fd00::1")],
        "fe80::1 may exist on every link"
    );
    assert_eq!(elements(&r, "pod_addrs4"), []);
}

#[test]
fn without_interfaces_every_anti_spoofing_set_is_empty() {
    let mut s = Snapshot::new();
    s.upsert_pod(pod("web", "a", "a", "n1", "10.0.0.1"));
    let r = compile(&s, "n1", &Options::default());
    for set in [
        "pod_ifaces",
        "pod_iface_addrs4",
        "pod_iface_addrs6",
        "pod_addrs4",
        "pod_addrs6",
    ] {
        assert_eq!(elements(&r, set), [], "{set}");
    }
}

fn map_entries(ruleset: &Ruleset, name: &str) -> Vec<(IpAddr, MapVerdict)> {
    ruleset
        .maps
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.elements.clone())
        .unwrap_or_default()
}

#[test]
fn veths_nobody_claims_are_dropped_while_an_isolated_pod_waits_for_its_ip() {
    let mut snapshot = Snapshot::new();
    snapshot.upsert_pod(pod("web", "known", "a", "n1", "10.0.0.1"));
    let mut waiting = pod("web", "starting", "b", "n1", "10.0.0.1");
    waiting.ips.clear();
    snapshot.upsert_pod(waiting);
    let interfaces: PodInterfaces = [
        ("10.0.0.1".parse().unwrap(), "veth-known".to_owned()),
        ("10.0.0.9".parse().unwrap(), "veth-new".to_owned()),
    ]
    .into();
    let options = Options::default();
    let unclaimed: IpAddr = "10.0.0.9".parse().unwrap();

    // No policy selects the starting pod: nothing changes for the unclaimed veth.
    let open = compile_with_interfaces(&snapshot, "n1", &interfaces, &options);
    assert!(open.chains.iter().all(|c| c.name != STARTING_PODS_CHAIN));
    assert!(map_entries(&open, "egress4").is_empty());

    // A policy isolates app=b: the unclaimed address is dropped both ways, the known pod's
    // address is not touched (it is not isolated), and another node is not affected.
    snapshot
        .upsert_network_policy(&policy(
            "web",
            "deny-b",
            json!({"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress", "Egress"]}),
        ))
        .unwrap();
    let closed = compile_with_interfaces(&snapshot, "n1", &interfaces, &options);
    assert!(closed.chains.iter().any(|c| c.name == STARTING_PODS_CHAIN));
    assert_eq!(
        map_entries(&closed, "egress4"),
        [(unclaimed, MapVerdict::Jump(STARTING_PODS_CHAIN.into()))]
    );
    assert_eq!(
        map_entries(&closed, "ingress4"),
        [(unclaimed, MapVerdict::Goto(STARTING_PODS_CHAIN.into()))]
    );
    let elsewhere = compile_with_interfaces(&snapshot, "n2", &interfaces, &options);
    assert!(
        elsewhere
            .chains
            .iter()
            .all(|c| c.name != STARTING_PODS_CHAIN)
    );
    // Without known veths (offline compile) there is nothing to drop.
    let offline = compile(&snapshot, "n1", &options);
    assert!(offline.chains.iter().all(|c| c.name != STARTING_PODS_CHAIN));
}

#[test]
fn bridged_addresses_nobody_claims_are_dropped_while_an_isolated_pod_waits_for_its_ip() {
    // A bridge CNI: no veth route names a pod; the bridge's range does (interfaces.rs).
    let mut snapshot = Snapshot::new();
    snapshot.upsert_pod(pod("web", "known", "a", "n1", "10.0.0.2"));
    let mut waiting = pod("web", "starting", "b", "n1", "10.0.0.2");
    waiting.ips.clear();
    snapshot.upsert_pod(waiting);
    let bridged: Vec<IpAddr> = ["10.0.0.2", "10.0.0.3"]
        .iter()
        .map(|ip| ip.parse().unwrap())
        .collect();
    let none = PodInterfaces::new();
    let options = Options::default();
    let open = compile_with_bridged(&snapshot, "n1", &none, &bridged, &options);
    assert!(open.chains.iter().all(|c| c.name != STARTING_PODS_CHAIN));

    snapshot
        .upsert_network_policy(&policy(
            "web",
            "deny-b",
            json!({"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Egress"]}),
        ))
        .unwrap();
    let closed = compile_with_bridged(&snapshot, "n1", &none, &bridged, &options);
    let unclaimed: IpAddr = "10.0.0.3".parse().unwrap();
    assert_eq!(
        map_entries(&closed, "egress4"),
        [(unclaimed, MapVerdict::Jump(STARTING_PODS_CHAIN.into()))]
    );
    assert_eq!(
        map_entries(&closed, "ingress4"),
        [(unclaimed, MapVerdict::Goto(STARTING_PODS_CHAIN.into()))]
    );
    // Nothing else keys on the bridge: no anti-spoofing pair, no guard.
    assert_eq!(closed.set("pod_ifaces").unwrap().elements, []);
    assert_eq!(map_entries(&closed, "pod_dests4"), []);
}
