//! Hostile and broken input through the pure core: the hostile cluster of
//! `support/hostile.rs` (every kind of invalid policy, valid ones at the limits, long and
//! duplicated names), manifests built to hurt a parser, and object names the API server would
//! refuse. Invalid policies give one error naming their field and fail closed; extreme valid
//! ones compile to names `nft` takes and a ruleset that agrees with `evaluate`; nothing panics.
//! `integration/nft_accepts.rs` loads the same ruleset into real nftables and
//! `integration/sim/suite_hostile.rs` runs the agent on it with real packets.

use kube_nftpol_test_support as support;

use std::collections::BTreeSet;
use std::net::IpAddr;

use kube_nftpol::Snapshot;
use kube_nftpol::compile::{self, Expr, Options, Ruleset, render_json, render_text};
use kube_nftpol::model::{ObjectKey, Policy, Protocol};
use kube_nftpol::policy::{Endpoint, Flow, evaluate};
use kube_nftpol::source::manifests::load_str;
use serde_json::json;
use support::hostile::{self, EXPECTED, ISOLATED, NS};
use support::interpret::{Packet, node_accepts};

const NODES: [&str; 2] = ["node-1", "node-2"];

fn hostile_snapshot() -> Snapshot {
    let (case, _) = hostile::case();
    case.snapshot_with(|i| NODES[i % 2].to_owned())
}

fn flow(from: &str, to: &str, protocol: &str, port: u16) -> Flow {
    let endpoint = |key: String| {
        let (ns, name) = key.split_once('/').unwrap();
        Endpoint::Pod(ObjectKey::new(ns, name))
    };
    Flow {
        source: endpoint(hostile::key_of(from)),
        destination: endpoint(hostile::key_of(to)),
        protocol: Protocol::from_k8s(protocol).unwrap(),
        port,
    }
}

/// The names `nft` must take: at most 255 bytes (the kernel's 256 with the NUL; the compiler
/// keeps them under 200), unique, and readable unquoted in an `nft -f` script.
fn check_names(ruleset: &Ruleset) {
    for (what, names) in [
        (
            "chain",
            ruleset
                .chains
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
        ),
        (
            "set",
            ruleset.sets.iter().map(|s| s.name.as_str()).collect(),
        ),
        (
            "map",
            ruleset.maps.iter().map(|m| m.name.as_str()).collect(),
        ),
    ] {
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "two {what}s share a name: {names:?}"
        );
        for name in names {
            assert!(name.len() <= 200, "{what} {name:?} is too long");
            assert!(
                name.starts_with(|c: char| c.is_ascii_alphabetic())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
                "{what} {name:?} is not a plain nft identifier"
            );
        }
    }
    for chain in &ruleset.chains {
        for rule in &chain.rules {
            assert!(rule.comment.as_ref().is_none_or(|c| c.len() <= 128));
            for e in &rule.exprs {
                if let Expr::Log { prefix, .. } = e {
                    assert!(prefix.len() <= 127, "{prefix}");
                }
            }
        }
    }
}

#[test]
fn every_invalid_policy_names_the_field_it_gets_wrong() {
    for invalid in hostile::invalid_policies() {
        let object = serde_json::from_value(invalid.object.clone()).unwrap();
        let policy = Policy::from_k8s(&object).unwrap();
        assert_eq!(
            policy.errors.len(),
            1,
            "{}: expected one error, got {:?}",
            invalid.name,
            policy.errors
        );
        let error = &policy.errors[0];
        assert_eq!(error.field, invalid.field, "{}", invalid.name);
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}: ", invalid.field))
                && error.message.len() > 10,
            "{}: {error}",
            invalid.name
        );
        assert!(
            policy.ingress.as_deref().is_some_and(<[_]>::is_empty),
            "{}: isolates ingress and allows nothing",
            invalid.name
        );
    }
}

/// The manifest source reads the whole hostile cluster (as the agent's `--manifests` does)
/// and lists every invalid policy with its field; the valid ones load clean.
#[test]
fn the_manifest_source_lists_every_invalid_policy_with_its_field() {
    let (case, invalid) = hostile::case();
    let items: Vec<serde_json::Value> = case
        .pods
        .iter()
        .map(|p| {
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"namespace": p.ns, "name": p.name, "labels": p.labels},
                   "spec": {"nodeName": "node-1", "containers": []},
                   "status": {"podIP": p.ip.to_string()}})
        })
        .chain(case.policies.iter().cloned())
        .collect();
    let text = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    let loaded = load_str(&text, "hostile.json").unwrap();
    let reported: Vec<(String, String)> = loaded
        .invalid_policies
        .iter()
        .map(|(key, errors)| {
            assert_eq!(errors.len(), 1, "{key}: {errors:?}");
            (key.name.clone(), errors[0].field.clone())
        })
        .collect();
    let mut expected: Vec<(String, String)> = invalid
        .iter()
        .map(|i| (i.name.to_owned(), i.field.clone()))
        .collect();
    expected.sort();
    assert_eq!(reported, expected);
    assert_eq!(loaded.snapshot.policies().count(), case.policies.len());
}

#[test]
fn invalid_policies_fail_closed_and_the_others_keep_working() {
    let snapshot = hostile_snapshot();
    for (from, to, protocol, port, allowed) in EXPECTED {
        let verdict = evaluate(&snapshot, &flow(from, to, protocol, *port)).unwrap();
        assert_eq!(
            verdict.allowed, *allowed,
            "{from} -> {to} {protocol}/{port}: {verdict:?}"
        );
    }
    // Each invalid policy on its own, too: the client never gets into `isolated`.
    let (mut case, invalid_policies) = hostile::case();
    for invalid in invalid_policies {
        case.policies = vec![invalid.object.clone()];
        let alone = case.snapshot_with(|i| NODES[i % 2].to_owned());
        let target = if invalid.name == "half-invalid" {
            "half"
        } else {
            ISOLATED
        };
        for (protocol, port) in [("TCP", 80), ("TCP", 81), ("UDP", 80)] {
            let verdict = evaluate(&alone, &flow(hostile::CLIENT, target, protocol, port)).unwrap();
            assert!(
                !verdict.allowed,
                "{}: {protocol}/{port} got in",
                invalid.name
            );
        }
    }
}

#[test]
fn the_extreme_cluster_compiles_to_names_nft_takes() {
    let snapshot = hostile_snapshot();
    for node in NODES {
        let ruleset = compile::compile(&snapshot, node, &Options::default());
        check_names(&ruleset);
        assert_eq!(
            ruleset,
            compile::compile(&snapshot, node, &Options::default())
        );
        // Both renderings come out (their acceptance by nft is the root suite's job).
        assert!(render_text::render(&ruleset).contains("table inet kube-nftpol"));
        assert!(!render_json::render(&ruleset).is_empty());
    }
    // The two long pods (same namespace, same first 250 characters) sit on different nodes;
    // their chain names differ and fit.
    let chains: Vec<String> = ["a", "b"]
        .map(|tail| {
            let key = hostile::key_of(&format!("long-{tail}"));
            let (ns, name) = key.split_once('/').unwrap();
            let pod = snapshot.pod(&ObjectKey::new(ns, name)).unwrap();
            compile::pod_chain_name(pod, kube_nftpol::model::Direction::Ingress)
        })
        .to_vec();
    assert_ne!(chains[0], chains[1]);
    assert!(chains.iter().all(|c| c.len() <= 200), "{chains:?}");

    // 10,000 ipBlocks: 8,999 separate IPv4 addresses plus the pod range split around `other`;
    // 1,000 IPv6 addresses.
    let blocks_node = NODES[4 % 2];
    let ruleset = compile::compile(&snapshot, blocks_node, &Options::default());
    let cidr4 = ruleset.set("np_hostile_ipblocks-10k_in0_cidr4").unwrap();
    let cidr6 = ruleset.set("np_hostile_ipblocks-10k_in0_cidr6").unwrap();
    assert_eq!(cidr4.elements.len(), 8_999 + 2);
    assert_eq!(cidr6.elements.len(), 1_000);
    // Two policies named `allow`, in two namespaces: separate objects, separate sets.
    let allow: Vec<&Policy> = snapshot
        .policies()
        .filter(|p| p.key.name == "allow")
        .collect();
    assert_eq!(allow.len(), 2);
}

/// A packet from pod `from` to pod `to` through the nodes' rulesets, as `agreement.rs` walks
/// them (no veth is known, so only policy decides).
fn accepted_by_rulesets(
    rulesets: &[Ruleset; 2],
    (from_node, source): (usize, IpAddr),
    (to_node, destination): (usize, IpAddr),
    protocol: Protocol,
    port: u16,
) -> bool {
    let packet = |input: &str| Packet {
        source,
        destination,
        protocol,
        port,
        from_node: false,
        input: Some(input.to_owned()),
        output: "eth0".to_owned(),
    };
    node_accepts(&rulesets[from_node], &packet("veth-src"))
        && (from_node == to_node || node_accepts(&rulesets[to_node], &packet("eth0")))
}

#[test]
fn the_compiled_rulesets_agree_with_evaluate_on_every_pair_of_pods() {
    let snapshot = hostile_snapshot();
    let options = Options::default();
    let rulesets = NODES.map(|node| compile::compile(&snapshot, node, &options));
    let pods: Vec<_> = snapshot.pods().collect();
    let mut checked = 0;
    for source in &pods {
        for destination in &pods {
            if source.key == destination.key {
                continue;
            }
            for (protocol, port) in [
                (Protocol::Tcp, 80),
                (Protocol::Tcp, 81),
                (Protocol::Udp, 80),
                (Protocol::Udp, 81),
                (Protocol::Sctp, 80),
            ] {
                let f = Flow {
                    source: Endpoint::Pod(source.key.clone()),
                    destination: Endpoint::Pod(destination.key.clone()),
                    protocol,
                    port,
                };
                let expected = evaluate(&snapshot, &f).unwrap().allowed;
                let node =
                    |p: &kube_nftpol::model::Pod| usize::from(p.node.as_deref() == Some(NODES[1]));
                let got = accepted_by_rulesets(
                    &rulesets,
                    (node(source), source.ips[0]),
                    (node(destination), destination.ips[0]),
                    protocol,
                    port,
                );
                assert_eq!(
                    got, expected,
                    "{} -> {} {protocol}/{port}",
                    source.key, destination.key
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, pods.len() * (pods.len() - 1) * 5);
}

/// Names only a manifest can carry (the API server refuses them): `_`, which the chain names
/// use as their separator, spaces, quotes, `;` and newlines, which `nft -f` would read as
/// syntax, non-ASCII. Each pod keeps its own chain (no two pods share rules) and every name
/// stays a plain identifier.
#[test]
fn names_the_api_server_would_refuse_cannot_merge_chains_or_inject_nft_syntax() {
    let names = hostile::ODD_NAMES;
    let text = hostile::odd_names_manifests();
    let snapshot = load_str(&text, "odd.json").unwrap().snapshot;
    let ruleset = compile::compile(&snapshot, "node-1", &Options::default());
    check_names(&ruleset);
    let pod_chains = ruleset
        .chains
        .iter()
        .filter(|c| c.name.starts_with("in_"))
        .count();
    assert_eq!(pod_chains, names.len(), "one ingress chain per pod");
    let script = render_text::render(&ruleset);
    // The odd text survives only inside quoted comments and log prefixes: no line of the
    // script starts another table or a command.
    let statements: Vec<&str> = script
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("table") || l.starts_with("flush"))
        .collect();
    assert_eq!(statements, ["table inet kube-nftpol {"], "{script}");
    // `a`/`b_c` does not inherit `a_b`/`c`'s allow rule.
    let from = |ip: &str| Packet {
        source: ip.parse().unwrap(),
        destination: "10.0.0.2".parse().unwrap(),
        protocol: Protocol::Tcp,
        port: 80,
        from_node: false,
        input: Some("eth0".into()),
        output: "veth1".into(),
    };
    assert!(!node_accepts(&ruleset, &from("10.0.0.100")));
    let to_first = Packet {
        destination: "10.0.0.1".parse().unwrap(),
        ..from("10.0.0.100")
    };
    assert!(node_accepts(&ruleset, &to_first));
}

/// Manifests built to hurt a parser: each is an error (or loads), quickly, without a panic or
/// a stack overflow, and errors name the file.
#[test]
fn manifests_built_to_hurt_the_parser_are_errors_not_crashes() {
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_yaml = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_list = {
        let mut object =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "deep"}});
        for _ in 0..100 {
            object = json!({"apiVersion": "v1", "kind": "List", "items": [object]});
        }
        object.to_string()
    };
    let laughs = {
        let mut text = String::from(
            "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 9].join(",");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        text + "kind: Namespace\napiVersion: v1\nmetadata: {name: lol}\n"
    };
    let cases: Vec<(&str, String)> = vec![
        ("deep.json", deep_json),
        ("deep.yaml", deep_yaml),
        ("deep-list.json", deep_list),
        ("laughs.yaml", laughs),
        ("nul.yaml", "kind: Pod\0\napiVersion: v1".into()),
        ("types.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: [1]}\n".into()),
        ("port-type.yaml", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{ports: [{port: {a: 1}}]}]}\n".into()),
        ("huge-number.yaml", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{ports: [{port: 99999999999999999999999}]}]}\n".into()),
        ("duplicate-key.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, name: b}\n".into()),
        ("no-name.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\n".into()),
        ("scalar.yaml", "just a string".into()),
        ("tags.yaml", "!!binary aGVsbG8=".into()),
        ("empty.json", String::new()),
    ];
    for (origin, text) in cases {
        match load_str(&text, origin) {
            Ok(loaded) => {
                // Whatever loads compiles and evaluates.
                let ruleset = compile::compile(&loaded.snapshot, "node-1", &Options::default());
                check_names(&ruleset);
            }
            Err(e) => {
                let message = format!("{e}");
                assert!(message.starts_with(origin), "{origin}: {message}");
            }
        }
    }
}

/// Pods with broken fields are kept with what is usable, and the rest is reported.
#[test]
fn pods_with_broken_addresses_and_ports_are_kept_without_them() {
    let text = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": NS, "name": "broken", "labels": {"app": ISOLATED}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [
            {"name": "big", "containerPort": 70000}, {"name": "neg", "containerPort": -5},
            {"name": "icmp", "containerPort": 80, "protocol": "ICMP"}, {"name": "ok", "containerPort": 8080}]}]},
        "status": {"podIP": "10.0.0.256", "podIPs": [{"ip": ""}, {"ip": "fd00::1"}, {"ip": "10.0.0.7"}]}})
    .to_string();
    let loaded = load_str(&text, "broken.json").unwrap();
    let pod = loaded.snapshot.pods().next().unwrap();
    assert_eq!(pod.ips.len(), 2, "{:?}", pod.ips);
    assert_eq!(pod.ports.len(), 1, "{:?}", pod.ports);
    assert_eq!(loaded.warnings.len(), 5, "{:?}", loaded.warnings);
}
