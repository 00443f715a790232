//! Root suite: the dataplane against the real kernel, inside network namespaces it creates.
//!
//! Proves the table is applied exactly (read back), updated incrementally without touching
//! unchanged chains (rule handles survive), repaired after someone else changes it, that a
//! rejected script leaves the previous table enforcing, and that no other table is touched.
//! Run with `cargo test --test dataplane` as root; it fails loudly otherwise.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube_nftpol::compile::{self, Chain, Expr, Options, Rule, Ruleset};
use kube_nftpol::dataplane::nft::Nft;
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

#[test]
fn a_stale_table_from_an_older_agent_is_replaced_exactly() {
    let ns = Netns::new();
    ns.nft_script(
        "table inet kube-nftpol {
            set stale { type ipv4_addr; elements = { 1.2.3.4 } }
            chain in_old_pod { ip saddr @stale accept; }
            map ingress4 { type ipv4_addr : verdict; elements = { 10.9.9.9 : goto in_old_pod }; }
            chain postrouting { type filter hook postrouting priority srcnat - 5; policy accept;
                ip daddr vmap @ingress4; }
        }",
    );
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
    let interfaces: compile::PodInterfaces =
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
    let apply = |s: &Snapshot| {
        runtime().block_on(async {
            let mut dp = Dataplane::new(Nft::in_netns(&node.0));
            dp.apply(&ruleset(s)).await.unwrap();
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
}
