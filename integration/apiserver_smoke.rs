//! Smoke tests of the real API server the Kubernetes suites use (integration/support/apiserver.rs):
//! it starts, stores Namespaces, Pods and NetworkPolicies, takes a Pod status as a kubelet
//! would set it, verifies TLS, and keeps its data when the API server alone restarts; and
//! `kube-nftpol explain --kubeconfig` and `kube-nftpol lint --kubeconfig` read the live cluster
//! from it (without the ClusterNetworkPolicy CRD, and with it as `deploy/crd/` ships it).
//!
//! Needs kube-apiserver and kubectl v1.20.2 from `sudo integration/apiserver/build.sh` (or
//! `$KNP_APISERVER_BIN`) and `etcd`, `openssl`, `curl`; without them it fails loudly. `cargo test`
//! skips this target (`test = false` in Cargo.toml); run it with
//! `cargo test --test apiserver_smoke`.

use apiserver::ApiServer;
use kube_nftpol_test_support::apiserver;

fn start() -> ApiServer {
    ApiServer::start().unwrap_or_else(|e| panic!("{e}"))
}

/// Runs kubectl, failing the test with its error (and the server's log) if it fails.
fn kubectl(server: &ApiServer, args: &[&str]) -> String {
    server
        .kubectl(args)
        .unwrap_or_else(|e| panic!("{e}\nkube-apiserver.log:\n{}", server.log_tail(20)))
}

/// `kubectl get` of one object (`pod/web`; `namespace` "" for cluster objects), formatted with
/// a JSONPath template.
fn get(server: &ApiServer, namespace: &str, object: &str, jsonpath: &str) -> String {
    let template = format!("jsonpath={jsonpath}");
    let mut args = vec!["get", object, "-o", &template];
    if !namespace.is_empty() {
        args.extend(["-n", namespace]);
    }
    kubectl(server, &args)
}

fn apply(server: &ApiServer, manifest: &str) {
    server
        .kubectl_stdin(&["apply", "-f", "-"], manifest)
        .unwrap_or_else(|e| panic!("{e}\nkube-apiserver.log:\n{}", server.log_tail(20)));
}

/// A namespace with the label a current server would add itself (1.20 does not).
fn namespace(server: &ApiServer, name: &str) {
    apply(
        server,
        &format!(
            r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}",
                "labels":{{"kubernetes.io/metadata.name":"{name}"}}}}}}"#
        ),
    );
}

const POD: &str = r#"{"apiVersion": "v1", "kind": "Pod",
  "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
  "spec": {"containers": [{"name": "web", "image": "x", "ports": [{"containerPort": 80}]}]}}"#;

const POLICY: &str = r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
  "metadata": {"name": "web-from-frontend", "namespace": "shop"},
  "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
                 "ports": [{"protocol": "TCP", "port": 80}]}]}}"#;

#[test]
fn pods_get_a_status_and_policies_are_stored() {
    let server = start();
    namespace(&server, "shop");
    apply(&server, POD);
    let phase = get(&server, "shop", "pod/web", "{.status.phase}");
    assert_eq!(phase, "Pending", "no kubelet: a new Pod stays Pending");

    // What a kubelet would report, through the status subresource.
    let patch = r#"{"status": {"phase": "Running", "hostIP": "172.18.0.2",
        "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}}"#;
    server.patch_pod_status("shop", "web", patch).unwrap();
    let status = get(
        &server,
        "shop",
        "pod/web",
        "{.status.phase} {.status.podIP} {.status.podIPs[0].ip}",
    );
    assert_eq!(status, "Running 10.244.1.5 10.244.1.5");
    // A status patch through the main resource is ignored, as on any server.
    let ignored = r#"{"status": {"podIP": "10.244.9.9"}}"#;
    let body = Some(("application/merge-patch+json", ignored));
    server
        .request("PATCH", "/api/v1/namespaces/shop/pods/web", body)
        .unwrap();
    let ip = get(&server, "shop", "pod/web", "{.status.podIP}");
    assert_eq!(ip, "10.244.1.5");

    apply(&server, POLICY);
    let policy = get(
        &server,
        "shop",
        "networkpolicy/web-from-frontend",
        "{.spec.ingress[0].ports[0].port}",
    );
    assert_eq!(policy, "80");
    let labels = get(&server, "", "namespace/shop", "{.metadata.labels}");
    assert!(
        labels.contains(r#""kubernetes.io/metadata.name":"shop""#),
        "{labels}"
    );
}

#[test]
fn it_is_v1_20_2_behind_verified_tls() {
    let server = start();
    let version = server.request("GET", "/version", None).unwrap();
    assert!(version.contains(r#""gitVersion": "v1.20.2""#), "{version}");
    let client = kubectl(&server, &["version", "--client", "--short"]);
    assert_eq!(client.trim(), "Client Version: v1.20.2");
    assert!(server.kubeconfig_path().is_file());
    assert!(server.url().starts_with("https://127.0.0.1:"));

    // The kubeconfig's CA is what makes TLS work: without it the handshake fails.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null"])
        .arg(format!("{}/version", server.url()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "TLS without the CA should fail");
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(server.ca_path())
        .arg(format!("{}/api/v1/namespaces", server.url()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "401",
        "no token, no access"
    );
    assert!(!server.token().is_empty());
}

#[test]
fn restarting_the_api_server_keeps_port_and_data() {
    let server = start();
    namespace(&server, "shop");
    apply(&server, POLICY);
    let url = server.url();

    server.stop_apiserver().unwrap();
    let err = server.kubectl(&["get", "namespaces"]).unwrap_err();
    assert!(
        err.contains("refused"),
        "the API server should be down: {err}"
    );

    server.start_apiserver().unwrap();
    assert_eq!(server.url(), url);
    let names = kubectl(
        &server,
        &["-n", "shop", "get", "networkpolicy", "-o", "name"],
    );
    assert_eq!(
        names.trim(),
        "networkpolicy.networking.k8s.io/web-from-frontend"
    );
}

/// `kube-nftpol explain --kubeconfig` reads the live cluster: pods with the IPs their status
/// reports, policies, and namespaces that 1.20 leaves without `kubernetes.io/metadata.name`
/// (the engine adds it, so a policy selecting that label matches). `kube-nftpol lint
/// --kubeconfig` judges the same cluster, its findings without file locations.
#[test]
fn explain_and_lint_read_the_live_cluster() {
    let server = start();
    kubectl(&server, &["create", "namespace", "shop"]);
    kubectl(&server, &["create", "namespace", "ops"]);
    apply(&server, POD);
    let prober = POD
        .replace(
            r#""name": "web", "namespace": "shop""#,
            r#""name": "prober", "namespace": "ops""#,
        )
        .replace(r#""app": "web""#, r#""app": "prober""#);
    apply(&server, &prober);
    for (namespace, pod, ip) in [("shop", "web", "10.0.0.5"), ("ops", "prober", "10.0.0.9")] {
        let status = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}]}}}}"#
        );
        server
            .patch_pod_status(namespace, pod, &status)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    apply(
        &server,
        r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
  "metadata": {"name": "web-from-ops", "namespace": "shop"},
  "spec": {"podSelector": {"matchLabels": {"app": "web"}},
    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}],
                 "ports": [{"protocol": "TCP", "port": 80}]}]}}"#,
    );
    let kubeconfig = server.kubeconfig_path();
    let explain = |from: &str, port: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kube-nftpol"))
            .args(["explain", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--from", from, "--to", "shop/web", "--port", port])
            .output()
            .unwrap_or_else(|e| panic!("running kube-nftpol explain: {e}"))
    };
    let allowed = explain("ops/prober", "80");
    let text = String::from_utf8_lossy(&allowed.stdout);
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(
        text.contains("allowed by shop/web-from-ops ingress[0]"),
        "{text}"
    );
    // The prober's IP stands for the prober; port 81 is not allowed.
    let denied = explain("10.0.0.9", "81");
    let text = String::from_utf8_lossy(&denied.stdout);
    assert_eq!(denied.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("DENIED 10.0.0.9 -> shop/web tcp/81\n  egress  ops/prober (10.0.0.9)"),
        "{text}"
    );
    let lint = std::process::Command::new(env!("CARGO_BIN_EXE_kube-nftpol"))
        .args(["lint", "--format", "json", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("running kube-nftpol lint: {e}"));
    let text = String::from_utf8_lossy(&lint.stdout);
    assert_eq!(
        lint.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&lint.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let findings: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert!(f.get("location").is_none(), "{f}");
            format!("{} {}", f["rule"], f["object"]["name"])
        })
        .collect();
    for expected in [
        "\"missing-default-deny-ingress\" \"ops\"",
        "\"unprotected-pod\" \"prober\"",
        "\"missing-default-deny-ingress\" \"shop\"",
    ] {
        assert!(
            findings.iter().any(|f| f == expected),
            "{expected} not in {findings:#?}"
        );
    }
}

/// The ClusterNetworkPolicy CRD of `deploy/crd/` on v1.20: it applies unchanged (the server
/// drops the CEL rules, `x-kubernetes-validations`, without an error, so an object that breaks
/// one is stored, and the agent's own validation must catch it); the agent's service account
/// may read ClusterNetworkPolicies and Nodes and nothing more of them; `explain --kubeconfig`
/// names the Admin rule that denies a flow.
#[test]
fn the_cluster_network_policy_crd_applies_as_shipped_and_the_agent_reads_it() {
    let server = start();
    let root = env!("CARGO_MANIFEST_DIR");
    kubectl(&server, &["create", "namespace", "shop"]);
    kubectl(&server, &["create", "namespace", "ops"]);
    for channel in ["standard", "experimental"] {
        let crd = format!("{root}/deploy/crd/clusternetworkpolicies.{channel}.yaml");
        kubectl(&server, &["apply", "-f", &crd]);
    }
    kubectl(
        &server,
        &[
            "wait",
            "--for=condition=established",
            "--timeout=30s",
            "crd/clusternetworkpolicies.policy.networking.k8s.io",
        ],
    );
    let schema = kubectl(
        &server,
        &[
            "get",
            "crd/clusternetworkpolicies.policy.networking.k8s.io",
            "-o",
            "jsonpath={.spec}",
        ],
    );
    assert!(
        schema.contains("\"nodes\""),
        "the experimental schema is served"
    );
    assert!(
        !schema.contains("x-kubernetes-validations"),
        "v1.20 drops the CEL rules"
    );
    // Breaks `self.start < self.end` (CEL): stored anyway.
    apply(
        &server,
        r#"{"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
  "metadata": {"name": "backwards-range"},
  "spec": {"tier": "Baseline", "priority": 5, "subject": {"namespaces": {}},
    "egress": [{"action": "Accept", "to": [{"namespaces": {}}],
                "protocols": [{"tcp": {"destinationPort": {"range": {"start": 90, "end": 80}}}}]}]}}"#,
    );
    // The schema still holds: an unknown tier is refused.
    let refused = server.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
  "metadata": {"name": "gold"}, "spec": {"tier": "Gold", "priority": 5, "subject": {"namespaces": {}}}}"#,
    );
    assert!(refused.is_err(), "{refused:?}");
    apply(
        &server,
        r#"{"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
  "metadata": {"name": "ops-apart"},
  "spec": {"tier": "Admin", "priority": 3, "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}},
    "ingress": [{"name": "from-ops", "action": "Deny",
                 "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}]}]}}"#,
    );
    for (namespace, pod, ip) in [("shop", "web", "10.0.0.5"), ("ops", "prober", "10.0.0.9")] {
        let manifest = POD
            .replace(
                r#""namespace": "shop""#,
                &format!(r#""namespace": "{namespace}""#),
            )
            .replace(r#""name": "web","#, &format!(r#""name": "{pod}","#));
        apply(&server, &manifest);
        let status = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}]}}}}"#
        );
        server
            .patch_pod_status(namespace, pod, &status)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // 1.20 does not label namespaces with their name; the agent adds the label the subject uses.
    let explain = std::process::Command::new(env!("CARGO_BIN_EXE_kube-nftpol"))
        .args(["explain", "--kubeconfig"])
        .arg(server.kubeconfig_path())
        .args(["--from", "ops/prober", "--to", "shop/web", "--port", "80"])
        .output()
        .unwrap_or_else(|e| panic!("running kube-nftpol explain: {e}"));
    let text = String::from_utf8_lossy(&explain.stdout);
    assert_eq!(
        explain.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&explain.stderr)
    );
    assert!(
        text.contains(
            "ingress shop/web: denied by ClusterNetworkPolicy ops-apart ingress[0] \"from-ops\" \
             (Admin tier, priority 3)"
        ),
        "{text}"
    );
    // The agent's service account, with deploy/rbac.yaml: reads them, and writes none.
    kubectl(
        &server,
        &["apply", "-f", &format!("{root}/deploy/rbac.yaml")],
    );
    let agent = "--as=system:serviceaccount:kube-system:kube-nftpol";
    let can = |verb: &str, resource: &str| {
        server
            .kubectl(&["auth", "can-i", verb, resource, agent])
            .is_ok_and(|answer| answer.trim() == "yes")
    };
    for resource in ["clusternetworkpolicies.policy.networking.k8s.io", "nodes"] {
        assert!(can("list", resource), "list {resource}");
        assert!(can("watch", resource), "watch {resource}");
        assert!(!can("create", resource), "create {resource}");
        assert!(!can("delete", resource), "delete {resource}");
    }
}
