//! The hostile cluster: NetworkPolicies with every kind of invalid field, valid ones at the
//! limits (10,000 ipBlocks, selectors with thousands of values and a hundred labels, label keys
//! and values at their maximum lengths), duplicated names, rules and peers, odd named ports,
//! and a 63-character namespace with two 253-character pod names. One description for the
//! three levels that test it: `tests/hostile.rs` (parse, validate, compile, evaluate),
//! `integration/nft_accepts.rs` (real `nft` takes the ruleset) and the simulator's
//! `suite_hostile` (the agent on real packets).
//!
//! It is a conformance [`Case`] (pods with IPs and ports, policies), so the simulator builds
//! it like an upstream case: pod `i` sits on node `i % 2` with an address of that node's pod
//! range, IPv4 only.
//!
//! Every invalid policy selects `hostile/isolated` and, were it installed half (its valid
//! peers and ports without the broken one), would let `hostile/client` in on TCP 80: so
//! `isolated` accepting anything means a policy failed open. `hostile/half` is selected by one
//! invalid policy and one valid policy; the valid one must keep working.

use serde_json::{Value, json};

use crate::conformance::Case;

/// The namespace of most of the hostile objects.
pub const NS: &str = "hostile";
/// The pod every invalid policy selects (label `app=isolated`).
pub const ISOLATED: &str = "isolated";
/// The pod the valid policies let in (`app=client`).
pub const CLIENT: &str = "client";

/// A namespace name at the DNS-label limit: 63 characters.
pub fn long_namespace() -> String {
    let name = format!("ns-{}", "x".repeat(57)) + "-63";
    assert_eq!(name.len(), 63);
    name
}

/// A pod name at the DNS-subdomain limit, 253 characters of dot-separated labels, ending in
/// `tail` (two such names share their first 250 characters).
pub fn long_pod_name(tail: &str) -> String {
    let label = "p".repeat(63);
    let mut name = format!("{label}.{label}.{label}.{}", "q".repeat(60 - tail.len()));
    name.push('-');
    name.push_str(tail);
    assert_eq!(name.len(), 253, "{name}");
    name
}

/// A policy name at the DNS-subdomain limit.
pub fn long_policy_name() -> String {
    let label = "r".repeat(63);
    let name = format!("{label}.{label}.{label}.{}", "s".repeat(61));
    assert_eq!(name.len(), 253);
    name
}

/// A label key at its limits: a 253-character DNS-subdomain prefix, `/`, a 63-character name.
pub fn label_key_at_limit() -> String {
    let label = "k".repeat(63);
    let prefix = format!("{label}.{label}.{label}.{}", "e".repeat(61));
    assert_eq!(prefix.len(), 253);
    format!("{prefix}/{}", "n".repeat(63))
}

/// A label value at its limit: 63 characters.
pub fn label_value_at_limit() -> String {
    format!("v{}v", "-._".repeat(20) + "a")
}

/// One invalid policy of the mix: what it gets wrong and where.
pub struct Invalid {
    /// The policy's name (in [`NS`]).
    pub name: &'static str,
    /// The field its one error names.
    pub field: String,
    /// What kube-apiserver v1.20.2 does with it.
    pub v1_20: V120,
    /// The policy object.
    pub object: Value,
}

/// What kube-apiserver v1.20.2 (the test server) does with an invalid policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V120 {
    /// Refuses it (HTTP 422), as every server does.
    Refuses,
    /// Stores it as it is: Go parses `::ffff:10.244.0.0/112` as an IPv4 CIDR (servers from
    /// 1.33 refuse it with StrictIPCIDRValidation).
    Stores,
    /// Stores it without `endPort`, a field it does not know (1.21+ validate it): what
    /// remains is a valid policy, which the agent then enforces as such. `{endPort: 90}`
    /// alone becomes "every TCP port": on such servers endPort must not be used.
    DropsEndPort,
}

/// A NetworkPolicy object.
pub fn policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    })
}

/// The invalid policies. Each selects `app=isolated` (or `app=half` for `half-invalid`) and
/// has one ingress rule whose peers include every pod and whose ports include TCP 80, plus
/// one broken peer or port: installed half, it would let the client in.
pub fn invalid_policies() -> Vec<Invalid> {
    let everyone = || json!([{"podSelector": {}}, {"namespaceSelector": {}}]);
    let with_peer = |name: &'static str, peer: Value, field: &str, stored: bool| {
        let mut peers = everyone();
        peers.as_array_mut().expect("a list").push(peer);
        Invalid {
            name,
            field: format!("spec.ingress[0].from[2]{field}"),
            v1_20: if stored { V120::Stores } else { V120::Refuses },
            object: policy(
                NS,
                name,
                json!({"podSelector": {"matchLabels": {"app": ISOLATED}},
                       "ingress": [{"from": peers, "ports": [{"port": 80}]}]}),
            ),
        }
    };
    let with_port = |name: &'static str, port: Value, field: &str| Invalid {
        name,
        field: format!("spec.ingress[0].ports[1]{field}"),
        v1_20: if field == ".endPort" {
            V120::DropsEndPort
        } else {
            V120::Refuses
        },
        object: policy(
            NS,
            name,
            json!({"podSelector": {"matchLabels": {"app": ISOLATED}},
                   "ingress": [{"from": everyone(), "ports": [{"port": 80}, port]}]}),
        ),
    };
    let cidr = |c: &str| json!({"ipBlock": {"cidr": c}});
    let except = |c: &str, e: &str| json!({"ipBlock": {"cidr": c, "except": [e]}});
    let selector = |s: Value| json!({"podSelector": s});
    let long_key_prefix = format!("{}/app", "a".repeat(254));
    let long_key_name = "k".repeat(64);
    let mut out = vec![
        with_peer(
            "cidr-prefix-33",
            cidr("10.0.0.0/33"),
            ".ipBlock.cidr",
            false,
        ),
        with_peer("cidr-no-prefix", cidr("10.0.0.1"), ".ipBlock.cidr", false),
        with_peer("cidr-garbage", cidr("all of it"), ".ipBlock.cidr", false),
        with_peer(
            "cidr-v6-garbage",
            cidr("fd00:::1/64"),
            ".ipBlock.cidr",
            false,
        ),
        with_peer(
            "cidr-ipv4-mapped",
            cidr("::ffff:10.244.0.0/112"),
            ".ipBlock.cidr",
            true,
        ),
        with_peer(
            "except-outside",
            except("10.0.0.0/8", "192.168.0.0/16"),
            ".ipBlock.except[0]",
            false,
        ),
        with_peer(
            "except-other-family",
            except("0.0.0.0/0", "fd00::/8"),
            ".ipBlock.except[0]",
            false,
        ),
        with_peer(
            "except-equal",
            except("10.0.0.0/8", "10.0.0.0/8"),
            ".ipBlock.except[0]",
            false,
        ),
        with_peer(
            "label-value-64",
            selector(json!({"matchLabels": {"app": "v".repeat(64)}})),
            ".podSelector.matchLabels[app]",
            false,
        ),
        with_peer(
            "label-key-prefix-254",
            selector(json!({"matchLabels": {long_key_prefix.clone(): "a"}})),
            &format!(".podSelector.matchLabels[{long_key_prefix}]"),
            false,
        ),
        with_peer(
            "label-key-name-64",
            selector(json!({"matchLabels": {long_key_name.clone(): "a"}})),
            &format!(".podSelector.matchLabels[{long_key_name}]"),
            false,
        ),
        with_peer(
            "selector-operator",
            selector(
                json!({"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["a"]}]}),
            ),
            ".podSelector.matchExpressions[0].operator",
            false,
        ),
        with_peer(
            "selector-in-no-values",
            json!({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
            ".namespaceSelector.matchExpressions[0].values",
            false,
        ),
        with_peer(
            "selector-exists-values",
            selector(
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            ),
            ".podSelector.matchExpressions[0].values",
            false,
        ),
        with_peer("peer-empty", json!({}), "", false),
        with_peer(
            "peer-ipblock-and-selector",
            json!({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
            "",
            false,
        ),
        with_port("port-zero", json!({"port": 0}), ".port"),
        with_port("port-65536", json!({"port": 65536}), ".port"),
        with_port("port-negative", json!({"port": -1}), ".port"),
        with_port(
            "end-port-below",
            json!({"port": 443, "endPort": 80}),
            ".endPort",
        ),
        with_port(
            "end-port-65536",
            json!({"port": 80, "endPort": 65536}),
            ".endPort",
        ),
        with_port(
            "end-port-named",
            json!({"port": "http", "endPort": 90}),
            ".endPort",
        ),
        with_port("end-port-alone", json!({"endPort": 90}), ".endPort"),
        with_port(
            "protocol-icmp",
            json!({"port": 80, "protocol": "ICMP"}),
            ".protocol",
        ),
        with_port(
            "protocol-lowercase",
            json!({"port": 80, "protocol": "tcp"}),
            ".protocol",
        ),
        with_port(
            "protocol-empty",
            json!({"port": 80, "protocol": ""}),
            ".protocol",
        ),
        with_port("port-name-uppercase", json!({"port": "HTTP"}), ".port"),
        with_port("port-name-16", json!({"port": "sixteen-chars-xy"}), ".port"),
        with_port("port-name-digits", json!({"port": "8080"}), ".port"),
        with_port("port-name-double-dash", json!({"port": "a--b"}), ".port"),
    ];
    out.push(Invalid {
        name: "policy-type-typo",
        field: "spec.policyTypes[0]".into(),
        v1_20: V120::Refuses,
        object: policy(
            NS,
            "policy-type-typo",
            json!({"podSelector": {"matchLabels": {"app": ISOLATED}}, "policyTypes": ["Ingres"],
                   "ingress": [{"from": everyone()}]}),
        ),
    });
    out.push(Invalid {
        name: "half-invalid",
        field: "spec.ingress[1].from[0].ipBlock.cidr".into(),
        v1_20: V120::Refuses,
        object: policy(
            NS,
            "half-invalid",
            json!({"podSelector": {"matchLabels": {"app": "half"}},
                   "ingress": [{"from": everyone()}, {"from": [cidr("10.244.0.0/40")]}]}),
        ),
    });
    out
}

/// The valid policies at the limits. What each allows, `evaluate` says; the tests also check a
/// few verdicts by hand so that the cluster cannot quietly stop testing anything.
pub fn valid_policies(other_ip: &str) -> Vec<Value> {
    let long_ns = long_namespace();
    // 10,000 ipBlocks: 8,999 single IPv4 addresses two apart (nothing merges), 1,000 IPv6
    // /128s, and the pod range minus the `other` pod.
    let mut blocks: Vec<Value> = (0..8_999u32)
        .map(|i| {
            let n = 2 * i;
            json!({"ipBlock": {"cidr": format!("172.16.{}.{}/32", n / 256, n % 256)}})
        })
        .collect();
    blocks.extend(
        (0..1_000u32).map(|i| json!({"ipBlock": {"cidr": format!("fd00:16::{:x}/128", 2 * i)}})),
    );
    blocks
        .push(json!({"ipBlock": {"cidr": "10.244.0.0/16", "except": [format!("{other_ip}/32")]}}));
    assert_eq!(blocks.len(), 10_000);

    let many_values = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    };
    let mut in_values = many_values("c", 10_000);
    in_values.push(CLIENT.into());
    let hundred_labels: serde_json::Map<String, Value> =
        (0..100).map(|i| (format!("l{i}"), json!("v"))).collect();
    let key = label_key_at_limit();
    let value = label_value_at_limit();
    let client_peer = json!({"podSelector": {"matchLabels": {"app": CLIENT}}});
    let duplicate_rule = json!({
        "from": [client_peer.clone(), client_peer.clone(), client_peer],
        "ports": [{"port": 80}, {"port": 80, "protocol": "TCP"}, {"port": 80}],
    });
    let duplicates = json!({
        "podSelector": {"matchLabels": {"app": "dup"}},
        "ingress": [duplicate_rule.clone(), duplicate_rule],
    });

    vec![
        policy(
            NS,
            "ipblocks-10k",
            json!({"podSelector": {"matchLabels": {"app": "blocks"}}, "ingress": [{"from": blocks}]}),
        ),
        policy(
            NS,
            "huge-selector",
            json!({
                "podSelector": {
                    "matchLabels": hundred_labels,
                    "matchExpressions": [
                        {"key": "app", "operator": "In", "values": many_values("s", 5_000).into_iter().chain(["selected".to_owned()]).collect::<Vec<_>>()},
                        {"key": key.clone(), "operator": "In", "values": [value.clone()]},
                    ],
                },
                "ingress": [{
                    "from": [{"podSelector": {"matchExpressions": [
                        {"key": "app", "operator": "In", "values": in_values},
                        {"key": "app", "operator": "NotIn", "values": many_values("n", 1_000)},
                        {"key": key.clone(), "operator": "DoesNotExist"},
                    ]}}],
                    "ports": [{"port": 80}],
                }],
            }),
        ),
        // The same rule twice, each peer three times, port 80 three times (two spellings).
        policy(NS, "duplicates", duplicates),
        // Odd named ports: one letter, and fifteen characters (the limit); `h` is UDP only.
        policy(
            NS,
            "named-ports",
            json!({
                "podSelector": {"matchLabels": {"app": "named"}},
                "ingress": [{"ports": [{"port": "h", "protocol": "UDP"}, {"port": "fifteen-chars-x"}]}],
            }),
        ),
        // Two policies named `allow`: here for `half`, and in the long namespace.
        policy(
            NS,
            "allow",
            json!({
                "podSelector": {"matchLabels": {"app": "half"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": CLIENT}}}], "ports": [{"port": 80}]}],
            }),
        ),
        policy(
            &long_ns,
            "allow",
            json!({"podSelector": {"matchLabels": {"tail": "b"}}}),
        ),
        // A 253-character policy name in a 63-character namespace, selecting by a label key and
        // value at their limits.
        policy(
            &long_ns,
            &long_policy_name(),
            json!({
                "podSelector": {"matchLabels": {key.clone(): value.clone()}},
                "ingress": [{
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}},
                              "podSelector": {"matchLabels": {"app": CLIENT}}}],
                    "ports": [{"port": 80}],
                }],
            }),
        ),
    ]
}

/// The pods, in plan order: (namespace, name, labels, named ports `name:port/PROTO`).
fn pods() -> Vec<(String, String, Value, Vec<&'static str>)> {
    let key = label_key_at_limit();
    let value = label_value_at_limit();
    let mut selected = serde_json::Map::new();
    for i in 0..100 {
        selected.insert(format!("l{i}"), json!("v"));
    }
    selected.insert("app".into(), json!("selected"));
    selected.insert(key.clone(), json!(value));
    let ns = |name: &str, labels: Value| (NS.to_owned(), name.to_owned(), labels, vec![]);
    vec![
        ns(CLIENT, json!({"app": CLIENT})),
        ns("other", json!({"app": "other"})),
        ns(ISOLATED, json!({"app": ISOLATED})),
        ns("half", json!({"app": "half"})),
        ns("blocks", json!({"app": "blocks"})),
        ns("selected", Value::Object(selected)),
        ns("dup", json!({"app": "dup"})),
        (
            NS.to_owned(),
            "named".to_owned(),
            json!({"app": "named"}),
            vec!["fifteen-chars-x:80/TCP", "h:81/UDP"],
        ),
        (
            long_namespace(),
            long_pod_name("a"),
            json!({key.clone(): value, "tail": "a"}),
            vec![],
        ),
        (
            long_namespace(),
            long_pod_name("b"),
            json!({"tail": "b"}),
            vec![],
        ),
    ]
}

/// The pod address of pod `i`, on node `i % 2` (`10.244.1.0/24` or `10.244.2.0/24`).
pub fn pod_ip(i: usize) -> String {
    format!("10.244.{}.{}", 1 + i % 2, 20 + i)
}

/// The whole cluster as a [`Case`] (namespaces, pods, every valid and invalid policy; no
/// probes), and the invalid policies with their expected errors.
pub fn case() -> (Case, Vec<Invalid>) {
    let pods = pods();
    let other = pods
        .iter()
        .position(|(ns, name, ..)| ns == NS && name == "other")
        .expect("other");
    let invalid = invalid_policies();
    let mut policies = valid_policies(&pod_ip(other));
    policies.extend(invalid.iter().map(|i| i.object.clone()));
    let case_pods: Vec<Value> = pods
        .iter()
        .enumerate()
        .map(|(i, (ns, name, labels, ports))| {
            let ports: Vec<Value> = ports
                .iter()
                .map(|spec| {
                    let (name, rest) = spec.split_once(':').expect("name:port/PROTO");
                    let (port, protocol) = rest.split_once('/').expect("port/PROTO");
                    json!({"name": name, "port": port.parse::<u16>().expect("port"), "protocol": protocol})
                })
                .collect();
            json!({"ns": ns, "name": name, "labels": labels, "ip": pod_ip(i),
                   "service_ip": format!("10.96.7.{}", 10 + i), "ports": ports})
        })
        .collect();
    let case = json!({
        "name": "hostile",
        "namespaces": {NS: {"team": "hostile"}, long_namespace(): {"team": "long"}},
        "pods": case_pods,
        "policies": policies,
        "probes": [],
    });
    (
        serde_json::from_value(case).expect("the hostile case is a Case"),
        invalid,
    )
}

/// Verdicts the hostile cluster must give, checked against `evaluate` by the core tests and
/// against real packets by the simulator: (from, to, protocol, port, allowed). `from` and `to`
/// are pods of [`NS`], or `long-a`/`long-b` for the two long-named pods.
pub const EXPECTED: &[(&str, &str, &str, u16, bool)] = &[
    // Every invalid policy selects `isolated`: fail closed, nothing gets in.
    (CLIENT, ISOLATED, "TCP", 80, false),
    (CLIENT, ISOLATED, "UDP", 80, false),
    ("other", ISOLATED, "TCP", 81, false),
    // `half`: the valid `allow` still lets the client in on TCP 80; the invalid policy's
    // allow-everyone rule is not half-installed.
    (CLIENT, "half", "TCP", 80, true),
    (CLIENT, "half", "TCP", 81, false),
    ("other", "half", "TCP", 80, false),
    // 10,000 ipBlocks: the pod range except `other`.
    (CLIENT, "blocks", "TCP", 80, true),
    (CLIENT, "blocks", "UDP", 81, true),
    ("other", "blocks", "TCP", 80, false),
    // The huge selector selects `selected` and lets the client in on TCP 80 only.
    (CLIENT, "selected", "TCP", 80, true),
    (CLIENT, "selected", "TCP", 81, false),
    ("other", "selected", "TCP", 80, false),
    // Duplicated rules and peers.
    (CLIENT, "dup", "TCP", 80, true),
    (CLIENT, "dup", "UDP", 80, false),
    ("other", "dup", "TCP", 80, false),
    // Named ports: TCP 80 by its 15-character name, UDP 81 by `h`, nothing else.
    ("other", "named", "TCP", 80, true),
    ("other", "named", "UDP", 81, true),
    ("other", "named", "TCP", 81, false),
    ("other", "named", "UDP", 80, false),
    // The long names: `long-a` takes the client on TCP 80; `long-b` takes nothing.
    (CLIENT, "long-a", "TCP", 80, true),
    ("other", "long-a", "TCP", 80, false),
    (CLIENT, "long-b", "TCP", 80, false),
    // The policyTypes typo isolates both directions: `isolated` cannot send either.
    (ISOLATED, CLIENT, "TCP", 80, false),
    // Pods no policy selects are untouched, even when the sender is isolated for ingress.
    ("long-b", "other", "UDP", 81, true),
    ("half", CLIENT, "TCP", 81, true),
];

/// `namespace/name` of a pod named in [`EXPECTED`].
pub fn key_of(short: &str) -> String {
    match short {
        "long-a" => format!("{}/{}", long_namespace(), long_pod_name("a")),
        "long-b" => format!("{}/{}", long_namespace(), long_pod_name("b")),
        pod => format!("{NS}/{pod}"),
    }
}

/// Namespace and pod names only a manifest can carry (the API server refuses them): `_`,
/// which chain names use as their separator (`a_b`/`c` and `a`/`b_c`), spaces, quotes, `;`
/// and newlines, which `nft -f` would read as syntax, non-ASCII and uppercase.
pub const ODD_NAMES: [(&str, &str); 6] = [
    ("a_b", "c"),
    ("a", "b_c"),
    ("x", "p; flush ruleset"),
    ("x", "q\"\n}\ntable ip evil {"),
    ("x", "P\u{f6}d"),
    ("x", "UPPER"),
];

/// A JSON `List` with one pod per [`ODD_NAMES`] entry on `node-1` (pod `i` at `10.0.0.<i+1>`,
/// label `i`) and one policy each (`<name> policy`, same odd namespace) isolating it for
/// ingress: the first lets `10.0.0.100` in, the others nobody.
pub fn odd_names_manifests() -> String {
    let mut items = Vec::new();
    for (i, (ns, name)) in ODD_NAMES.iter().enumerate() {
        items.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "labels": {"i": i.to_string()}},
            "spec": {"nodeName": "node-1", "containers": []},
            "status": {"podIP": format!("10.0.0.{}", i + 1)}}));
        let ingress = if i == 0 {
            json!([{"from": [{"ipBlock": {"cidr": "10.0.0.100/32"}}]}])
        } else {
            json!([])
        };
        items.push(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": ns, "name": format!("{name} policy")},
            "spec": {"podSelector": {"matchLabels": {"i": i.to_string()}}, "ingress": ingress}}),
        );
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}
