//! Golden tests of the compiler: small clusters and the exact `nft` script they compile to.
//!
//! The expected files live in tests/golden/. Each one is what `kube-nftpol compile --node NODE`
//! prints for the cluster built in the test; load one with `nft -f tests/golden/NAME.nft` (in a
//! scratch network namespace). To regenerate after an intended change, run
//! `UPDATE_GOLDEN=1 cargo test -p kube-nftpol-core --test golden` and review the diff.

use kube_nftpol_test_support as support;

use std::path::PathBuf;

use kube_nftpol_core::compile::{self, Options, render_text};

use kube_nftpol_core::model::{Enforcement, PodInterfaces, Snapshot};
use serde_json::json;
use support::cluster::{pod, snapshot, with_ports};

fn check(name: &str, snapshot: &Snapshot, node: &str) {
    check_with_interfaces(name, snapshot, node, &PodInterfaces::new());
}

/// As [`check`], with the pod veths the agent learned from the node's routes.
fn check_with_interfaces(name: &str, snapshot: &Snapshot, node: &str, interfaces: &PodInterfaces) {
    let ruleset = compile::compile_with_interfaces(snapshot, node, interfaces, &Options::default());
    let text = render_text::render(&ruleset);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.nft"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if text != expected {
        panic!(
            "compiled ruleset for {name} differs from {}\n--- expected\n{expected}\n--- got\n{text}",
            path.display()
        );
    }
}

#[test]
fn no_policies_gives_only_the_base_chains_and_empty_maps() {
    let s = snapshot(
        &[("web", &[])],
        vec![pod("web", "a", &[("app", "a")], "node-1", &["10.244.1.10"])],
        vec![],
    );
    check("empty", &s, "node-1");
}

#[test]
fn default_deny_ingress_isolates_only_this_nodes_pods() {
    let s = snapshot(
        &[("web", &[])],
        vec![
            pod("web", "a", &[("app", "a")], "node-1", &["10.244.1.10"]),
            pod("web", "b", &[("app", "b")], "node-2", &["10.244.2.10"]),
        ],
        vec![json!({
            "metadata": {"name": "default-deny", "namespace": "web"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        })],
    );
    check("default-deny", &s, "node-1");
}

#[test]
fn frontend_to_backend_with_ports_named_ports_and_dual_stack() {
    let s = snapshot(
        &[("shop", &[("team", "shop")]), ("kube-system", &[])],
        vec![
            with_ports(
                pod(
                    "shop",
                    "backend-0",
                    &[("app", "backend")],
                    "node-1",
                    &["10.244.1.20", "fd00:1::20"],
                ),
                &["http:8080/TCP", "metrics:9090/TCP"],
            ),
            pod(
                "shop",
                "frontend-0",
                &[("app", "frontend")],
                "node-1",
                &["10.244.1.21", "fd00:1::21"],
            ),
            pod(
                "shop",
                "frontend-1",
                &[("app", "frontend")],
                "node-2",
                &["10.244.2.21"],
            ),
            with_ports(
                pod(
                    "kube-system",
                    "coredns-0",
                    &[("k8s-app", "kube-dns")],
                    "node-2",
                    &["10.244.2.53"],
                ),
                &["dns:53/UDP", "dns-tcp:53/TCP"],
            ),
        ],
        vec![
            json!({
                "metadata": {"name": "backend", "namespace": "shop"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "backend"}},
                    "ingress": [
                        {"from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
                         "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]},
                        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                         "ports": [{"port": "metrics"}]}
                    ]
                }
            }),
            json!({
                "metadata": {"name": "frontend-egress", "namespace": "shop"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "frontend"}},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {"to": [{"podSelector": {"matchLabels": {"app": "backend"}}}], "ports": [{"port": "http"}]},
                        {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                         "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
                    ]
                }
            }),
        ],
    );
    check("frontend-backend", &s, "node-1");
}

#[test]
fn ipblocks_with_except_in_both_families() {
    let s = snapshot(
        &[("apps", &[])],
        vec![pod(
            "apps",
            "a",
            &[("app", "a")],
            "node-1",
            &["10.244.1.10", "fd00:1::10"],
        )],
        vec![json!({
            "metadata": {"name": "no-metadata", "namespace": "apps"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32", "10.0.0.0/8"]}},
                    {"ipBlock": {"cidr": "10.244.0.0/16"}},
                    {"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128"]}}
                ]}]
            }
        })],
    );
    check("ipblock-except", &s, "node-1");
}

#[test]
fn an_invalid_policy_isolates_and_allows_nothing() {
    let s = snapshot(
        &[("apps", &[])],
        vec![pod(
            "apps",
            "a",
            &[("app", "a")],
            "node-1",
            &["10.244.1.10"],
        )],
        vec![json!({
            "metadata": {"name": "typo", "namespace": "apps"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "a"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}, {"podSelector": {}}]}]
            }
        })],
    );
    check("invalid-policy", &s, "node-1");
}

#[test]
fn anti_spoofing_pairs_each_veth_with_its_pods_addresses() {
    // What the agent compiles on a routed node: pod a (dual stack, only its IPv4 route learned)
    // behind vetha, pod b behind vethb; pod c runs on another node, so nothing of it is paired.
    let s = snapshot(
        &[("web", &[])],
        vec![
            pod(
                "web",
                "a",
                &[("app", "a")],
                "node-1",
                &["10.244.1.10", "fd00:1::10"],
            ),
            pod("web", "b", &[("app", "b")], "node-1", &["10.244.1.11"]),
            pod("web", "c", &[("app", "c")], "node-2", &["10.244.2.10"]),
        ],
        vec![json!({
            "metadata": {"name": "default-deny", "namespace": "web"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
        })],
    );
    let interfaces: PodInterfaces = [
        ("10.244.1.10".parse().unwrap(), "vetha".to_owned()),
        ("10.244.1.11".parse().unwrap(), "vethb".to_owned()),
    ]
    .into();
    check_with_interfaces("anti-spoofing", &s, "node-1", &interfaces);
}

#[test]
fn an_audited_namespace_logs_and_accepts_what_its_policies_deny() {
    // Namespace `staging` carries `kube-nftpol.io/enforcement: audit`; `prod` enforces. Both
    // have the same policies: deny everything but ingress from app=web on TCP 8080.
    let policies = ["staging", "prod"].map(|ns| {
        json!({
            "metadata": {"name": "web-only", "namespace": ns},
            "spec": {
                "podSelector": {"matchLabels": {"app": "api"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                             "ports": [{"port": 8080}]}]
            }
        })
    });
    let mut s = snapshot(
        &[("staging", &[]), ("prod", &[])],
        vec![
            pod(
                "staging",
                "api-0",
                &[("app", "api")],
                "node-1",
                &["10.244.1.10"],
            ),
            pod(
                "staging",
                "web-0",
                &[("app", "web")],
                "node-1",
                &["10.244.1.11"],
            ),
            pod(
                "prod",
                "api-0",
                &[("app", "api")],
                "node-1",
                &["10.244.1.20"],
            ),
        ],
        policies.into(),
    );
    let mut staging = s.namespace("staging").cloned().expect("namespace");
    staging.enforcement = Enforcement::Audit;
    s.upsert_namespace(staging);
    check("audit", &s, "node-1");
}

#[test]
fn an_observed_namespace_logs_the_first_packet_of_every_connection_with_its_verdict() {
    // Namespace `shop` carries `kube-nftpol.io/observe: "true"`: api-0 is isolated for ingress
    // (from app=web on TCP 8080), web-0 is isolated by nothing. `other` is not observed.
    let policy = json!({
        "metadata": {"name": "web-to-api", "namespace": "shop"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "api"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                         "ports": [{"port": 8080}]}]
        }
    });
    let mut s = snapshot(
        &[("shop", &[]), ("other", &[])],
        vec![
            pod(
                "shop",
                "api-0",
                &[("app", "api")],
                "node-1",
                &["10.244.1.10"],
            ),
            pod(
                "shop",
                "web-0",
                &[("app", "web")],
                "node-1",
                &["10.244.1.11"],
            ),
            pod(
                "other",
                "db-0",
                &[("app", "db")],
                "node-1",
                &["10.244.1.20"],
            ),
        ],
        vec![policy],
    );
    let mut shop = s.namespace("shop").cloned().expect("namespace");
    shop.observe = true;
    s.upsert_namespace(shop);
    check("observe", &s, "node-1");
}
