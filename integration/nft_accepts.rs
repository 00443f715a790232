//! Root-only checks that the kernel's own tool accepts what the compiler emits: `nft --check`
//! on both renderings, text and JSON loaded side by side must list the same table, and every
//! chain, set and map of the [`Ruleset`] shows up once loaded.
//!
//! Each test works in its own network namespace (`knp-test-<pid>-<n>`, deleted on drop), so
//! nothing touches the host's ruleset and tests run in parallel. They need root, `ip` and `nft`;
//! without them they fail loudly instead of passing. `cargo test` skips this target
//! (`test = false` in Cargo.toml); run it with `cargo test --test nft_accepts`.
//!
//! Besides hand-built clusters, it compiles every case of the upstream e2e conformance data
//! (`../shared/conformance/upstream.json` next to the crate), and every state of the
//! ClusterNetworkPolicy conformance suite (`crates/test-support/data/cnp-conformance/`) with
//! the guardrails of `deploy/examples/guardrails/`.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::sync::OnceLock;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube_nftpol::compile::render_text;
use kube_nftpol::compile::{self, Options, Ruleset, TABLE_FAMILY, TABLE_NAME, render_json};
use kube_nftpol::dataplane::readback;
use kube_nftpol::model::{ContainerPort, Namespace, ObjectKey, Pod, PodPhase, Protocol, Snapshot};
use serde_json::{Value, json};

use kube_nftpol_test_support as support;
use kube_nftpol_test_support::cluster::labels;
use kube_nftpol_test_support::netns;
use netns::{Netns, stderr};
use support::conformance;

/// The node every local pod runs on.
const NODE: &str = "node-1";

// --- Network namespaces -------------------------------------------------------------------

/// Prefix of this suite's namespaces (`knp-test-<pid>-<n>`).
const NETNS_PREFIX: &str = "knp-test";

/// A fresh namespace of our own; fails the test loudly unless we are root with `ip` and `nft`.
fn fresh_netns() -> Netns {
    netns::require_root("nft_accepts", NETNS_PREFIX);
    Netns::new(NETNS_PREFIX)
}

/// Writes a rendering to a temporary file for `nft -f`.
fn script(content: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(content.as_bytes()).unwrap();
    file.flush().unwrap();
    file
}

fn path(file: &tempfile::NamedTempFile) -> &str {
    file.path().to_str().unwrap()
}

// --- Clusters -----------------------------------------------------------------------------

fn port(name: &str, number: u16, protocol: Protocol) -> ContainerPort {
    let name = (!name.is_empty()).then(|| name.to_owned());
    ContainerPort {
        name,
        port: number,
        protocol,
    }
}

fn pod(ns: &str, name: &str, node: &str, pod_labels: &[(&str, &str)], ips: &[&str]) -> Pod {
    Pod {
        key: ObjectKey::new(ns, name),
        labels: labels(pod_labels),
        node: Some(node.to_owned()),
        ips: ips.iter().map(|ip| ip.parse::<IpAddr>().unwrap()).collect(),
        phase: PodPhase::Active,
        host_network: false,
        terminating: false,
        ports: Vec::new(),
        owner: None,
    }
}

fn add_policy(snapshot: &mut Snapshot, policy: Value) {
    let policy: NetworkPolicy = serde_json::from_value(policy).unwrap();
    snapshot.upsert_network_policy(&policy).unwrap();
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    })
}

/// Every feature at once: two namespaces with labels, dual-stack and single-stack pods on this
/// node and another, named ports of every protocol, and policies using each kind of peer and
/// port, plus one invalid policy.
fn kitchen_sink() -> Snapshot {
    let mut s = Snapshot::new();
    s.upsert_namespace(Namespace::new(
        "shop",
        labels(&[("team", "shop"), ("env", "prod")]),
    ));
    s.upsert_namespace(Namespace::new("ops", labels(&[("team", "ops")])));
    s.upsert_namespace(Namespace::new("dev", labels(&[("env", "dev")])));

    let mut web = pod(
        "shop",
        "web-0",
        NODE,
        &[("app", "web")],
        &["10.244.1.10", "fd00:1::10"],
    );
    web.ports = vec![
        port("http", 8080, Protocol::Tcp),
        port("metrics", 9090, Protocol::Tcp),
        port("stream", 7000, Protocol::Sctp),
    ];
    let mut db = pod("shop", "db-0", NODE, &[("app", "db")], &["10.244.1.11"]);
    db.ports = vec![port("pg", 5432, Protocol::Tcp)];
    let mut dns = pod(
        "ops",
        "dns-7f9c",
        "node-2",
        &[("app", "dns")],
        &["10.244.2.53", "fd00:2::53"],
    );
    dns.ports = vec![
        port("dns", 53, Protocol::Udp),
        port("dns-tcp", 53, Protocol::Tcp),
    ];
    let mut mon = pod(
        "ops",
        "prometheus-0",
        NODE,
        &[("app", "prometheus")],
        &["fd00:1::20"],
    );
    mon.ports = vec![port("web", 9090, Protocol::Tcp)];
    let mut remote_web = pod(
        "shop",
        "web-1",
        "node-2",
        &[("app", "web")],
        &["10.244.2.10", "fd00:2::10"],
    );
    remote_web.ports = web.ports.clone();
    let mut finished = pod("shop", "job-x", NODE, &[("app", "web")], &["10.244.1.99"]);
    finished.phase = PodPhase::Finished;
    let mut host = pod(
        "ops",
        "node-exporter",
        NODE,
        &[("app", "exporter")],
        &["172.18.0.2"],
    );
    host.host_network = true;
    let debug = pod("dev", "debug", NODE, &[], &["10.244.1.30", "fd00:1::30"]);
    for p in [web, db, dns, mon, remote_web, finished, host, debug] {
        s.upsert_pod(p);
    }

    // Ingress from pods of the same namespace and from selected namespaces, numbered, ranged,
    // protocol-only and named ports, SCTP and UDP.
    add_policy(
        &mut s,
        policy(
            "shop",
            "web-ingress",
            json!({
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [
                    {
                        "from": [
                            {"podSelector": {"matchLabels": {"app": "db"}}},
                            {"namespaceSelector": {"matchLabels": {"team": "ops"}},
                             "podSelector": {"matchExpressions": [
                                 {"key": "app", "operator": "In", "values": ["prometheus"]}]}},
                        ],
                        "ports": [
                            {"port": "http"},
                            {"port": "metrics", "protocol": "TCP"},
                            {"port": 443},
                            {"port": 30000, "endPort": 30100, "protocol": "TCP"},
                            {"port": 30050, "endPort": 30200},
                            {"protocol": "UDP"},
                            {"port": "stream", "protocol": "SCTP"},
                            {"port": 9999, "protocol": "SCTP"},
                        ],
                    },
                    {
                        "from": [
                            {"ipBlock": {"cidr": "192.168.0.0/16",
                                         "except": ["192.168.1.0/24", "192.168.7.7/32"]}},
                            {"ipBlock": {"cidr": "fd00:abcd::/32",
                                         "except": ["fd00:abcd:1::/48"]}},
                            {"ipBlock": {"cidr": "203.0.113.7/32"}},
                        ],
                    },
                    {"from": [{"namespaceSelector": {}}], "ports": [{"port": "nope"}]},
                    {"ports": [{"port": 8443, "protocol": "TCP"}]},
                    // One protocol's ports: a range, and a port, compared before the peer.
                    {"from": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                     "ports": [{"port": 7000, "endPort": 7010, "protocol": "SCTP"}]},
                    {"from": [{"ipBlock": {"cidr": "fd00:abcd::/48"}}],
                     "ports": [{"port": 53, "protocol": "UDP"}]},
                ],
            }),
        ),
    );
    // Egress with named ports resolved per destination, ipBlocks with except in both
    // families, and everything-allowed.
    add_policy(
        &mut s,
        policy(
            "shop",
            "egress",
            json!({
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"namespaceSelector": {"matchLabels": {"team": "ops"}},
                                "podSelector": {"matchLabels": {"app": "dns"}}}],
                        "ports": [{"port": "dns", "protocol": "UDP"},
                                  {"port": "dns-tcp", "protocol": "TCP"},
                                  {"port": 5353, "protocol": "UDP"}],
                    },
                    {
                        "to": [{"ipBlock": {"cidr": "0.0.0.0/0",
                                            "except": ["10.0.0.0/8", "169.254.169.254/32"]}},
                               {"ipBlock": {"cidr": "::/0", "except": ["fd00::/8"]}}],
                        "ports": [{"port": 443}, {"port": 8000, "endPort": 8999}],
                    },
                    {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                     "ports": [{"port": "pg"}]},
                    {"ports": [{"port": "web", "protocol": "TCP"}]},
                ],
            }),
        ),
    );
    // Deny-all both ways in another namespace.
    add_policy(
        &mut s,
        policy(
            "dev",
            "deny-all",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ),
    );
    // Allow-all ingress (empty rule) next to the deny-all: additive.
    add_policy(
        &mut s,
        policy(
            "dev",
            "allow-all-in",
            json!({"podSelector": {}, "ingress": [{}]}),
        ),
    );
    // Invalid: a CIDR that does not parse and an except outside its block. Fails closed.
    add_policy(
        &mut s,
        policy(
            "ops",
            "broken",
            json!({
                "podSelector": {"matchLabels": {"app": "prometheus"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}},
                                      {"ipBlock": {"cidr": "10.1.0.0/16",
                                                   "except": ["10.2.0.0/24"]}}]}],
            }),
        ),
    );
    let broken = s.policy(&ObjectKey::new("ops", "broken")).unwrap();
    assert!(
        broken.is_invalid(),
        "the invalid policy must be rejected by validation"
    );
    s
}

/// No pods, no policies: only the base chains and empty maps.
fn empty() -> Snapshot {
    Snapshot::new()
}

/// IPv6-only pods under a default deny with one named-port egress exception.
fn ipv6_only() -> Snapshot {
    let mut s = Snapshot::new();
    let mut a = pod("v6", "a", NODE, &[("app", "a")], &["fd00:1::a"]);
    a.ports = vec![port("grpc", 50051, Protocol::Tcp)];
    let mut b = pod("v6", "b", "node-2", &[("app", "b")], &["fd00:2::b"]);
    b.ports = vec![
        port("grpc", 50051, Protocol::Tcp),
        port("sig", 3868, Protocol::Sctp),
    ];
    s.upsert_pod(a);
    s.upsert_pod(b);
    add_policy(
        &mut s,
        policy(
            "v6",
            "deny",
            json!({"podSelector": {}, "ingress": [], "egress": []}),
        ),
    );
    add_policy(
        &mut s,
        policy(
            "v6",
            "grpc",
            json!({
                "podSelector": {"matchLabels": {"app": "a"}},
                "egress": [{"to": [{"podSelector": {}}],
                            "ports": [{"port": "grpc"}, {"port": "sig", "protocol": "SCTP"}]}],
                "ingress": [{"from": [{"ipBlock": {"cidr": "fd00:2::/64",
                                                   "except": ["fd00:2::b/128"]}}]}],
            }),
        ),
    );
    s
}

/// Names at the API's length limits (63-byte namespace, 253-byte pod and policy names with
/// dots and leading digits): chain and set names get bounded, comments and log prefixes cut.
fn long_names() -> Snapshot {
    let ns = format!("0{}", "n".repeat(62));
    let pod_name = format!("9.{}.x", "p".repeat(249));
    let policy_name = format!("{}.policy", "q".repeat(246));
    assert_eq!(
        (ns.len(), pod_name.len(), policy_name.len()),
        (63, 253, 253)
    );
    let mut s = Snapshot::new();
    let mut target = pod(
        &ns,
        &pod_name,
        NODE,
        &[("app", "t")],
        &["10.244.1.50", "fd00:1::50"],
    );
    target.ports = vec![port("h", 80, Protocol::Tcp)];
    s.upsert_pod(target);
    add_policy(
        &mut s,
        policy(
            &ns,
            &policy_name,
            json!({
                "podSelector": {},
                "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": "h"}]}],
                "egress": [{"to": [{"podSelector": {}}], "ports": [{"port": "h"}]}],
            }),
        ),
    );
    s
}

/// The veths the agent would learn for the kitchen sink's local pods (the web pod only by its
/// IPv4 route, the debug pod behind two veths), plus a route to an address no pod has.
fn kitchen_sink_interfaces() -> kube_nftpol::model::PodInterfaces {
    [
        ("10.244.1.10", "veth1a2b3c4d"),
        ("10.244.1.11", "veth-db.0"),
        ("fd00:1::20", "vethmon@x"),
        ("10.244.1.30", "vethdebug"),
        ("fd00:1::30", "vethdebug6"),
        ("10.244.9.9", "vethnobody"),
    ]
    .into_iter()
    .map(|(ip, veth)| (ip.parse().unwrap(), veth.to_owned()))
    .collect()
}

fn clusters() -> Vec<(&'static str, Ruleset)> {
    let options = Options::default();
    let audited = Options {
        audit_all: true,
        ..Options::default()
    };
    let observed = Options {
        observe_all: true,
        ..Options::default()
    };
    vec![
        (
            "kitchen sink",
            compile::compile(&kitchen_sink(), NODE, &options),
        ),
        (
            "kitchen sink with veths",
            compile::compile_with_interfaces(
                &kitchen_sink(),
                NODE,
                &kitchen_sink_interfaces(),
                &options,
            ),
        ),
        ("empty", compile::compile(&empty(), NODE, &options)),
        ("ipv6 only", compile::compile(&ipv6_only(), NODE, &options)),
        (
            "long names",
            compile::compile(&long_names(), NODE, &options),
        ),
        // Audit mode: the audit log prefix (one byte longer) and the counted accept/return.
        (
            "kitchen sink audited",
            compile::compile(&kitchen_sink(), NODE, &audited),
        ),
        (
            "long names audited",
            compile::compile(&long_names(), NODE, &audited),
        ),
        // Observe mode: allowing rules `goto` the allow-log chains, unisolated directions
        // dispatch to the open-log chains.
        (
            "kitchen sink observed",
            compile::compile(&kitchen_sink(), NODE, &observed),
        ),
        (
            "long names observed",
            compile::compile(&long_names(), NODE, &observed),
        ),
        // The hostile cluster (tests/support/hostile.rs): 10,000 ipBlocks, selectors with
        // thousands of values, a 63-character namespace with 253-character pod and policy
        // names, invalid policies compiled fail-closed; on both nodes.
        (
            "hostile node-1",
            compile::compile(&hostile_snapshot(), "node-1", &options),
        ),
        (
            "hostile node-2",
            compile::compile(&hostile_snapshot(), "node-2", &options),
        ),
        // Names the API server refuses (`_`, `;`, quotes, newlines, non-ASCII): each pod its own
        // chain, every name a plain identifier.
        ("odd names", compile::compile(&odd_names(), NODE, &options)),
        // Both tiers: every ClusterNetworkPolicy of the conformance suite at once, the
        // guardrails, an invalid one; enforced, audited (the tiers' audit prefixes) and
        // observed (their Accepts through the allow-log chains); on both nodes.
        (
            "tiers node-1",
            compile::compile(&tiers(), "node-1", &options),
        ),
        (
            "tiers node-2",
            compile::compile(&tiers(), "node-2", &options),
        ),
        (
            "tiers audited",
            compile::compile(&tiers(), "node-1", &audited),
        ),
        (
            "tiers observed",
            compile::compile(&tiers(), "node-2", &observed),
        ),
    ]
}

/// The ClusterNetworkPolicy conformance cluster with every policy of every test (renamed
/// `<test>-<name>`, lowercase), the guardrail examples and one invalid policy.
fn tiers() -> Snapshot {
    let suite = support::cnp_conformance::Suite::load();
    let placement = support::cnp_conformance::Placement::simulated(&suite.base_pods());
    let mut objects = suite.base_objects(&placement);
    for test in &suite.tests {
        for manifest in &test.manifests {
            for mut object in suite.manifest(manifest) {
                if object["kind"] == "ClusterNetworkPolicy" {
                    let name = format!(
                        "{}-{}",
                        test.name,
                        object["metadata"]["name"].as_str().unwrap_or_default()
                    );
                    object["metadata"]["name"] = json!(name.to_lowercase());
                }
                objects.push(object);
            }
        }
    }
    objects.push(json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "named-ports"},
        "spec": {"tier": "Baseline", "priority": 3, "subject": {"namespaces": {}},
                 "egress": [{"action": "Accept", "to": [{"namespaces": {}}],
                             "protocols": [{"destinationNamedPort": "web"}, {"destinationNamedPort": "dns"}]}],
                 "ingress": [{"action": "Deny", "from": [{"pods": {"podSelector": {}}}],
                              "protocols": [{"destinationNamedPort": "dns"}]}]}}));
    objects.push(
        json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "invalid"},
        "spec": {"tier": "Admin", "priority": 0, "subject": {"namespaces": {}},
                 "egress": [{"action": "Pass", "to": [{"networks": ["10.0.0.0/33"]}]}]}}),
    );
    let mut loaded = support::cnp_conformance::load(&objects).unwrap_or_else(|e| panic!("{e}"));
    let guardrails =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/guardrails");
    let extra =
        kube_nftpol::source::manifests::load_dir(&guardrails).unwrap_or_else(|e| panic!("{e}"));
    for policy in extra.snapshot.cluster_policies() {
        loaded.snapshot.upsert_cluster_policy(policy.clone());
    }
    assert!(loaded.snapshot.cluster_policies().count() > 30);
    loaded.snapshot
}

/// The hostile cluster with pod `i` on node `i % 2`.
fn hostile_snapshot() -> Snapshot {
    let (case, _) = support::hostile::case();
    case.snapshot_with(|i| ["node-1", "node-2"][i % 2].to_owned())
}

/// The pods and policies of [`support::hostile::ODD_NAMES`], through the manifest source.
fn odd_names() -> Snapshot {
    let text = support::hostile::odd_names_manifests();
    kube_nftpol::source::manifests::load_str(&text, "odd-names.json")
        .expect("the odd names load")
        .snapshot
}

// --- Checks -------------------------------------------------------------------------------

/// `nft --check` (JSON with `-j`) accepts the rendering.
fn check(ns: &Netns, content: &str, json: bool, what: &str) {
    let file = script(content);
    let mut args = vec!["--check", "-f", path(&file)];
    if json {
        args.insert(0, "-j");
    }
    ns.nft_ok(&args, what);
}

/// Loads the text into one fresh namespace and the JSON into another and returns both listings,
/// made comparable (see [`json_keeps_set_comments`]).
fn load_both(ruleset: &Ruleset, what: &str) -> (String, String) {
    let text_ns = fresh_netns();
    let json_ns = fresh_netns();
    let text = script(&render_text::render(ruleset));
    let json = script(&render_json::render(ruleset));
    text_ns.nft_ok(&["-f", path(&text)], &format!("{what} (text)"));
    json_ns.nft_ok(&["-j", "-f", path(&json)], &format!("{what} (json)"));
    let (text, json) = (text_ns.list_table(), json_ns.list_table());
    if json_keeps_set_comments() {
        (text, json)
    } else {
        (without_set_comments(&text), without_set_comments(&json))
    }
}

/// Whether this `nft` keeps a set's `comment` when it reads JSON. nft 1.0.6 (Debian 12) drops
/// it silently while its text parser keeps it, so a table loaded from JSON lists its sets
/// without comments; everything else must still be identical. Probed once, in a namespace.
fn json_keeps_set_comments() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        let ns = fresh_netns();
        let doc = json!({"nftables": [
            {"table": {"family": TABLE_FAMILY, "name": TABLE_NAME}},
            {"set": {"family": TABLE_FAMILY, "table": TABLE_NAME, "name": "probe",
                     "type": "ipv4_addr", "comment": "probe comment"}},
        ]});
        let file = script(&doc.to_string());
        ns.nft_ok(&["-j", "-f", path(&file)], "the set comment probe");
        let keeps = ns.list_table().contains("comment \"probe comment\"");
        if !keeps {
            eprintln!(
                "note: this nft ignores set comments in JSON input; comparing listings \
                 without set comments"
            );
        }
        keeps
    })
}

/// A listing without the `comment "..."` lines of set and map declarations (rule comments
/// are on the rule's own line and stay).
fn without_set_comments(listing: &str) -> String {
    listing
        .lines()
        .filter(|l| !l.starts_with("\t\tcomment \""))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Names declared at the top level of a `nft list table` listing, by keyword.
fn listed_names(listing: &str, keyword: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter_map(|l| {
            l.strip_prefix('\t')?
                .strip_prefix(keyword)?
                .strip_prefix(' ')
        })
        .filter_map(|rest| rest.strip_suffix(" {"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn nft_check_accepts_the_text_rendering() {
    let ns = fresh_netns();
    for (what, ruleset) in clusters() {
        check(&ns, &render_text::render(&ruleset), false, what);
    }
}

#[test]
fn nft_check_accepts_the_json_rendering() {
    let ns = fresh_netns();
    for (what, ruleset) in clusters() {
        check(&ns, &render_json::render(&ruleset), true, what);
    }
}

#[test]
fn text_and_json_load_as_identical_tables() {
    for (what, ruleset) in clusters() {
        let (text, json) = load_both(&ruleset, what);
        assert_eq!(
            text, json,
            "{what}: text and JSON renderings load as different tables"
        );
    }
}

#[test]
fn the_kernel_lists_every_rule_with_the_expressions_the_ruleset_asked_for() {
    // The agent verifies an apply by comparing the JSON listing with the ruleset
    // (`readback::Summary`: each rule's comment and number of expressions). nft leaves out of
    // its listing a `meta nfproto` that a later match of the rule implies, so a rule written
    // that way would list one expression short and every apply would look tampered with.
    for (what, ruleset) in clusters() {
        for json in [false, true] {
            let ns = fresh_netns();
            let (content, flag) = if json {
                (render_json::render(&ruleset), vec!["-j"])
            } else {
                (render_text::render(&ruleset), vec![])
            };
            let file = script(&content);
            ns.nft_ok(&[flag.as_slice(), &["-f", path(&file)]].concat(), what);
            let listing = ns.nft_ok(&["-j", "list", "table", TABLE_FAMILY, TABLE_NAME], what);
            let (summary, _) = readback::parse(&listing).expect("the listing reads back");
            // The renderers drop quotes, backslashes and control characters from comments
            // (`render_text::sanitize`); `Summary::of` does not, which only the odd names
            // (refused by the API server) notice. Compare expressions, not that.
            let mut asked = ruleset.clone();
            for rule in asked.chains.iter_mut().flat_map(|c| c.rules.iter_mut()) {
                if let Some(comment) = &mut rule.comment {
                    comment.retain(|c| c != '"' && c != '\\' && !c.is_control());
                }
            }
            assert_eq!(
                summary,
                readback::Summary::of(&asked),
                "{what} (json {json}): the listing differs from the ruleset"
            );
        }
    }
}

#[test]
fn loaded_text_lists_every_chain_set_and_map_of_the_ruleset() {
    for (what, ruleset) in clusters() {
        let ns = fresh_netns();
        let file = script(&render_text::render(&ruleset));
        ns.nft_ok(&["-f", path(&file)], what);
        let listing = ns.list_table();
        let expected =
            |names: Vec<&String>| -> BTreeSet<String> { names.into_iter().cloned().collect() };
        assert_eq!(
            listed_names(&listing, "chain"),
            expected(ruleset.chains.iter().map(|c| &c.name).collect()),
            "{what}: chains"
        );
        assert_eq!(
            listed_names(&listing, "set"),
            expected(ruleset.sets.iter().map(|s| &s.name).collect()),
            "{what}: sets"
        );
        assert_eq!(
            listed_names(&listing, "map"),
            expected(ruleset.maps.iter().map(|m| &m.name).collect()),
            "{what}: maps"
        );
    }
}

#[test]
fn kitchen_sink_cluster_exercises_every_set_and_expression_kind() {
    // Guards the tests above against a cluster that silently stops covering something.
    let ruleset = compile::compile(&kitchen_sink(), NODE, &Options::default());
    let text = render_text::render(&ruleset);
    for needle in [
        "flags interval",
        "ipv4_addr . inet_proto . inet_service",
        "ipv6_addr . inet_proto . inet_service",
        "ip saddr @np_shop_web-ingress_in0_pods4",
        "ip6 saddr @np_shop_web-ingress_in1_cidr6",
        "ip daddr . meta l4proto . th dport @np_shop_egress_eg0_named4",
        "tcp dport 8443 counter accept",
        "tcp dport { 443, 8000-8999 } ip daddr @np_shop_egress_eg1_cidr4",
        "sctp dport 7000-7010 ip saddr @np_shop_web-ingress_in4_pods4",
        "udp dport 53 ip6 saddr @np_shop_web-ingress_in5_cidr6",
        "udp . 0-65535",
        "tcp . 30000-30200",
        "sctp . 7000",
        "sctp . 9999",
        "tcp . 8080",
        "0.0.0.0-9.255.255.255",
        "::-fcff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "fe00::/7",
        "fd00:abcd::/48",
        "192.168.0.0/24",
        "\t203.0.113.7\n",
        "goto in_shop_web-0",
        "jump eg_shop_web-0",
        "chain in_ops_prometheus-0",
        "chain eg_dev_debug",
        "10.244.2.53 . udp . 53",
        "fd00:2::53 . tcp . 53",
        "iifname . ip saddr @pod_iface_addrs4 accept",
        "iifname . ip6 saddr @pod_iface_addrs6 accept",
        "ip6 saddr :: accept",
        "ip6 saddr fe80::/10 accept",
        "meta nfproto ipv4 iifname @pod_ifaces counter drop",
        "meta nfproto ipv6 iifname @pod_ifaces counter drop",
        "ip saddr @pod_addrs4 counter drop",
        "ip6 saddr @pod_addrs6 counter drop",
        "ip daddr vmap @pod_dests4",
        "ip6 daddr vmap @pod_dests6",
    ] {
        assert!(
            text.contains(needle),
            "kitchen sink no longer renders {needle:?}:\n{text}"
        );
    }
    let with_veths = render_text::render(&compile::compile_with_interfaces(
        &kitchen_sink(),
        NODE,
        &kitchen_sink_interfaces(),
        &Options::default(),
    ));
    for needle in [
        "type ifname . ipv4_addr",
        "type ifname . ipv6_addr",
        "\"veth1a2b3c4d\" . 10.244.1.10",
        "\"veth1a2b3c4d\" . fd00:1::10",
        "\"veth-db.0\" . 10.244.1.11",
        "\"vethmon@x\" . fd00:1::20",
        "\t\t\tfd00:1::30\n",
        "\t\t\t10.244.1.30\n",
        "10.244.1.10 : jump to_veth1a2b3c4d",
        "fd00:1::10 : jump to_veth1a2b3c4d",
        "oifname != \"veth1a2b3c4d\" counter drop",
        "oifname != \"veth-db.0\" counter drop",
        "chain to_vethmon_x__",
        "10.244.1.30 : jump to_vethdebug_vethdebug6",
        "oifname != { \"vethdebug\", \"vethdebug6\" } counter drop",
    ] {
        assert!(
            with_veths.contains(needle),
            "kitchen sink with veths no longer renders {needle:?}:\n{with_veths}"
        );
    }
    assert!(
        !with_veths.contains("vethnobody"),
        "a route to no pod pairs nothing"
    );
    let observed = render_text::render(&compile::compile(
        &kitchen_sink(),
        NODE,
        &Options {
            observe_all: true,
            ..Options::default()
        },
    ));
    for needle in [
        "counter goto ai_shop_web-0",
        "counter goto ae_shop_web-0",
        "log prefix \"knp:allow:ingress:shop/web-0\"",
        "log prefix \"knp:open:",
        ": jump oe_",
        ": goto oi_",
    ] {
        assert!(
            observed.contains(needle),
            "kitchen sink observed no longer renders {needle:?}:\n{observed}"
        );
    }
}

// --- Upstream conformance data ------------------------------------------------------------

#[test]
fn nft_check_accepts_both_renderings_of_every_upstream_conformance_case() {
    let ns = fresh_netns();
    let file = conformance::load();
    assert_eq!(file.cases.len(), 58, "expected the 58 upstream cases");

    let mut failures = Vec::new();
    for case in &file.cases {
        let name = &case.name;
        let ruleset = compile::compile(&case.snapshot(), conformance::NODE, &Options::default());
        assert!(!ruleset.chains.is_empty(), "{name}: no chains");
        for (json, content) in [
            (false, render_text::render(&ruleset)),
            (true, render_json::render(&ruleset)),
        ] {
            let f = script(&content);
            let mut args = vec!["--check", "-f", path(&f)];
            if json {
                args.insert(0, "-j");
            }
            let out = ns.nft(&args);
            if !out.status.success() {
                let kind = if json { "json" } else { "text" };
                failures.push(format!("{name} ({kind}): {}", stderr(&out)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "nft rejected {} renderings:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_state_of_the_cluster_network_policy_suite_loads_identically_from_text_and_json() {
    let suite = support::cnp_conformance::Suite::load();
    let placement = support::cnp_conformance::Placement::simulated(&suite.base_pods());
    let ip_of = |pod: &str| placement.ip_of(pod);
    let base = suite.base_objects(&placement);
    let mut states = 0;
    for test in &suite.tests {
        for checkpoint in suite
            .checkpoints(test, &ip_of)
            .unwrap_or_else(|e| panic!("{e}"))
        {
            let objects: Vec<Value> = base.iter().chain(&checkpoint.policies).cloned().collect();
            let snapshot = support::cnp_conformance::load(&objects)
                .unwrap_or_else(|e| panic!("{e}"))
                .snapshot;
            for node in ["node-1", "node-2"] {
                let ruleset = compile::compile(&snapshot, node, &Options::default());
                let what = format!("{} / {} on {node}", test.name, checkpoint.subtest.name);
                let (text, json) = load_both(&ruleset, &what);
                assert_eq!(text, json, "{what}: text and JSON load as different tables");
                states += 1;
            }
        }
    }
    assert!(states >= 2 * 92, "{states} states");
}

#[test]
fn upstream_conformance_cases_load_identically_from_text_and_json() {
    for case in &conformance::load().cases {
        let name = &case.name;
        let ruleset = compile::compile(&case.snapshot(), conformance::NODE, &Options::default());
        let (text, json) = load_both(&ruleset, name);
        assert_eq!(
            text, json,
            "{name}: text and JSON renderings load as different tables"
        );
    }
}

#[test]
fn the_tiers_cluster_exercises_every_tier_chain_and_set_kind() {
    let ruleset = compile::compile(&tiers(), "node-1", &Options::default());
    let chains: Vec<&str> = ruleset.chains.iter().map(|c| c.name.as_str()).collect();
    for prefix in [
        "admin-in_",
        "admin-eg_",
        "base-in_",
        "base-eg_",
        "admin-deny-in_",
        "admin-deny-eg_",
        "base-deny-in_",
        "base-deny-eg_",
    ] {
        assert!(
            chains.iter().any(|c| c.starts_with(prefix)),
            "no {prefix} chain"
        );
    }
    let sets: Vec<&str> = ruleset.sets.iter().map(|s| s.name.as_str()).collect();
    for suffix in ["_addrs4", "_nets4", "_nets6", "_named4"] {
        assert!(
            sets.iter()
                .any(|s| s.starts_with("cnp_") && s.ends_with(suffix)),
            "no cnp_..{suffix} set"
        );
    }
}
