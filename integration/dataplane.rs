//! Root suite: the dataplane against the real kernel, inside network namespaces it creates.
//!
//! Proves the table is applied exactly (read back), updated incrementally without touching
//! unchanged chains (rule handles survive), repaired after someone else changes it, that a
//! rejected script leaves the previous table enforcing, and that no other table is touched;
//! and that what the agent asks the kernel over netlink (the ruleset generation, the rule
//! counters, the table's chains, sets and maps) agrees with what `nft` shows.
//! Run with `cargo test --test dataplane` as root; it fails loudly otherwise.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube_nftpol::compile::{self, Chain, Expr, Options, Rule, Ruleset};
use kube_nftpol::dataplane::conntrack;
use kube_nftpol::dataplane::kernel::{Kernel, RuleCounter};
use kube_nftpol::dataplane::nft::Nft;
use kube_nftpol::dataplane::objects::TableObjects;
use kube_nftpol::dataplane::readback::{self, Summary};
use kube_nftpol::dataplane::{Applied, Check, Dataplane};
use kube_nftpol::model::{ObjectKey, Pod, Snapshot};
use serde_json::json;

/// A scratch network namespace, deleted on drop (also when a test fails).
struct Netns(String);

impl Netns {
    fn new() -> Self {
        assert!(
            Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"0\n")),
            "*** the dataplane suite needs root (network namespaces, nftables): run it with sudo"
        );
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "knp-dp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "*** ip netns add {name} failed");
        Self(name)
    }

    fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .output()
            .expect("run nft");
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn nft_script(&self, script: &str) {
        let path = std::env::temp_dir().join(format!("{}.nft", self.0));
        std::fs::write(&path, script).unwrap();
        self.nft(&["-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(path);
    }

    fn summary(&self) -> Summary {
        readback::parse(&self.nft(&["-j", "list", "table", "inet", "kube-nftpol"]))
            .unwrap()
            .0
    }

    /// `chain -> [rule handle]` from `nft -a list table`.
    fn handles(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut out = std::collections::BTreeMap::new();
        let mut chain = String::new();
        for line in self
            .nft(&["-a", "list", "table", "inet", "kube-nftpol"])
            .lines()
        {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("chain ") {
                chain = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            } else if let Some((_, handle)) = line.rsplit_once("# handle ")
                && !line.starts_with("chain")
                && !chain.is_empty()
            {
                out.entry(chain.clone())
                    .or_insert_with(Vec::new)
                    .push(handle.to_owned());
            }
        }
        out
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Pod {
    Pod::running(
        ObjectKey::new(ns, name),
        [("app".to_string(), app.to_string())].into(),
        "n1",
        [ip.parse().unwrap()],
    )
}

fn policy(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap()
}

fn cluster() -> Snapshot {
    let mut s = Snapshot::new();
    s.upsert_pod(pod("web", "a", "a", "10.0.0.1"));
    s.upsert_pod(pod("web", "b", "b", "10.0.0.2"));
    s.upsert_pod(pod("api", "c", "c", "10.0.0.3"));
    s.upsert_network_policy(&policy("web", "from-b", json!({"podSelector": {"matchLabels": {"app": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}, {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}]}]})))
        .unwrap();
    s.upsert_network_policy(&policy(
        "api",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    ))
    .unwrap();
    s
}

fn ruleset(s: &Snapshot) -> Ruleset {
    compile::compile(s, "n1", &Options::default())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Tables that stand for kube-proxy's and a CNI's: the agent must never change them.
const FOREIGN_TABLES: &str = "
table ip kube-proxy-sim {
    chain prerouting { type nat hook prerouting priority dstnat; policy accept;
        ip daddr 10.96.0.10 tcp dport 80 dnat to 10.0.0.1:80
    }
}
table inet cni-filter {
    set allowed { type ipv4_addr; elements = { 10.0.0.1 } }
    chain forward { type filter hook forward priority filter; policy accept;
        ip saddr @allowed counter accept
    }
}
";

/// A table an older agent left: a set, a map, a chain with a rule's anonymous set, and the
/// base chain this agent keeps.
const STALE_TABLE: &str = "
table inet kube-nftpol {
    set stale { type ipv4_addr; elements = { 1.2.3.4 } }
    chain in_old_pod { ip saddr @stale accept; ip saddr { 5.6.7.8, 9.9.9.9 } accept; }
    map ingress4 { type ipv4_addr : verdict; elements = { 10.9.9.9 : goto in_old_pod }; }
    chain postrouting { type filter hook postrouting priority srcnat - 5; policy accept;
        ip daddr vmap @ingress4; }
}
";

fn foreign(ns: &Netns) -> (String, String) {
    (
        ns.nft(&["list", "table", "ip", "kube-proxy-sim"]),
        ns.nft(&["list", "table", "inet", "cni-filter"]),
    )
}

#[test]
fn the_first_apply_creates_the_table_and_it_reads_back_exactly() {
    let ns = Netns::new();
    runtime().block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&ns.0));
        let desired = ruleset(&cluster());
        assert_eq!(dp.apply(&desired).await.unwrap(), Applied::Full);
        assert_eq!(ns.summary(), Summary::of(&desired));
        assert_eq!(dp.apply(&desired).await.unwrap(), Applied::Unchanged);
    });
}

#[test]
fn changes_are_incremental_and_leave_other_chains_untouched() {
    let ns = Netns::new();
    runtime().block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&ns.0));
        let mut s = cluster();
        dp.apply(&ruleset(&s)).await.unwrap();
        let before = ns.handles();

        // A new peer pod: one set element, no chain touched.
        s.upsert_pod(pod("web", "b2", "b", "10.0.0.9"));
        let Applied::Incremental(touched) = dp.apply(&ruleset(&s)).await.unwrap() else { panic!("not incremental") };
        assert!(touched.chains.is_empty(), "{touched:?}");
        assert_eq!(ns.handles(), before, "no rule was replaced");
        assert_eq!(ns.summary(), Summary::of(&ruleset(&s)));

        // A changed policy: only the chain of the pod it selects is refilled.
        s.upsert_network_policy(&policy("web", "from-b", json!({"podSelector": {"matchLabels": {"app": "a"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": 8080}]}]})))
            .unwrap();
        let Applied::Incremental(touched) = dp.apply(&ruleset(&s)).await.unwrap() else { panic!("not incremental") };
        assert_eq!(touched.chains, ["in_web_a"]);
        let after = ns.handles();
        for (chain, handles) in &before {
            if chain != "in_web_a" {
                assert_eq!(after.get(chain), Some(handles), "chain {chain} was touched");
            }
        }
        assert_ne!(after.get("in_web_a"), before.get("in_web_a"));
        assert_eq!(ns.summary(), Summary::of(&ruleset(&s)));

        // A deleted policy: its pod's chain and sets go.
        s.remove_policy(&ObjectKey::new("web", "from-b"));
        assert!(matches!(dp.apply(&ruleset(&s)).await.unwrap(), Applied::Incremental(_)));
        let summary = ns.summary();
        assert!(!summary.chains.contains_key("in_web_a"));
        assert!(!summary.sets.keys().any(|n| n.contains("from-b")));
        assert_eq!(summary, Summary::of(&ruleset(&s)));
    });
}

fn cluster_policy(
    name: &str,
    spec: serde_json::Value,
) -> kube_nftpol::policy::cluster::api::ClusterNetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

/// The cluster with an Admin policy for namespace web (deny egress to 10.9.0.0/16, pass the
/// rest of web's egress to pods) and a Baseline one denying api's ingress from web.
fn tiered() -> Snapshot {
    let mut s = cluster();
    s.upsert_cluster_network_policy(&cluster_policy(
        "web-guard",
        json!({"tier": "Admin", "priority": 5,
        "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "web"}}},
        "egress": [{"name": "no-10-9", "action": "Deny", "to": [{"networks": ["10.9.0.0/16"]}]},
                   {"action": "Pass", "to": [{"namespaces": {}}]}]}),
    ))
    .unwrap();
    s.upsert_cluster_network_policy(&cluster_policy("api-baseline", json!({"tier": "Baseline", "priority": 50,
        "subject": {"namespaces": {}},
        "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "web"}}}]}]})))
        .unwrap();
    s
}

/// The tiers' chains, sets and dispatch entries change incrementally like the NetworkPolicies'
/// (a new peer pod is a set element; a changed ClusterNetworkPolicy refills only the tier chains
/// of the pods it applies to), and a tier chain someone edits is repaired.
#[test]
fn tier_chains_change_incrementally_and_are_repaired() {
    let ns = Netns::new();
    runtime().block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&ns.0));
        let mut s = tiered();
        assert_eq!(dp.apply(&ruleset(&s)).await.unwrap(), Applied::Full);
        assert_eq!(ns.summary(), Summary::of(&ruleset(&s)));
        let before = ns.handles();
        for chain in [
            "admin-eg_web_a",
            "admin-eg_web_b",
            "admin-deny-eg_web_a",
            "base-in_web_b",
        ] {
            assert!(
                before.contains_key(chain),
                "no {chain} in {:?}",
                before.keys()
            );
        }

        // A new pod in web: a peer set element, and its own tier chains and dispatch entries;
        // no existing chain touched.
        s.upsert_pod(pod("web", "d", "d", "10.0.0.4"));
        let Applied::Incremental(touched) = dp.apply(&ruleset(&s)).await.unwrap() else {
            panic!("not incremental")
        };
        assert!(
            touched.chains.iter().all(|c| c.ends_with("_web_d")),
            "{touched:?}"
        );
        let after = ns.handles();
        for (chain, handles) in &before {
            assert_eq!(after.get(chain), Some(handles), "chain {chain} was touched");
        }
        assert_eq!(ns.summary(), Summary::of(&ruleset(&s)));

        // The Admin policy changes: only web's Admin tier chains are refilled.
        s.upsert_cluster_network_policy(&cluster_policy(
            "web-guard",
            json!({"tier": "Admin", "priority": 5,
            "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "web"}}},
            "egress": [{"name": "no-10-9", "action": "Deny", "to": [{"networks": ["10.9.0.0/24"]}]},
                       {"action": "Pass", "to": [{"namespaces": {}}]}]}),
        ))
        .unwrap();
        let before = ns.handles();
        let Applied::Incremental(touched) = dp.apply(&ruleset(&s)).await.unwrap() else {
            panic!("not incremental")
        };
        assert!(
            touched.chains.is_empty(),
            "a network set changed, no chain: {touched:?}"
        );
        assert_eq!(ns.handles(), before);
        assert_eq!(ns.summary(), Summary::of(&ruleset(&s)));

        // Someone empties a tier chain and deletes a deny chain's drop: repaired.
        ns.nft(&["flush", "chain", "inet", "kube-nftpol", "admin-eg_web_a"]);
        assert_eq!(dp.check().await.unwrap(), Check::Repaired);
        assert_eq!(ns.summary(), Summary::of(&ruleset(&s)));
        ns.nft(&[
            "add",
            "rule",
            "inet",
            "kube-nftpol",
            "admin-deny-eg_web_a",
            "accept",
        ]);
        assert_eq!(dp.check().await.unwrap(), Check::Repaired);
        assert_eq!(dp.check().await.unwrap(), Check::Intact);

        // Both policies go: their chains and sets go, the NetworkPolicy chains stay.
        s.remove_cluster_policy("web-guard");
        s.remove_cluster_policy("api-baseline");
        let applied = dp.apply(&ruleset(&s)).await.unwrap();
        assert!(matches!(applied, Applied::Incremental(_)), "{applied:?}");
        let summary = ns.summary();
        assert!(
            !summary
                .chains
                .keys()
                .any(|c| c.starts_with("admin-") || c.starts_with("base-"))
        );
        assert!(!summary.sets.keys().any(|n| n.starts_with("cnp_")));
        assert!(summary.chains.contains_key("in_web_a"));
        assert_eq!(summary, Summary::of(&ruleset(&s)));
    });
}

#[test]
fn a_table_someone_else_changed_is_repaired() {
    let ns = Netns::new();
    runtime().block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&ns.0));
        let desired = ruleset(&cluster());
        dp.apply(&desired).await.unwrap();
        assert_eq!(dp.check().await.unwrap(), Check::Intact);
        let tamperings: [&[&str]; 5] = [
            &["flush", "table", "inet", "kube-nftpol"],
            &["delete", "table", "inet", "kube-nftpol"],
            &[
                "add",
                "rule",
                "inet",
                "kube-nftpol",
                "postrouting",
                "accept",
            ],
            &[
                "delete",
                "element",
                "inet",
                "kube-nftpol",
                "ingress4",
                "{ 10.0.0.3 }",
            ],
            &[
                "flush",
                "set",
                "inet",
                "kube-nftpol",
                "np_web_from-b_in0_pods4",
            ],
        ];
        for tampering in tamperings {
            ns.nft(tampering);
            assert_eq!(dp.check().await.unwrap(), Check::Repaired, "{tampering:?}");
            assert_eq!(ns.summary(), Summary::of(&desired), "after {tampering:?}");
            assert_eq!(dp.check().await.unwrap(), Check::Intact);
        }
    });
}

/// Someone turns the default deny of `in_web_a` into an accept (same comment, same number of
/// expressions, so only the fingerprint sees it), then an update touching other objects comes
/// before the next check: the update must not take the edit for its own. An update that reads
/// the whole table back repairs it at once; a small one reads only what it wrote, and the next
/// check repairs it.
#[test]
fn an_edit_made_before_an_incremental_update_is_repaired_not_absorbed() {
    let ns = Netns::new();
    runtime().block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&ns.0));
        let mut s = cluster();
        dp.apply(&ruleset(&s)).await.unwrap();
        let pristine = ns.nft(&["list", "chain", "inet", "kube-nftpol", "in_web_a"]);
        let listing = ns.nft(&["-a", "list", "chain", "inet", "kube-nftpol", "in_web_a"]);
        let (rule, handle) = listing
            .lines()
            .filter_map(|l| l.trim().rsplit_once(" # handle "))
            .find(|(rule, _)| rule.ends_with("drop") || rule.contains(" drop comment "))
            .expect("in_web_a ends in a drop");
        let flipped = rule.replace(" drop", " accept");
        ns.nft_script(&format!(
            "replace rule inet kube-nftpol in_web_a handle {handle} {flipped}\n"
        ));
        let tampered = ns.summary();
        assert_eq!(
            tampered,
            Summary::of(&ruleset(&s)),
            "the summary cannot see it"
        );

        s.upsert_pod(pod("web", "b2", "b", "10.0.0.9"));
        match dp.apply(&ruleset(&s)).await.unwrap() {
            Applied::Repaired => {}
            Applied::Incremental(_) => {
                assert_eq!(dp.check().await.unwrap(), Check::Repaired, "absorbed");
            }
            other => panic!("unexpected apply: {other:?}"),
        }
        assert_eq!(
            ns.nft(&["list", "chain", "inet", "kube-nftpol", "in_web_a"]),
            pristine
        );
        assert_eq!(dp.check().await.unwrap(), Check::Intact);
    });
}

#[test]
fn a_table_changed_after_incremental_applies_is_repaired() {
    // Incremental applies read back only the objects they wrote; the check still compares the
    // whole table, so an edit that keeps every rule's comment and expression count (a drop
    // turned into an accept) made after them is found and repaired.
    let ns = Netns::new();
    runtime().block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&ns.0));
        let mut s = cluster();
        dp.apply(&ruleset(&s)).await.unwrap();
        s.upsert_pod(pod("web", "b2", "b", "10.0.0.9"));
        s.upsert_pod(pod("api", "d", "d", "10.0.0.4"));
        let desired = ruleset(&s);
        assert!(matches!(
            dp.apply(&desired).await.unwrap(),
            Applied::Incremental(_)
        ));
        assert_eq!(ns.summary(), Summary::of(&desired));
        assert_eq!(
            dp.check().await.unwrap(),
            Check::Intact,
            "the kept fingerprint is exact"
        );

        let drop_rule = ns.handles()["in_api_d"].last().cloned().unwrap();
        ns.nft(&[
            "replace",
            "rule",
            "inet",
            "kube-nftpol",
            "in_api_d",
            "handle",
            &drop_rule,
            "counter",
            "accept",
            "comment",
            "\"default deny ingress api/d\"",
        ]);
        assert_eq!(
            ns.summary(),
            Summary::of(&desired),
            "the edit keeps the summary"
        );
        assert_eq!(dp.check().await.unwrap(), Check::Repaired);
        assert!(
            !ns.nft(&["list", "chain", "inet", "kube-nftpol", "in_api_d"])
                .contains("accept comment \"default deny")
        );
        assert_eq!(dp.check().await.unwrap(), Check::Intact);
    });
}

#[test]
fn a_stale_table_from_an_older_agent_is_replaced_exactly() {
    let ns = Netns::new();
    ns.nft_script(STALE_TABLE);
    runtime().block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&ns.0));
        let desired = ruleset(&cluster());
        assert_eq!(dp.apply(&desired).await.unwrap(), Applied::Full);
        assert_eq!(ns.summary(), Summary::of(&desired));
    });
}

#[test]
fn a_rejected_script_leaves_the_previous_table_enforcing() {
    let ns = Netns::new();
    runtime().block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&ns.0));
        let good = ruleset(&cluster());
        dp.apply(&good).await.unwrap();
        // A rule that refers to a set that does not exist: nft rejects the whole script.
        let mut bad = good.clone();
        bad.chains.push(Chain {
            name: "in_broken".into(),
            hook: None,
            rules: vec![Rule {
                exprs: vec![
                    Expr::AddressInSet(
                        compile::AddrField::Source,
                        compile::Family::V4,
                        "missing".into(),
                    ),
                    Expr::Accept,
                ],
                comment: None,
            }],
        });
        let error = dp.apply(&bad).await.expect_err("nft must reject it");
        let message = format!("{:#}", anyhow::Error::from(error));
        assert!(
            message.contains("missing") || message.contains("No such file"),
            "nft's stderr is carried: {message}"
        );
        assert_eq!(
            ns.summary(),
            Summary::of(&good),
            "the previous table still enforces"
        );
        // And the next good apply works.
        assert_eq!(dp.apply(&good).await.unwrap(), Applied::Full);
    });
}

#[test]
fn other_tables_are_never_touched() {
    let ns = Netns::new();
    ns.nft_script(FOREIGN_TABLES);
    let before = foreign(&ns);
    runtime().block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&ns.0));
        let mut s = cluster();
        dp.apply(&ruleset(&s)).await.unwrap();
        s.upsert_pod(pod("api", "d", "d", "10.0.0.4"));
        dp.apply(&ruleset(&s)).await.unwrap();
        ns.nft(&["flush", "table", "inet", "kube-nftpol"]);
        assert_eq!(dp.check().await.unwrap(), Check::Repaired);
        dp.replace(&ruleset(&s)).await.unwrap();
    });
    assert_eq!(foreign(&ns), before);
}

/// `kube-nftpol uninstall` removes the agent's table and nothing else, and is a no-op when run
/// again.
#[test]
fn uninstall_removes_the_agents_table_and_nothing_else() {
    let ns = Netns::new();
    ns.nft_script(FOREIGN_TABLES);
    let before = foreign(&ns);
    runtime().block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&ns.0));
        dp.apply(&ruleset(&cluster())).await.unwrap();
    });
    let uninstall = || {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                env!("CARGO_BIN_EXE_kube-nftpol"),
                "uninstall",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(uninstall().starts_with("removed table inet kube-nftpol"));
    let tables = ns.nft(&["list", "tables"]);
    assert!(!tables.contains("kube-nftpol"), "{tables}");
    assert_eq!(foreign(&ns), before);
    assert!(uninstall().starts_with("no table inet kube-nftpol on this node"));
}

/// A pod namespace behind a routed veth in `node`, kindnet style: the pod has `ip`/32 and a
/// default route via 10.0.0.254 on-link; the node has the gateway address on the veth and a
/// /32 route to the pod.
fn routed_pod(node: &Netns, veth: &str, ip: &str) -> Netns {
    let pod = Netns::new();
    let run = |args: &[&str]| {
        let ok = Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {args:?}");
    };
    run(&[
        "-n", &node.0, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.0,
    ]);
    run(&["-n", &node.0, "link", "set", veth, "up"]);
    run(&["-n", &node.0, "addr", "add", "10.0.0.254/32", "dev", veth]);
    run(&[
        "-n",
        &node.0,
        "route",
        "add",
        &format!("{ip}/32"),
        "dev",
        veth,
    ]);
    run(&["-n", &pod.0, "link", "set", "lo", "up"]);
    run(&["-n", &pod.0, "link", "set", "eth0", "up"]);
    run(&[
        "-n",
        &pod.0,
        "addr",
        "add",
        &format!("{ip}/32"),
        "dev",
        "eth0",
    ]);
    run(&["-n", &pod.0, "route", "add", "10.0.0.254", "dev", "eth0"]);
    run(&[
        "-n",
        &pod.0,
        "route",
        "add",
        "default",
        "via",
        "10.0.0.254",
        "dev",
        "eth0",
    ]);
    pod
}

/// Whether one ping from `pod` (from `source`) to the node's gateway address gets a reply.
fn ping(pod: &Netns, source: &str) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &pod.0,
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            source,
            "10.0.0.254",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_pod_sending_with_another_address_is_dropped_at_its_veth() {
    let node = Netns::new();
    let pod = routed_pod(&node, "vethspoof1", "10.0.0.1");
    // The pod also holds a second address it does not own in the cluster.
    let ok = Command::new("ip")
        .args(["-n", &pod.0, "addr", "add", "10.0.0.2/32", "dev", "eth0"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok);
    let mut s = Snapshot::new();
    s.upsert_pod(pod_on("web", "a", "10.0.0.1"));
    s.upsert_pod(pod_on("web", "b", "10.0.0.2"));
    let interfaces: kube_nftpol::model::PodInterfaces =
        [("10.0.0.1".parse().unwrap(), "vethspoof1".to_string())].into();
    let desired = compile::compile_with_interfaces(&s, "n1", &interfaces, &Options::default());
    runtime().block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&node.0));
        dp.apply(&desired).await.unwrap();
    });
    assert_eq!(node.summary(), Summary::of(&desired));
    assert!(ping(&pod, "10.0.0.1"), "its own address works");
    assert!(!ping(&pod, "10.0.0.2"), "another pod's address is dropped");
    let chain = node.nft(&["list", "chain", "inet", "kube-nftpol", "prerouting"]);
    assert!(
        chain.contains("counter packets 1 "),
        "the spoofed packet is counted:\n{chain}"
    );
    assert_counters_as_nft_lists_them(&node);
}

fn pod_on(ns: &str, name: &str, ip: &str) -> Pod {
    pod(ns, name, "x", ip)
}

/// A TCP server in `ns` on `addr:port` (a python3 socket loop, killed when the guard drops).
struct Server(std::process::Child);

impl Server {
    fn start(ns: &Netns, addr: &str, port: u16) -> Self {
        let code = "import socket, sys\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind((sys.argv[1], int(sys.argv[2])))\ns.listen(64)\nwhile True:\n    c, _ = s.accept()\n    c.close()\n";
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "python3",
                "-c",
                code,
                addr,
                &port.to_string(),
            ])
            .spawn()
            .expect("python3 server");
        // Owned by the guard from here on, so it is killed and reaped on every path.
        let server = Self(child);
        for _ in 0..50 {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.0, "ss", "-Hltn"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(&format!("{addr}:{port}")) {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("server {addr}:{port} did not start");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a TCP connection from `ns` to `addr:port` is accepted within a second.
fn connects(ns: &Netns, addr: &str, port: u16) -> bool {
    let code = "import socket, sys\ns = socket.socket(); s.settimeout(1)\ntry:\n    s.connect((sys.argv[1], int(sys.argv[2])))\nexcept OSError:\n    sys.exit(1)\n";
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "python3",
            "-c",
            code,
            addr,
            &port.to_string(),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn node_traffic_to_pods_is_allowed_pod_traffic_to_the_node_is_egress_and_a_pod_reaches_itself_through_its_service()
 {
    let node = Netns::new();
    let forwarding = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node.0,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(forwarding);
    let pod = routed_pod(&node, "vethplace1", "10.0.0.1");
    // kube-proxy's part: Service 10.96.0.1:80 -> 10.0.0.1:8080, masquerading hairpin traffic.
    node.nft_script(
        "table ip kube-proxy-sim {
            chain prerouting { type nat hook prerouting priority dstnat; policy accept;
                ip daddr 10.96.0.1 tcp dport 80 dnat to 10.0.0.1:8080; }
            chain postrouting { type nat hook postrouting priority srcnat; policy accept;
                ip saddr 10.0.0.1 ip daddr 10.0.0.1 masquerade; }
        }",
    );
    let _pod_server = Server::start(&pod, "10.0.0.1", 8080);
    let _node_server = Server::start(&node, "10.0.0.254", 10250);

    let mut s = Snapshot::new();
    s.upsert_pod(pod_on("web", "a", "10.0.0.1"));
    let deny_all = policy(
        "web",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    );
    // The agent's view of the node: the pod is paired with its veth, so the guards against a
    // reused address are live and must not get in the way of a correctly wired pod.
    let interfaces: kube_nftpol::model::PodInterfaces =
        [("10.0.0.1".parse().unwrap(), "vethplace1".to_string())].into();
    let apply = |s: &Snapshot| {
        runtime().block_on(async {
            let mut dp = Dataplane::new(Nft::in_netns(&node.0));
            let desired =
                compile::compile_with_interfaces(s, "n1", &interfaces, &Options::default());
            dp.apply(&desired).await.unwrap();
        })
    };

    apply(&s);
    assert!(
        connects(&pod, "10.0.0.254", 10250),
        "not isolated: the pod reaches its node"
    );
    assert!(
        connects(&pod, "10.96.0.1", 80),
        "not isolated: the pod reaches itself via its Service"
    );

    s.upsert_network_policy(&deny_all).unwrap();
    apply(&s);
    assert!(
        connects(&node, "10.0.0.1", 8080),
        "the node (kubelet probes) still reaches the pod"
    );
    assert!(
        !connects(&pod, "10.0.0.254", 10250),
        "pod to its own node is egress, and denied"
    );
    assert!(
        connects(&pod, "10.96.0.1", 80),
        "a pod reaching itself through its Service works"
    );
    assert!(
        !connects(&pod, "10.96.0.2", 80),
        "anything else leaving the pod is denied"
    );

    // Allow egress to the node's address by ipBlock: the input hook lets it through.
    s.upsert_network_policy(&policy(
        "web",
        "to-node",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.254/32"}}], "ports": [{"port": 10250}]}]}),
    ))
    .unwrap();
    apply(&s);
    assert!(
        connects(&pod, "10.0.0.254", 10250),
        "allowed by the ipBlock rule"
    );
    assert_eq!(
        rule_packets(&node, "pod address from another interface"),
        [0, 0],
        "a correctly paired pod never meets the source guards"
    );
    assert_eq!(
        rule_packets(&node, "pod address behind another interface"),
        [0],
        "nor its destination guard"
    );
    assert_counters_as_nft_lists_them(&node);
}

/// The packet counts of the rules with this comment (`nft list table`), in table order.
fn rule_packets(node: &Netns, comment: &str) -> Vec<u64> {
    counted(
        &node.nft(&["list", "table", "inet", "kube-nftpol"]),
        comment,
    )
}

/// The packets dropped by the destination guard of the addresses paired with `veth` (chain
/// `to_<veth>`).
fn guard_packets(node: &Netns, veth: &str) -> u64 {
    let chain = format!("to_{veth}");
    let listing = node.nft(&["list", "chain", "inet", "kube-nftpol", &chain]);
    match counted(&listing, "pod address behind another interface")[..] {
        [packets] => packets,
        _ => panic!("not one guard rule in {chain}:\n{listing}"),
    }
}

/// The packet counts of the rules with this comment in an `nft list` listing.
fn counted(listing: &str, comment: &str) -> Vec<u64> {
    listing
        .lines()
        .filter(|l| l.contains(&format!("comment \"{comment}\"")))
        .map(|l| {
            let count = l
                .split_once("counter packets ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no counter in {l}"));
            count.parse().unwrap()
        })
        .collect()
}

/// Turns on IPv4 forwarding in a node namespace.
fn forward(node: &Netns) {
    let forwarding = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node.0,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(forwarding);
}

/// A UDP socket on `addr:port` in `ns` that records the source of every datagram it gets and,
/// with `echo`, sends it back (a python3 loop, killed when the guard drops).
struct UdpServer(Option<std::process::Child>);

impl UdpServer {
    fn start(ns: &Netns, addr: &str, port: u16, echo: bool) -> Self {
        let code = "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind((sys.argv[1], int(sys.argv[2])))\nwhile True:\n    data, peer = s.recvfrom(2048)\n    print(peer[0], flush=True)\n    if sys.argv[3] == 'echo':\n        s.sendto(data, peer)\n";
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "python3",
                "-c",
                code,
                addr,
                &port.to_string(),
                if echo { "echo" } else { "sink" },
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 UDP server");
        let server = Self(Some(child));
        for _ in 0..50 {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.0, "ss", "-Hlun"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(&format!("{addr}:{port}")) {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("UDP server {addr}:{port} did not start");
    }

    /// Stops the server and returns the source address of each datagram it received.
    fn received(mut self) -> Vec<String> {
        // Datagrams in flight land before we stop listening.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut child = self.0.take().unwrap();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends three UDP datagrams from `from` (address, port) in `ns` to `to`; true when an
/// answer comes back within a second (false also when sending fails: a locally generated
/// packet that is dropped fails with EPERM).
fn udp_exchange(ns: &Netns, from: (&str, u16), to: (&str, u16)) -> bool {
    let code = "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind((sys.argv[1], int(sys.argv[2])))\ns.settimeout(1)\ntry:\n    for _ in range(3):\n        s.sendto(b'x', (sys.argv[3], int(sys.argv[4])))\n    s.recvfrom(2048)\nexcept OSError:\n    sys.exit(1)\n";
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "python3",
            "-c",
            code,
            from.0,
            &from.1.to_string(),
            to.0,
            &to.1.to_string(),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// Deletes a routed pod: its veth (and with it the node's route to the pod) first, so the
/// kernel's asynchronous namespace cleanup cannot leave it behind for a while, then the
/// namespace.
fn delete_routed_pod(node: &Netns, veth: &str, pod: Netns) {
    let ok = Command::new("ip")
        .args(["-n", &node.0, "link", "del", veth])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip link del {veth}");
    drop(pod);
}

/// Pod a (10.0.0.1, app=a) is deleted and the CNI gives its address to a new pod b behind
/// another veth before the agent has heard of b: the agent keeps the address paired with a's
/// veth (and a in its snapshot) until it learns who owns the address now. Meanwhile b must not
/// act as a: not send as 10.0.0.1 (peer allows a in), not receive what is sent to 10.0.0.1 (nor
/// what belongs to a's established connections). Once the agent pairs the address with b's
/// veth, b's traffic flows under b's own policy.
#[test]
fn a_reused_address_behind_a_new_veth_gets_nothing_until_it_is_paired() {
    const X: &str = "10.0.0.1";
    const PEER: &str = "10.0.0.2";
    const OPEN: &str = "10.0.0.3";
    let node = Netns::new();
    forward(&node);
    let a = routed_pod(&node, "vethreusea", X);
    let peer = routed_pod(&node, "vethreusep", PEER);
    let open = routed_pod(&node, "vethreuseo", OPEN);

    let mut s = Snapshot::new();
    s.upsert_pod(pod("web", "a", "a", X));
    s.upsert_pod(pod("web", "peer", "peer", PEER));
    s.upsert_pod(pod("web", "open", "open", OPEN));
    // peer only lets pods app=a in; open and a are not isolated.
    s.upsert_network_policy(&policy(
        "web",
        "peer-from-a",
        json!({"podSelector": {"matchLabels": {"app": "peer"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}]}),
    ))
    .unwrap();
    let interfaces = |x_veth: &str| -> kube_nftpol::model::PodInterfaces {
        [(X, x_veth), (PEER, "vethreusep"), (OPEN, "vethreuseo")]
            .into_iter()
            .map(|(ip, veth)| (ip.parse().unwrap(), veth.to_string()))
            .collect()
    };
    let mut dp = Dataplane::new(Nft::in_netns(&node.0));
    let rt = runtime();
    let mut apply = |s: &Snapshot, x_veth: &str| {
        let desired =
            compile::compile_with_interfaces(s, "n1", &interfaces(x_veth), &Options::default());
        rt.block_on(dp.apply(&desired)).unwrap();
        assert_eq!(node.summary(), Summary::of(&desired));
    };
    apply(&s, "vethreusea");

    // Correctly paired, everything works as policy says; and a has a live UDP flow with peer.
    let _peer_tcp = Server::start(&peer, PEER, 80);
    let _open_tcp = Server::start(&open, OPEN, 80);
    assert!(connects(&a, PEER, 80), "a reaches peer");
    assert!(connects(&a, OPEN, 80), "a reaches open");
    assert!(!connects(&open, PEER, 80), "peer lets only app=a in");
    {
        let _echo = UdpServer::start(&a, X, 5000, true);
        assert!(
            udp_exchange(&peer, (PEER, 6000), (X, 5000)),
            "peer and a talk over UDP (a conntrack entry now)"
        );
    }

    // a goes; b gets its address behind vethreuseb. The agent's input has not changed.
    delete_routed_pod(&node, "vethreusea", a);
    let b = routed_pod(&node, "vethreuseb", X);
    assert_eq!(
        rule_packets(&node, "pod address from another interface"),
        [0, 0]
    );
    assert_eq!(
        rule_packets(&node, "pod address behind another interface"),
        [0, 0, 0],
        "a's, peer's and open's guards"
    );

    // b cannot send as 10.0.0.1: the peers see nothing, whether peer's policy allows a in
    // or open allows everyone.
    let peer_sink = UdpServer::start(&peer, PEER, 7000, false);
    let open_sink = UdpServer::start(&open, OPEN, 7000, false);
    udp_exchange(&b, (X, 7001), (PEER, 7000));
    udp_exchange(&b, (X, 7001), (OPEN, 7000));
    assert_eq!(
        peer_sink.received(),
        Vec::<String>::new(),
        "peer sees nothing"
    );
    assert_eq!(
        open_sink.received(),
        Vec::<String>::new(),
        "open sees nothing"
    );
    assert!(!connects(&b, PEER, 80), "b does not get a's way in to peer");
    assert!(!connects(&b, OPEN, 80));
    let dropped_in = rule_packets(&node, "pod address from another interface");
    assert!(dropped_in[0] >= 6, "counted at prerouting: {dropped_in:?}");

    // Nothing sent to 10.0.0.1 reaches b: packets of a's established UDP flow, new packets,
    // and the node's own; each time the guard in postrouting is what drops them.
    let b_sink = UdpServer::start(&b, X, 5000, false);
    let senders: [(&str, &Netns, (&str, u16)); 3] = [
        ("a's established flow", &peer, (PEER, 6000)),
        ("a new flow", &open, (OPEN, 6001)),
        // The node's own socket gets EPERM on the first drop.
        ("from the node", &node, ("10.0.0.254", 6002)),
    ];
    for (what, ns, from) in senders {
        let before = guard_packets(&node, "vethreusea");
        assert!(!udp_exchange(ns, from, (X, 5000)), "{what}");
        let after = guard_packets(&node, "vethreusea");
        assert!(
            after > before,
            "{what}: dropped by the guard ({before} -> {after})"
        );
    }
    assert_eq!(b_sink.received(), Vec::<String>::new(), "b sees nothing");

    // The pods whose pairing is right never noticed.
    assert!(connects(&peer, OPEN, 80), "peer reaches open");
    assert!(connects(&node, PEER, 80), "the node reaches peer");

    // The agent learns that b owns the address and pairs it with b's veth.
    s.remove_pod(&ObjectKey::new("web", "a"));
    s.upsert_pod(pod("web", "b", "b", X));
    apply(&s, "vethreuseb");
    let _b_tcp = Server::start(&b, X, 80);
    let open_sink = UdpServer::start(&open, OPEN, 7000, false);
    assert!(connects(&b, OPEN, 80), "b reaches open");
    assert!(connects(&open, X, 80), "open reaches b");
    assert!(connects(&node, X, 80), "the node reaches b");
    udp_exchange(&b, (X, 7001), (OPEN, 7000));
    assert_eq!(
        open_sink.received(),
        [X; 3],
        "open gets b's datagrams, from 10.0.0.1"
    );
    assert!(
        !connects(&b, PEER, 80),
        "b is app=b: a's way in to peer is not b's"
    );
}

/// An IPv6 pod namespace behind a routed veth in `node`: the pod has `ip`/128 and a default
/// route via the node's `fd00::254` on the veth; the node has a /128 route to the pod. No
/// duplicate address detection, so addresses work at once.
fn routed_pod6(node: &Netns, veth: &str, ip: &str) -> Netns {
    let pod = Netns::new();
    let run = |args: &[&str]| {
        let ok = Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {args:?}");
    };
    for ns in [&node.0, &pod.0] {
        for conf in ["all", "default"] {
            let ok = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw"])
                .arg(format!("net.ipv6.conf.{conf}.accept_dad=0"))
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "accept_dad in {ns}");
        }
    }
    run(&[
        "-n", &node.0, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.0,
    ]);
    run(&["-n", &node.0, "link", "set", veth, "up"]);
    run(&[
        "-n",
        &node.0,
        "addr",
        "add",
        "fd00::254/128",
        "dev",
        veth,
        "nodad",
    ]);
    run(&[
        "-n",
        &node.0,
        "route",
        "add",
        &format!("{ip}/128"),
        "dev",
        veth,
    ]);
    run(&["-n", &pod.0, "link", "set", "lo", "up"]);
    run(&["-n", &pod.0, "link", "set", "eth0", "up"]);
    run(&[
        "-n",
        &pod.0,
        "addr",
        "add",
        &format!("{ip}/128"),
        "dev",
        "eth0",
        "nodad",
    ]);
    run(&["-n", &pod.0, "route", "add", "fd00::254", "dev", "eth0"]);
    run(&[
        "-n",
        &pod.0,
        "route",
        "add",
        "default",
        "via",
        "fd00::254",
        "dev",
        "eth0",
    ]);
    pod
}

/// Whether one ping from `from` (with source `source`) to `to` gets a reply.
fn ping6(from: &Netns, source: &str, to: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", &from.0, "ping", "-6", "-c", "1", "-W", "1", "-I", source, to,
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The IPv6 twin of the reused-address case, where neighbour discovery is part of it: a
/// correctly paired pod resolves and is resolved as before, a pod behind a veth the address
/// is not paired with gets nothing (not even its neighbour advertisements out), and once
/// paired it works.
#[test]
fn a_reused_ipv6_address_behind_a_new_veth_gets_nothing_until_it_is_paired() {
    const X: &str = "fd00::1";
    let node = Netns::new();
    let a = routed_pod6(&node, "vethsixa", X);
    let mut s = Snapshot::new();
    s.upsert_pod(pod("web", "a", "a", X));
    let mut dp = Dataplane::new(Nft::in_netns(&node.0));
    let rt = runtime();
    let mut apply = |s: &Snapshot, veth: &str| {
        let interfaces: kube_nftpol::model::PodInterfaces =
            [(X.parse().unwrap(), veth.to_string())].into();
        let desired = compile::compile_with_interfaces(s, "n1", &interfaces, &Options::default());
        rt.block_on(dp.apply(&desired)).unwrap();
    };
    apply(&s, "vethsixa");
    assert!(ping6(&a, X, "fd00::254"), "a reaches its node");
    assert!(ping6(&node, "fd00::254", X), "the node reaches a");
    assert_eq!(
        rule_packets(&node, "pod address from another interface"),
        [0, 0]
    );
    assert_eq!(guard_packets(&node, "vethsixa"), 0);

    delete_routed_pod(&node, "vethsixa", a);
    let b = routed_pod6(&node, "vethsixb", X);
    assert!(!ping6(&b, X, "fd00::254"), "b cannot send as fd00::1");
    assert!(
        !ping6(&node, "fd00::254", X),
        "nothing to fd00::1 reaches b"
    );
    assert!(rule_packets(&node, "pod address from another interface")[1] > 0);
    assert!(guard_packets(&node, "vethsixa") > 0);

    s.remove_pod(&ObjectKey::new("web", "a"));
    s.upsert_pod(pod("web", "b", "b", X));
    apply(&s, "vethsixb");
    // The node's neighbour entry for fd00::1 may have failed meanwhile; a new packet retries.
    let reachable = (0..3).any(|_| ping6(&node, "fd00::254", X));
    assert!(reachable, "the node reaches b once paired");
    assert!(ping6(&b, X, "fd00::254"), "b reaches its node once paired");
}

/// The rule counters the flow metrics read over netlink are those `nft -j list table` shows:
/// the same rules (chain, handle, comment) with the same packet counts, some of them non-zero.
fn assert_counters_as_nft_lists_them(node: &Netns) {
    let listing: serde_json::Value =
        serde_json::from_str(&node.nft(&["-j", "list", "table", "inet", "kube-nftpol"])).unwrap();
    let listed: Vec<RuleCounter> = listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| {
            let rule = item.get("rule")?;
            let packets = rule["expr"]
                .as_array()?
                .iter()
                .find_map(|e| e.get("counter")?.get("packets")?.as_u64())?;
            Some(RuleCounter {
                chain: rule["chain"].as_str()?.to_owned(),
                handle: rule["handle"].as_u64()?,
                comment: rule["comment"].as_str().unwrap_or_default().to_owned(),
                packets,
            })
        })
        .collect();
    let read = runtime()
        .block_on(Kernel::in_netns(&node.0).rule_counters())
        .unwrap();
    let chains: std::collections::BTreeSet<&str> =
        listed.iter().map(|r| r.chain.as_str()).collect();
    assert!(
        listed.len() >= 5 && chains.len() >= 2,
        "a table with counted rules in several chains: {listed:?}"
    );
    assert!(listed.iter().any(|r| r.packets > 0), "traffic was counted");
    assert_eq!(read, listed);
}

/// Every transaction moves the generation by exactly one, whoever commits it and whatever
/// table it changes; listings, counters and traffic never move it. That is what lets a check
/// skip the listing while the generation stays where the last verification left it.
#[test]
fn the_ruleset_generation_moves_once_per_commit_and_only_then() {
    let ns = Netns::new();
    runtime().block_on(async {
        let kernel = Kernel::in_netns(&ns.0);
        let mut dp = Dataplane::new(Nft::in_netns(&ns.0));
        let start = kernel.generation().await.unwrap();
        let mut s = cluster();
        assert_eq!(dp.apply(&ruleset(&s)).await.unwrap(), Applied::Full);
        assert_eq!(kernel.generation().await.unwrap(), start + 1, "one script");
        ns.nft(&["-j", "list", "ruleset"]);
        ns.nft(&["list", "table", "inet", "kube-nftpol"]);
        assert!(!kernel.rule_counters().await.unwrap().is_empty());
        assert_eq!(dp.check().await.unwrap(), Check::Intact);
        assert_eq!(kernel.generation().await.unwrap(), start + 1, "reads only");

        s.upsert_pod(pod("web", "b2", "b", "10.0.0.9"));
        assert!(matches!(
            dp.apply(&ruleset(&s)).await.unwrap(),
            Applied::Incremental(_)
        ));
        assert_eq!(kernel.generation().await.unwrap(), start + 2);

        // Another table's change moves it too; the check then reads ours and finds it intact.
        ns.nft(&["add", "table", "ip", "someone-else"]);
        assert_eq!(kernel.generation().await.unwrap(), start + 3);
        assert_eq!(dp.check().await.unwrap(), Check::Intact);
        assert_eq!(dp.check().await.unwrap(), Check::Intact);
        assert_eq!(kernel.generation().await.unwrap(), start + 3);

        // A table that does not exist has no counted rules; another namespace's generation
        // is its own.
        ns.nft(&["delete", "table", "inet", "kube-nftpol"]);
        assert_eq!(kernel.rule_counters().await.unwrap(), []);
        let other = Netns::new();
        let theirs = Kernel::in_netns(&other.0).generation().await.unwrap();
        other.nft(&["add", "table", "ip", "t"]);
        assert_eq!(
            Kernel::in_netns(&other.0).generation().await.unwrap(),
            theirs + 1
        );
        assert_eq!(kernel.generation().await.unwrap(), start + 4);
        assert_eq!(dp.check().await.unwrap(), Check::Repaired);
    });
}

/// The chains, sets and maps a full replace deletes come from netlink dumps: exactly the names
/// `nft` lists for the agent's table, maps told from sets, without the anonymous sets of rules
/// (`{ a, b }`), and nothing of another table, whether another name in the same family or the
/// same name in another family.
#[test]
fn the_tables_objects_over_netlink_are_those_nft_lists() {
    let ns = Netns::new();
    let kernel = Kernel::in_netns(&ns.0);
    let rt = runtime();
    assert_eq!(rt.block_on(kernel.table_objects()).unwrap(), None);
    ns.nft_script(FOREIGN_TABLES);
    ns.nft_script("table ip kube-nftpol { set other { type ipv4_addr; }; chain other { }; }");
    assert_eq!(rt.block_on(kernel.table_objects()).unwrap(), None);

    ns.nft_script(STALE_TABLE);
    let stale = rt.block_on(kernel.table_objects()).unwrap();
    assert_eq!(
        stale,
        Some(TableObjects {
            chains: ["in_old_pod", "postrouting"].map(String::from).into(),
            sets: ["stale"].map(String::from).into(),
            maps: ["ingress4"].map(String::from).into(),
        })
    );
    assert_eq!(stale, Some(TableObjects::from(&ns.summary())));

    rt.block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&ns.0));
        assert_eq!(dp.apply(&ruleset(&cluster())).await.unwrap(), Applied::Full);
    });
    let applied = rt.block_on(kernel.table_objects()).unwrap();
    assert_eq!(applied, Some(TableObjects::from(&ns.summary())));
    let applied = applied.unwrap();
    assert!(applied.maps.contains("egress4") && applied.sets.contains("pod_ifaces"));
    assert!(!applied.chains.contains("other") && !applied.sets.contains("allowed"));
}

/// Runs `job` on a thread inside `ns`: a netlink socket belongs to the namespace of the thread
/// that opens it.
fn inside<T: Send + 'static>(ns: &Netns, job: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.0);
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        job()
    })
    .join()
    .unwrap()
}

/// The node's entry for the UDP flow `from` -> `to`.
fn udp_entry(
    node: &Netns,
    from: &'static str,
    to: &'static str,
) -> Option<kube_nftpol::revoke::Connection> {
    let listing = inside(node, conntrack::list).unwrap();
    listing.connections.into_iter().find(|c| {
        c.protocol == kube_nftpol::model::Protocol::Udp
            && c.original.source.to_string() == from
            && c.original.destination.to_string() == to
    })
}

/// The node's connection tracking table read and changed over ctnetlink: a datagram routed
/// through the node is listed with both tuples, deleted by its original tuple, gone after;
/// deleting it again says so. The agent's table (its `ct state` rules) makes the namespace
/// track connections.
#[test]
fn conntrack_entries_of_the_node_are_listed_and_deleted_over_netlink() {
    let node = Netns::new();
    forward(&node);
    runtime().block_on(async {
        let mut dp = Dataplane::new(Nft::in_netns(&node.0));
        dp.apply(&ruleset(&Snapshot::new())).await.unwrap();
    });
    let a = routed_pod(&node, "vca", "10.0.0.1");
    let b = routed_pod(&node, "vcb", "10.0.0.2");
    // Nothing listens on b: the datagram still leaves an unreplied entry on the node.
    udp_exchange(&a, ("10.0.0.1", 5555), ("10.0.0.2", 5353));
    let entry = udp_entry(&node, "10.0.0.1:5555", "10.0.0.2:5353")
        .expect("the node tracks the datagram's flow");
    assert_eq!(entry.reply.source.to_string(), "10.0.0.2:5353");
    assert_eq!(entry.reply.destination.to_string(), "10.0.0.1:5555");
    assert_eq!(entry.zone, 0);
    assert!(inside(&node, move || conntrack::delete(&entry)).unwrap());
    assert_eq!(udp_entry(&node, "10.0.0.1:5555", "10.0.0.2:5353"), None);
    assert!(!inside(&node, move || conntrack::delete(&entry)).unwrap());
    delete_routed_pod(&node, "vca", a);
    delete_routed_pod(&node, "vcb", b);
}

/// The agent's revoked sets take elements with timeouts, which the table's read-back neither
/// compares nor fingerprints, and they can be taken out again.
#[test]
fn revoked_elements_are_added_with_timeouts_and_do_not_count_as_a_change() {
    let ns = Netns::new();
    runtime().block_on(async {
        let nft = Nft::in_netns(&ns.0);
        let mut dp = Dataplane::new(nft.clone());
        let desired = ruleset(&cluster());
        dp.apply(&desired).await.unwrap();
        let element = compile::SetElement::Connection(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            kube_nftpol::model::Protocol::Tcp,
            40000,
            80,
        );
        let set = compile::revoked_set_name(compile::Family::V4);
        let script = compile::render_text::add_elements_with_timeout(
            &set,
            compile::Family::V4,
            std::slice::from_ref(&element),
            300,
        );
        nft.apply(&script).await.unwrap();
        let listing = ns.nft(&["list", "set", "inet", "kube-nftpol", &set]);
        assert!(
            listing.contains("10.0.0.1 . 10.0.0.2 . tcp . 40000 . 80 timeout 5m"),
            "{listing}"
        );
        assert_eq!(ns.summary(), Summary::of(&desired));
        assert_eq!(dp.check().await.unwrap(), Check::Intact);
        let script = compile::render_text::delete_elements(&set, compile::Family::V4, &[element]);
        nft.apply(&script).await.unwrap();
        let listing = ns.nft(&["list", "set", "inet", "kube-nftpol", &set]);
        assert!(!listing.contains("10.0.0.1 . 10.0.0.2"), "{listing}");
    });
}
