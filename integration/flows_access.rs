//! Who may read the agent's flows, against a real kube-apiserver v1.20.2 with RBAC
//! (`crates/test-support`'s harness, with users of its static token file): the agent's
//! endpoints as `kube-nftpol agent` serves them (`http::router`, the agent's `State`, its
//! TokenReview and SubjectAccessReview client authenticated as its service account with
//! `deploy/rbac.yaml`'s permissions), and `kube-nftpol flows` reading them through the API
//! server's pod proxy with `deploy/flow-reader.yaml`'s.
//!
//! - `/flows` and `/hints`: no token 401, a token the server does not know 401, a user without
//!   the roles 403, a reader 200 (in `Authorization` or `X-Kube-Nftpol-Authorization`), a
//!   reader bound in one namespace 200 for that namespace only; `/metrics` and `/healthz` need
//!   nothing; reviews are cached; 503 while the agent may not create reviews.
//! - `kube-nftpol flows` through the pod proxy (the agent's pod is an API object whose status
//!   names an address of this host, which the API server dials as it would a node's): the
//!   `Authorization` header does not survive the proxy (kubernetes/kubernetes#38775) and ours
//!   does; agents that do not answer are named with why, and the exit status says so.
//!   `kube-nftpol suggest --cluster` suggests from the same windows, checked against the live
//!   cluster, and marks its output incomplete while agents do not answer; `kube-nftpol graph
//!   --cluster` draws them.
//!
//! Needs kube-apiserver and kubectl v1.20.2 (`sudo integration/apiserver/build.sh`, or
//! `$KNP_APISERVER_BIN`), `etcd`, `openssl`, `curl`; the pod proxy test needs root (`ip netns`,
//! a veth for an address the API server may proxy to). Without them it fails loudly. `cargo
//! test` skips this target (`test = false`); run it with `sudo cargo test --test
//! flows_access`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube_nftpol::access::{Access, Reviewer};
use kube_nftpol::agent::State;
use kube_nftpol::cli::flows::Report;
use kube_nftpol::flow_line::{Action, AllowedBy, FlowLine, Peer, PodInfo, rfc3339_millis};
use kube_nftpol::flows::{NodeFlows, WorkloadPeer};
use kube_nftpol::model::{Direction, IpProtocol, Owner};
use kube_nftpol_test_support::apiserver::ApiServer;
use kube_nftpol_test_support::cluster::labels;
use kube_nftpol_test_support::netns::{self, Netns};

/// Bound to `kube-nftpol-flow-reader`: the ClusterRole and, in kube-system, the Role.
const READER: &str = "reader";
/// Bound to nothing.
const STRANGER: &str = "stranger";
/// Bound to the ClusterRole in namespace `shop` only, and to the Role in kube-system.
const TENANT: &str = "tenant";

const NODE: &str = "node-1";

fn start() -> ApiServer {
    ApiServer::start_with_users(&[READER, STRANGER, TENANT]).unwrap_or_else(|e| panic!("{e}"))
}

fn kubectl(server: &ApiServer, args: &[&str]) -> String {
    server
        .kubectl(args)
        .unwrap_or_else(|e| panic!("{e}\nkube-apiserver.log:\n{}", server.log_tail(20)))
}

/// Applies the agent's and the readers' roles of `deploy/` and binds them: the reader
/// everywhere, the tenant in `shop`.
fn grant(server: &ApiServer) {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    for file in ["rbac.yaml", "flow-reader.yaml"] {
        let path = deploy.join(file);
        kubectl(server, &["apply", "-f", &path.display().to_string()]);
    }
    let role = "--clusterrole=kube-nftpol-flow-reader";
    kubectl(
        server,
        &[
            "create",
            "clusterrolebinding",
            "reader-flows",
            role,
            "--user",
            READER,
        ],
    );
    kubectl(
        server,
        &[
            "-n",
            "shop",
            "create",
            "rolebinding",
            "tenant-flows",
            role,
            "--user",
            TENANT,
        ],
    );
    for user in [READER, TENANT] {
        kubectl(
            server,
            &[
                "-n",
                "kube-system",
                "create",
                "rolebinding",
                &format!("{user}-agents"),
                "--role=kube-nftpol-flow-reader",
                "--user",
                user,
            ],
        );
    }
}

/// A kubeconfig of `server` that authenticates as the agent's service account.
fn agent_kubeconfig(server: &ApiServer) -> std::path::PathBuf {
    let admin = std::fs::read_to_string(server.kubeconfig_path()).unwrap();
    let agent = admin.replace(server.token(), &server.agent_token().unwrap());
    assert_ne!(
        admin, agent,
        "the kubeconfig holds no admin token to replace"
    );
    let path = server.dir().join("agent.kubeconfig");
    std::fs::write(&path, agent).unwrap();
    path
}

/// The endpoints of an agent of [`NODE`], on `bind`, in a runtime of their own (stopped on
/// drop), checking readers with `server` as the agent's service account.
struct Agent {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Agent {
    fn serve(server: &ApiServer, bind: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(State::new(NODE));
        for line in flows() {
            state.recent_flows().record(&line);
        }
        let kubeconfig = agent_kubeconfig(server);
        let addr = runtime.block_on(async {
            let client = kube_nftpol::agent::kube_client(Some(&kubeconfig))
                .await
                .unwrap();
            let metrics = state.access_metrics().clone();
            state.set_access(Access::kubernetes(
                Reviewer::new(client, NODE, metrics.clone()),
                metrics,
            ));
            let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let router = kube_nftpol::http::router(Arc::clone(&state));
            tokio::spawn(async move { axum::serve(listener, router).await });
            addr
        });
        Self {
            addr,
            _runtime: runtime,
        }
    }

    /// `GET path` with `headers`: status, then the `WWW-Authenticate` header, then the body.
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
        http("GET", self.addr, path, headers)
    }

    fn metrics(&self) -> String {
        self.get("/metrics", &[]).2
    }
}

/// One HTTP/1.1 request; status, `WWW-Authenticate` and body.
fn http(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let www = head
        .lines()
        .find_map(|l| l.strip_prefix("www-authenticate: "))
        .unwrap_or_default()
        .to_owned();
    (status, www, body.to_owned())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// What the agent saw: two replicas of shop's web Deployment reaching its api (allowed by a
/// rule), web reaching an address (denied), and a pod of `ops` denied.
fn flows() -> Vec<FlowLine> {
    let pod = |ns: &str, name: &str, app: &str| PodInfo {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        labels: labels(&[("app", app), ("pod-template-hash", "5c8b6")]),
        owner: Some(Owner {
            kind: "ReplicaSet".to_owned(),
            name: format!("{app}-5c8b6"),
        }),
        unknown: false,
    };
    let line = |pod: PodInfo, peer, port, action| FlowLine {
        policies: vec![format!("{}/default-deny", pod.namespace)],
        ts: rfc3339_millis(SystemTime::now()),
        action,
        direction: Direction::Egress,
        pod,
        peer,
        protocol: IpProtocol::Tcp,
        port: Some(port),
        source_port: Some(40000),
        source: None,
        destination: None,
        allowed_by: (action == Action::Allow).then(|| AllowedBy {
            policy: "shop/web-egress".to_owned(),
            rule: 0,
        }),
        tier: None,
        cluster_policy: None,
        count: 1,
        first_ts: None,
        last_ts: None,
    };
    let web = |name| pod("shop", name, "web");
    let api = |name| Peer::Pod(pod("shop", name, "api"));
    let ip = |ip: &str| Peer::External {
        ip: ip.parse().unwrap(),
    };
    vec![
        line(
            web("web-5c8b6-aaaaa"),
            api("api-5c8b6-xxxxx"),
            8080,
            Action::Allow,
        ),
        line(
            web("web-5c8b6-bbbbb"),
            api("api-5c8b6-yyyyy"),
            8080,
            Action::Allow,
        ),
        line(web("web-5c8b6-aaaaa"), ip("203.0.113.9"), 443, Action::Deny),
        line(
            pod("ops", "prober-5c8b6-zzzzz", "prober"),
            ip("203.0.113.10"),
            22,
            Action::Deny,
        ),
    ]
}

/// The value of the metric line starting with `series ` in `metrics`.
fn metric(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn flows_and_hints_answer_only_readers_the_cluster_allows() {
    let server = start();
    kubectl(&server, &["create", "namespace", "shop"]);
    let agent = Agent::serve(&server, "127.0.0.1:0".parse().unwrap());
    let reader = server.user_token(READER).unwrap();
    let stranger = server.user_token(STRANGER).unwrap();
    let tenant = server.user_token(TENANT).unwrap();

    // Without deploy/rbac.yaml the agent's service account may not ask: unavailable, and the
    // answer says why.
    let (status, _, body) = agent.get("/flows", &[("Authorization", &bearer(&reader))]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("tokenreviews"), "{body}");

    grant(&server);
    let (status, www, body) = agent.get("/flows", &[]);
    assert_eq!(status, 401, "{body}");
    assert_eq!(www, "Bearer realm=\"kube-nftpol\"");
    assert!(body.contains("X-Kube-Nftpol-Authorization"), "{body}");
    let (status, _, body) = agent.get("/flows", &[("Authorization", "Bearer made-up")]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("does not know the token"), "{body}");

    let (status, _, body) = agent.get("/flows", &[("Authorization", &bearer(&stranger))]);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("user \"stranger\" may not get flows.kube-nftpol.io (node node-1"),
        "{body}"
    );
    let (status, _, body) = agent.get("/hints", &[("Authorization", &bearer(&stranger))]);
    assert_eq!(status, 403, "{body}");

    for header in ["Authorization", "X-Kube-Nftpol-Authorization"] {
        let (status, _, body) = agent.get("/flows", &[(header, &bearer(&reader))]);
        assert_eq!(status, 200, "{header}: {body}");
        let flows: NodeFlows = serde_json::from_str(&body).unwrap();
        assert_eq!(flows.node, NODE);
        assert_eq!((flows.kept, flows.capacity, flows.evicted), (4, 4096, 0));
        assert_eq!(flows.flows.len(), 4);
    }
    let (status, _, body) = agent.get("/hints?format=yaml", &[("Authorization", &bearer(&reader))]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("kind: NetworkPolicy") || body.contains("kind: \"NetworkPolicy\""),
        "{body}"
    );

    // Bound in shop only: shop's flows, nothing else.
    let as_tenant = [("Authorization", bearer(&tenant))];
    let as_tenant: Vec<(&str, &str)> = as_tenant.iter().map(|(h, v)| (*h, v.as_str())).collect();
    let (status, _, body) = agent.get("/flows?namespace=shop", &as_tenant);
    assert_eq!(status, 200, "{body}");
    let flows: NodeFlows = serde_json::from_str(&body).unwrap();
    assert_eq!(flows.flows.len(), 3);
    assert!(flows.flows.iter().all(|f| f.pod.namespace == "shop"));
    for path in ["/flows", "/flows?namespace=ops", "/hints"] {
        let (status, _, body) = agent.get(path, &as_tenant);
        assert_eq!(status, 403, "{path}: {body}");
    }

    // Not checked: health, readiness (not ready here: no ruleset), metrics; writes are 405.
    assert_eq!(agent.get("/healthz", &[]).0, 200);
    assert_eq!(agent.get("/readyz", &[]).0, 503);
    assert_eq!(agent.get("/metrics", &[]).0, 200);
    assert_eq!(http("POST", agent.addr, "/flows", &[]).0, 405);

    // A reader polling costs the API server nothing more: answers come from the caches.
    let reviews = |metrics: &str| {
        (
            metric(
                metrics,
                "kube_nftpol_access_reviews_total{review=\"token_review\",result=\"answered\"}",
            ),
            metric(
                metrics,
                "kube_nftpol_access_reviews_total{review=\"subject_access_review\",result=\"answered\"}",
            ),
        )
    };
    let before = reviews(&agent.metrics());
    for _ in 0..20 {
        assert_eq!(
            agent
                .get("/flows", &[("Authorization", &bearer(&reader))])
                .0,
            200
        );
    }
    let metrics = agent.metrics();
    assert_eq!(reviews(&metrics), before, "{metrics}");
    // One TokenReview per token (reader, made-up, stranger, tenant); one SubjectAccessReview per
    // user and namespace asked (reader; stranger; tenant in shop, everywhere, in ops).
    assert_eq!(before, (4, 5), "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "kube_nftpol_access_reviews_total{review=\"token_review\",result=\"failed\"}"
        ),
        1,
        "{metrics}"
    );
    for (decision, n) in [
        ("allowed", 24),
        ("unauthenticated", 2),
        ("forbidden", 5),
        ("unavailable", 1),
    ] {
        let series = format!("kube_nftpol_access_requests_total{{decision=\"{decision}\"}}");
        assert_eq!(metric(&metrics, &series), n, "{series}\n{metrics}");
    }
}

/// `kube-nftpol flows ARGS` with the kubeconfig of `user`, outside any test environment.
fn flows_cli(server: &ApiServer, user: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kube-nftpol"))
        .arg("flows")
        .arg("--kubeconfig")
        .arg(server.user_kubeconfig_path(user))
        .args(args)
        .env_remove("KUBE_NFTPOL_TOKEN")
        .output()
        .unwrap()
}

/// `kube-nftpol flows ARGS --format json`, which must exit with `status`: its report.
fn flows_json(server: &ApiServer, user: &str, args: &[&str], status: i32) -> Report {
    let args: Vec<&str> = args.iter().copied().chain(["--format", "json"]).collect();
    let out = flows_cli(server, user, &args);
    assert_eq!(out.status.code(), Some(status), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `kube-nftpol suggest --cluster --observed -n shop ARGS` with the kubeconfig of `user`.
fn suggest_cli(server: &ApiServer, user: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kube-nftpol"))
        .args([
            "suggest",
            "--cluster",
            "--observed",
            "-n",
            "shop",
            "--kubeconfig",
        ])
        .arg(server.user_kubeconfig_path(user))
        .args(args)
        .env_remove("KUBE_NFTPOL_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// `kube-nftpol graph --cluster --format mermaid` as the reader, agents on `port`.
fn graph_cli(server: &ApiServer, port: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kube-nftpol"))
        .args(["graph", "--cluster", "--format", "mermaid", "--kubeconfig"])
        .arg(server.user_kubeconfig_path(READER))
        .args(["--agent-port", port])
        .env_remove("KUBE_NFTPOL_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// [`suggest_cli`] with `--format json`, which must exit with `status`: its report.
fn suggest_json(server: &ApiServer, user: &str, args: &[&str], status: i32) -> serde_json::Value {
    let args: Vec<&str> = args.iter().copied().chain(["--format", "json"]).collect();
    let out = suggest_cli(server, user, &args);
    assert_eq!(out.status.code(), Some(status), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// shop's web and api Deployments as the API server holds them: two pods each, owned by their
/// ReplicaSets (no controller runs here: nothing deletes or replaces them), running.
fn shop_workloads(server: &ApiServer) {
    let mut address = 10;
    for (app, names) in [("web", ["aaaaa", "bbbbb"]), ("api", ["xxxxx", "yyyyy"])] {
        for name in names {
            let pod = format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{app}-5c8b6-{name}","namespace":"shop",
                    "labels":{{"app":"{app}","pod-template-hash":"5c8b6"}},
                    "ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"{app}-5c8b6",
                        "uid":"00000000-0000-0000-0000-00000000000{}","controller":true}}]}},
                   "spec":{{"containers":[{{"name":"{app}","image":"{app}"}}]}}}}"#,
                if app == "web" { 1 } else { 2 }
            );
            server
                .kubectl_stdin(&["apply", "-f", "-"], &pod)
                .unwrap_or_else(|e| panic!("{e}"));
            address += 1;
            let status = format!(
                r#"{{"status":{{"phase":"Running","podIP":"10.244.0.{address}","podIPs":[{{"ip":"10.244.0.{address}"}}]}}}}"#
            );
            server
                .patch_pod_status("shop", &format!("{app}-5c8b6-{name}"), &status)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// The suggestions from the agent's flows: web may reach api on 8080 and api accept web on it,
/// each selecting its own workload's pods; the address web was denied is outside the cluster,
/// listed apart.
fn assert_web_and_api_allowed(suggested: &serde_json::Value) {
    let policies: Vec<(&str, &str, &serde_json::Value)> = suggested["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["workload"]["name"].as_str().unwrap(),
                s["direction"].as_str().unwrap(),
                &s["policy"]["spec"],
            )
        })
        .collect();
    let spec = |name, direction| {
        policies
            .iter()
            .find(|(n, d, _)| *n == name && *d == direction)
            .map(|(_, _, spec)| *spec)
            .unwrap_or_else(|| panic!("no {direction} policy for {name}: {suggested:#}"))
    };
    let web = spec("web", "egress");
    assert_eq!(web["podSelector"]["matchLabels"]["app"], "web", "{web:#}");
    assert_eq!(
        web["egress"][0]["to"][0]["podSelector"]["matchLabels"]["app"], "api",
        "{suggested:#}"
    );
    assert_eq!(web["egress"][0]["ports"][0]["port"], 8080, "{web:#}");
    let api = spec("api", "ingress");
    assert_eq!(api["podSelector"]["matchLabels"]["app"], "api", "{api:#}");
    assert_eq!(
        api["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app"], "web",
        "{api:#}"
    );
    assert_eq!(api["ingress"][0]["ports"][0]["port"], 8080, "{api:#}");
    // The observed workloads are isolated both ways: what nobody saw is denied.
    spec("web", "ingress");
    spec("api", "egress");
    let external = suggested["external_left_out"].to_string();
    assert!(external.contains("203.0.113.9"), "{suggested:#}");
    // ops is not asked for.
    assert!(!suggested.to_string().contains("prober"), "{suggested:#}");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A pod of the agents' DaemonSet in kube-system, on `node`, running at `ip` (or pending).
fn agent_pod(server: &ApiServer, name: &str, node: &str, ip: Option<&str>) {
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"kube-system",
            "labels":{{"app.kubernetes.io/name":"kube-nftpol"}}}},
           "spec":{{"nodeName":"{node}","containers":[{{"name":"agent","image":"kube-nftpol"}}]}}}}"#
    );
    server
        .kubectl_stdin(&["apply", "-f", "-"], &pod)
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(ip) = ip {
        let status = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}]}}}}"#
        );
        server
            .patch_pod_status("kube-system", name, &status)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Runs `ip ARGS`, failing the test with its stderr.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        netns::stderr(&out)
    );
}

#[test]
fn kube_nftpol_flows_reads_every_agent_through_the_api_servers_pod_proxy() {
    netns::require_root("flows_access", "knp-flows");
    // The API server proxies to no loopback or link-local address: the agent listens on a
    // veth in the benchmarking range, whose other end (in a namespace deleted with the test,
    // taking the pair along) holds a second agent's address where nothing listens.
    let ns = Netns::new("knp-flows");
    let net = format!("198.18.{}", std::process::id() % 250);
    let (host, other) = (format!("{net}.1"), format!("{net}.2"));
    let link = format!("kf{}", std::process::id() % 100_000_000);
    ip(&[
        "link",
        "add",
        &link,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns.name(),
    ]);
    ip(&["addr", "add", &format!("{host}/30"), "dev", &link]);
    ip(&["link", "set", &link, "up"]);
    ip(&[
        "-n",
        ns.name(),
        "addr",
        "add",
        &format!("{other}/30"),
        "dev",
        "eth0",
    ]);
    ip(&["-n", ns.name(), "link", "set", "eth0", "up"]);

    let server = start();
    kubectl(&server, &["create", "namespace", "shop"]);
    grant(&server);
    // suggest --cluster reads the cluster with deploy/flow-reader.yaml's policy viewer role.
    kubectl(
        &server,
        &[
            "create",
            "clusterrolebinding",
            "reader-views-policies",
            "--clusterrole=kube-nftpol-policy-viewer",
            "--user",
            READER,
        ],
    );
    shop_workloads(&server);
    let agent = Agent::serve(&server, format!("{host}:0").parse().unwrap());
    let port = agent.addr.port().to_string();
    agent_pod(&server, "kube-nftpol-a", NODE, Some(&host));
    agent_pod(&server, "kube-nftpol-b", "node-2", Some(&other));
    agent_pod(&server, "kube-nftpol-c", "node-3", None);

    // The API server deletes the Authorization header it authenticated (#38775): the agent
    // sees no token.
    let path = format!("/api/v1/namespaces/kube-system/pods/kube-nftpol-a:{port}/proxy/flows");
    let reader = server.user_token(READER).unwrap();
    let error = server.request_as(&reader, "GET", &path, None).unwrap_err();
    assert!(error.contains("HTTP 401"), "{error}");
    assert!(error.contains("X-Kube-Nftpol-Authorization"), "{error}");

    // The reader's kubeconfig token goes to the agents in our header.
    let report = flows_json(&server, READER, &["--agent-port", &port], 1);
    assert!(!report.complete);
    assert_eq!(report.agents.len(), 1);
    assert_eq!(
        (
            report.agents[0].pod.as_str(),
            report.agents[0].node.as_str()
        ),
        ("kube-nftpol-a", NODE)
    );
    let unanswered: Vec<(&str, &str)> = report
        .unanswered
        .iter()
        .map(|u| (u.pod.as_str(), u.error.as_str()))
        .collect();
    assert_eq!(unanswered.len(), 2, "{unanswered:?}");
    assert_eq!(unanswered[0].0, "kube-nftpol-b");
    assert!(unanswered[0].1.contains("refused"), "{unanswered:?}");
    assert_eq!(
        unanswered[1],
        ("kube-nftpol-c", "the pod is not running (phase Pending)")
    );
    // web's two replicas to api are one row; web to an address and ops' prober to one are two.
    assert_eq!(report.flows.len(), 3, "{:#?}", report.flows);
    let web_to_api = &report.flows[1];
    assert_eq!(web_to_api.workload.name, "web");
    assert_eq!(web_to_api.pods, ["web-5c8b6-aaaaa", "web-5c8b6-bbbbb"]);
    assert!(
        matches!(&web_to_api.peer, WorkloadPeer::Workload(w) if w.kind == "Deployment" && w.name == "api")
    );
    assert_eq!(web_to_api.count, 2);

    // For people: the table on stdout, the agents that did not answer on stderr.
    let out = flows_cli(&server, READER, &["--agent-port", &port]);
    assert_eq!(out.status.code(), Some(1));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.starts_with("ID            NAMESPACE  WORKLOAD"),
        "{stdout}"
    );
    // Each failure once, in the command's words: not also in the client's log.
    assert!(!stderr.contains("kube_client"), "{stderr}");
    assert!(stdout.contains("Deployment/web"), "{stdout}");
    assert!(
        stderr.contains("agent kube-nftpol-b (node node-2) did not answer"),
        "{stderr}"
    );
    assert!(stderr.contains("2 of 3 agents did not answer"), "{stderr}");

    // suggest --cluster: the same windows, checked against the live cluster (the reader may
    // view it), policies for both ends of what shop's workloads were seen doing; marked
    // incomplete, exit 1, while agents do not answer.
    let suggested = suggest_json(&server, READER, &["--agent-port", &port], 1);
    assert_eq!(
        suggested["missing_agents"],
        serde_json::json!(["kube-nftpol-b (node node-2)", "kube-nftpol-c (node node-3)"])
    );
    assert_web_and_api_allowed(&suggested);
    let out = suggest_cli(&server, READER, &["--agent-port", &port]);
    assert_eq!(out.status.code(), Some(1));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stdout.contains("# INCOMPLETE: these agents did not answer"),
        "{stdout}"
    );
    assert!(
        stderr.contains("2 agents did not answer: the suggestions lack their nodes' flows"),
        "{stderr}"
    );
    // graph --cluster draws what it has and names the agents that did not answer.
    let out = graph_cli(&server, &port);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "warning: agent kube-nftpol-c (node node-3) did not answer: the pod is not running"
        ),
        "{stderr}"
    );
    assert!(text(&out.stdout).contains("8080"));

    // Every agent answers: exit 0.
    // Forced: no kubelet confirms a graceful deletion here.
    kubectl(
        &server,
        &[
            "-n",
            "kube-system",
            "delete",
            "pod",
            "kube-nftpol-b",
            "kube-nftpol-c",
            "--grace-period=0",
            "--force",
        ],
    );
    let report = flows_json(&server, READER, &["--agent-port", &port], 0);
    assert!(report.complete && report.unanswered.is_empty());
    let suggested = suggest_json(&server, READER, &["--agent-port", &port], 0);
    assert!(suggested.get("missing_agents").is_none(), "{suggested:#}");
    assert_web_and_api_allowed(&suggested);
    // graph --cluster draws the same windows: web's replicas to api are one edge.
    let out = graph_cli(&server, &port);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.starts_with("flowchart"), "{stdout}");
    assert!(
        stdout.contains("web") && stdout.contains("api") && stdout.contains("prober"),
        "{stdout}"
    );
    assert!(stdout.contains("8080"), "{stdout}");
    assert!(!stderr.contains("did not answer"), "{stderr}");

    // The tenant reads shop's flows, and only with -n shop.
    let report = flows_json(&server, TENANT, &["--agent-port", &port, "-n", "shop"], 0);
    assert!(report.flows.iter().all(|f| f.workload.namespace == "shop"));
    assert_eq!(report.flows.len(), 2);
    let report = flows_json(&server, TENANT, &["--agent-port", &port], 1);
    assert!(
        report.unanswered[0]
            .error
            .starts_with("HTTP 403 Forbidden: forbidden: user \"tenant\""),
        "{:?}",
        report.unanswered
    );

    // A token whose user may not read flows: the agent refuses it, and says so.
    let stranger = server.user_token(STRANGER).unwrap();
    let out = flows_cli(
        &server,
        READER,
        &["--agent-port", &port, "--token", &stranger],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("HTTP 403 Forbidden: forbidden: user \"stranger\""),
        "{}",
        text(&out.stderr)
    );
    // A kubeconfig whose user may not list the agents: nothing to ask, exit 2.
    let out = flows_cli(&server, STRANGER, &["--agent-port", &port]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("kube-nftpol: listing the agents (pods app.kubernetes.io/name=kube-nftpol in namespace kube-system): "), "{stderr}");
    assert!(stderr.contains("forbidden"), "{stderr}");
    drop(ns);
}
