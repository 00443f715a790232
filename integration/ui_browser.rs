//! `kube-nftpol ui` in a real browser: Debian's headless Chromium, driven over the DevTools
//! protocol by `integration/ui/browser.mjs` (playwright-core, pinned in
//! `integration/ui/package.json`), against a cluster this test makes (manifests and flow lines
//! in a temporary directory).
//!
//! It proves: the graph draws every observed workload (idle ones too) inside its box; every
//! flow has a row; unticking a flow removes its rule from the YAML and the preview marks it
//! blocked, in the table and the graph; the downloaded YAML is the one shown, loads through
//! the manifest loader, passes a real API server's validation (`kubectl apply
//! --dry-run=server`), and applied to the cluster allows exactly the ticked flows (by
//! `evaluate`); bad input (a flow file that does not parse, no flows at all, a cluster without
//! pods, a server that went away) gives a message, never a blank page; nothing is fetched from
//! anywhere but the page's server. The screenshot goes to `<target>/ui-browser/ui.png`, its
//! path printed.
//!
//! Needs no root, but Chromium (`apt-get install chromium`), Node.js and the npm package
//! (`cd integration/ui && npm ci`), and kube-apiserver (`integration/apiserver/build.sh`):
//! `integration/test-all.sh` installs all of them. Run with `cargo test --test ui_browser`; it
//! fails loudly when something is missing.

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_nftpol::flow_line::FlowLine;
use kube_nftpol::hints::WorkloadFlow;
use kube_nftpol::manifest;
use kube_nftpol::model::Protocol;
use kube_nftpol::policy::{Endpoint, Flow, evaluate};
use kube_nftpol_test_support::apiserver::ApiServer;
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_kube-nftpol");
const SCRIPT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/integration/ui");
/// How long the browser script may take (it takes about 10 s).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// The cluster: `store` (observed) with web (two pods), api, cache and an idle worker;
/// `billing` (observed) with ledger, whose ingress a policy denies to all; kube-system's
/// coredns. Pods are Deployments' (owned by ReplicaSets).
fn manifests() -> String {
    let mut docs = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "store",
               "labels": {"kubernetes.io/metadata.name": "store"},
               "annotations": {"kube-nftpol.io/observe": "true"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "billing",
               "labels": {"kubernetes.io/metadata.name": "billing"},
               "annotations": {"kube-nftpol.io/observe": "true"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system",
               "labels": {"kubernetes.io/metadata.name": "kube-system"}}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "deny-ingress", "namespace": "billing"},
               "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
    ];
    for (namespace, app, pod, ip) in PODS {
        let labels = if *app == "coredns" {
            json!({"k8s-app": "kube-dns", "pod-template-hash": "6f6b7"})
        } else {
            json!({"app": app, "pod-template-hash": "5c8b6"})
        };
        let hash = labels["pod-template-hash"].as_str().unwrap_or_default();
        docs.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": namespace, "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": format!("{app}-{hash}"), "uid": "u", "controller": true}]},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}));
    }
    docs.iter()
        .map(|d| serde_json::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Namespace, app, pod and address of every pod.
const PODS: &[(&str, &str, &str, &str)] = &[
    ("store", "web", "web-5c8b6-a1", "10.244.1.10"),
    ("store", "web", "web-5c8b6-b2", "10.244.2.10"),
    ("store", "api", "api-5c8b6-c3", "10.244.1.11"),
    ("store", "cache", "cache-5c8b6-d4", "10.244.2.12"),
    ("store", "worker", "worker-5c8b6-e5", "10.244.1.13"),
    ("billing", "ledger", "ledger-5c8b6-f6", "10.244.1.20"),
    ("kube-system", "coredns", "coredns-6f6b7-g7", "10.244.1.3"),
];

const EXTERNAL: &str = "198.51.100.20";

/// A pod as a flow line names it, and its address; an address alone for anything else.
fn end(name: &str) -> (Value, &'static str) {
    match PODS.iter().find(|p| p.2 == name) {
        Some((namespace, app, pod, ip)) => {
            let hash = if *app == "coredns" { "6f6b7" } else { "5c8b6" };
            let labels = if *app == "coredns" {
                json!({"k8s-app": "kube-dns", "pod-template-hash": hash})
            } else {
                json!({"app": app, "pod-template-hash": hash})
            };
            let owner = json!({"kind": "ReplicaSet", "name": format!("{app}-{hash}")});
            (
                json!({"namespace": namespace, "name": pod, "labels": labels, "owner": owner}),
                ip,
            )
        }
        None => (json!({"ip": EXTERNAL}), EXTERNAL),
    }
}

/// One side's line of a connection from `source` to `destination`.
fn line(
    action: &str,
    direction: &str,
    source: &str,
    destination: &str,
    protocol: &str,
    port: u16,
) -> String {
    let (from, from_ip) = end(source);
    let (to, to_ip) = end(destination);
    let (pod, peer) = if direction == "egress" {
        (from, to)
    } else {
        (to, from)
    };
    let policies = if action == "deny" {
        json!(["billing/deny-ingress"])
    } else {
        json!([])
    };
    // As kubectl logs --prefix prints them.
    format!(
        "[pod/kube-nftpol-abcde/agent] {}",
        json!({"ts": "2026-12-06T23:03:43.585Z", "action": action, "direction": direction,
               "pod": pod, "peer": peer, "protocol": protocol, "port": port,
               "source": from_ip, "destination": to_ip, "policies": policies, "count": 1})
    )
}

/// What the agents of the cluster logged in observe mode: web -> api:8080 from both web pods
/// (both ends), api -> cache:6379 (both ends), api -> ledger:7000 (allowed at api, denied at
/// ledger), web -> coredns:53/udp (kube-system is not observed: one end), api -> an external
/// address on 443.
fn flow_lines() -> String {
    const API: &str = "api-5c8b6-c3";
    let mut sides = Vec::new();
    for web in ["web-5c8b6-a1", "web-5c8b6-b2"] {
        sides.push(("allow", "egress", web, API, "tcp", 8080));
        sides.push(("allow", "ingress", web, API, "tcp", 8080));
        sides.push(("allow", "egress", web, "coredns-6f6b7-g7", "udp", 53));
    }
    sides.extend([
        ("allow", "egress", API, "cache-5c8b6-d4", "tcp", 6379),
        ("allow", "ingress", API, "cache-5c8b6-d4", "tcp", 6379),
        ("allow", "egress", API, "ledger-5c8b6-f6", "tcp", 7000),
        ("deny", "ingress", API, "ledger-5c8b6-f6", "tcp", 7000),
        ("allow", "egress", API, "external", "tcp", 443),
    ]);
    let mut lines: Vec<String> = sides
        .into_iter()
        .map(|(action, direction, from, to, protocol, port)| {
            line(action, direction, from, to, protocol, port)
        })
        .collect();
    lines.push("a line of another container".to_owned());
    lines.join("\n") + "\n"
}

/// A running `kube-nftpol ui`, stopped on drop.
struct Ui {
    child: Child,
    url: String,
}

impl Ui {
    fn start(manifests: &Path, flows: &Path) -> Self {
        let mut child = Command::new(BINARY)
            .arg("ui")
            .arg("--manifests")
            .arg(manifests)
            .arg("--flows")
            .arg(flows)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kube-nftpol ui starts");
        let stdout = child.stdout.take().expect("its stdout");
        let mut url = String::new();
        BufReader::new(stdout)
            .read_line(&mut url)
            .expect("kube-nftpol ui prints its address");
        let url = url.trim().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "ui printed {url:?}");
        Ui { child, url }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tools the browser script needs, or a panic that says how to get them.
fn chromium() -> PathBuf {
    let chromium = std::env::var_os("KNP_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        chromium.is_file(),
        "\n\n*** {} is missing: this test drives Debian's Chromium (apt-get install chromium), \
         or set KNP_CHROMIUM\n",
        chromium.display()
    );
    assert!(
        Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "\n\n*** node is missing: apt-get install nodejs npm\n"
    );
    assert!(
        Path::new(SCRIPT_DIR)
            .join("node_modules/playwright-core")
            .is_dir(),
        "\n\n*** integration/ui/node_modules is missing: run `cd integration/ui && npm ci`\n"
    );
    chromium
}

/// `<target>/ui-browser`, from where cargo put the binary (`<target>/debug/kube-nftpol`).
fn out_dir() -> PathBuf {
    let target = Path::new(BINARY)
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in <target>/<profile>");
    let out = target.join("ui-browser");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    out
}

/// The flow id of the line `source -> destination` at `port`.
fn flow_id(lines: &str, port: u16) -> String {
    lines
        .lines()
        .filter_map(|l| FlowLine::parse(l).ok().flatten())
        .find(|l| l.port == Some(port))
        .map(|l| WorkloadFlow::of(&l).id())
        .expect("a line on that port")
}

#[test]
fn the_page_draws_the_flows_and_gives_the_policies_of_the_ticked_ones() {
    let chromium = chromium();
    let dir = tempfile::tempdir().unwrap();
    let out = out_dir();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, text).unwrap();
        path
    };
    let cluster = write("cluster/cluster.yaml", &manifests());
    let lines = flow_lines();
    let flows = write("flows.jsonl", &lines);
    // Bad input: lines that claim to be flow lines and are not; no lines at all; a cluster
    // without pods.
    let malformed = write(
        "malformed.jsonl",
        &lines
            .replace("\"egress\"", "\"sideways\"")
            .replace("\"ingress\"", "\"up\""),
    );
    let empty = write("empty.jsonl", "");
    let podless = write(
        "podless/ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: store}\n",
    );

    let main = Ui::start(&cluster, &flows);
    let bad = [
        (
            "malformed flow lines",
            Ui::start(&cluster, &malformed),
            vec!["malformed drop record", "no flow lines in"],
        ),
        (
            "no flows",
            Ui::start(&cluster, &empty),
            vec!["no flow lines in", "0 lines read"],
        ),
        (
            "a cluster without pods",
            Ui::start(&podless, &flows),
            vec!["has no pods"],
        ),
    ];
    let mut gone = Ui::start(&cluster, &flows);
    let untick = flow_id(&lines, 6379);
    let kept: Vec<String> = [8080, 7000, 53]
        .into_iter()
        .map(|port| flow_id(&lines, port))
        .collect();
    let config = json!({
        "chromium": chromium,
        "profile": dir.path().join("profile"),
        "out": out,
        "main": {
            "url": main.url,
            "workloads": ["web", "api", "cache", "worker", "ledger", "coredns", EXTERNAL],
            "flows": 5,
            "untick": {"flow": untick, "port": 6379},
            "kept": kept,
        },
        "bad": bad.iter().map(|(name, ui, expect)| json!({
            "name": name, "url": ui.url, "expect": expect,
        })).collect::<Vec<_>>(),
        "gone": {"url": gone.url},
    });
    let config_path = write("config.json", &config.to_string());

    let mut node = Command::new("node")
        .arg(Path::new(SCRIPT_DIR).join("browser.mjs"))
        .arg(&config_path)
        .current_dir(SCRIPT_DIR)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    // The script asks for the last server to go away by writing `stop`.
    let started = Instant::now();
    let status = loop {
        if out.join("stop").exists() {
            let _ = gone.child.kill();
        }
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < SCRIPT_TIMEOUT,
            "the browser script took more than {SCRIPT_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = node.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.success(),
        "the browser script failed:\n{stderr}\n{stdout}"
    );
    let result: Value = serde_json::from_str(stdout.trim()).expect("the script's result");
    for check in result["checks"].as_array().unwrap() {
        println!("ok: {}", check.as_str().unwrap());
    }
    println!("screenshot: {}", result["screenshot"].as_str().unwrap());

    // The download loads through the manifest loader: NetworkPolicies only, all valid.
    let download = result["download"].as_str().unwrap();
    let yaml = fs::read_to_string(download).unwrap();
    let policies = manifest::load_str(&yaml, download).expect("the YAML loads");
    assert!(policies.warnings.is_empty(), "{:?}", policies.warnings);
    assert!(policies.invalid_policies.is_empty());
    assert!(policies.snapshot.pods().next().is_none());
    let count = policies.snapshot.policies().count();
    assert!(count >= 4, "{count} policies:\n{yaml}");

    // Applied to the cluster, they allow every ticked flow and block the unticked one.
    let mut snapshot = manifest::load_str(&manifests(), "cluster.yaml")
        .unwrap()
        .snapshot;
    for policy in policies.snapshot.policies() {
        snapshot.upsert_policy(policy.clone());
    }
    let allowed = |from: &str, to: &str, protocol: Protocol, port: u16| {
        let ip = |name: &str| end(name).1.parse().unwrap();
        let flow = Flow {
            source: Endpoint::Ip(ip(from)),
            destination: Endpoint::Ip(ip(to)),
            protocol,
            port,
        };
        evaluate(&snapshot, &flow).unwrap().allowed
    };
    assert!(allowed("web-5c8b6-a1", "api-5c8b6-c3", Protocol::Tcp, 8080));
    assert!(allowed(
        "web-5c8b6-b2",
        "coredns-6f6b7-g7",
        Protocol::Udp,
        53
    ));
    assert!(allowed(
        "api-5c8b6-c3",
        "ledger-5c8b6-f6",
        Protocol::Tcp,
        7000
    ));
    assert!(!allowed(
        "api-5c8b6-c3",
        "cache-5c8b6-d4",
        Protocol::Tcp,
        6379
    ));
    assert!(!allowed("api-5c8b6-c3", "external", Protocol::Tcp, 443));
    assert!(!allowed(
        "web-5c8b6-a1",
        "cache-5c8b6-d4",
        Protocol::Tcp,
        6379
    ));

    // And a real API server accepts them.
    let server = ApiServer::start().unwrap_or_else(|e| panic!("{e}"));
    for namespace in ["store", "billing"] {
        server
            .kubectl(&["create", "namespace", namespace])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let applied = server
        .kubectl(&["apply", "--dry-run=server", "-f", download])
        .unwrap_or_else(|e| panic!("kubectl apply --dry-run=server -f {download}: {e}"));
    assert_eq!(
        applied.matches("created (server dry run)").count(),
        count,
        "{applied}"
    );
}
