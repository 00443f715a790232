//! Suite 5: the agent reading a real kube-apiserver, through API trouble and pod lifecycles.
//!
//! - the API server stopped for 30 s under steady probes: every verdict stays right, the
//!   agents keep running, and a policy change made after the restart is enforced;
//! - pod lifecycle: a terminating pod keeps its isolation and stays a peer; its IP, handed by
//!   the CNI to a new pod behind a new veth while the old pod still terminates in the API,
//!   never carries the old pod's access; an invalid policy gets a Warning Event naming the
//!   field, and its pods stay isolated while other policies still apply.
//!
//! The harness plays kubelet and CNI ([`crate::api`]); verdicts are real packets.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::events::v1 as events;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::cluster::{self, Cluster, NODES};
use crate::enforcer::{Enforcer, Mode};
use crate::probes::Via;
use crate::scenario::{self, CHANGE_FLOWS, Flow, RESTART_FLOWS, wrong_verdicts};
use crate::{Result, begin, links, runtime, say};

/// How long the API server stays down.
const OUTAGE: Duration = Duration::from_secs(30);

/// Probes until every flow has its verdict, or fails after `limit`.
async fn converge(cluster: &Cluster, flows: &[Flow], limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let wrong = wrong_verdicts(cluster, flows).await?;
        if wrong.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(format!(
                "not enforced after {limit:?}:\n{}",
                wrong.join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn enforcement_survives_the_api_server_going_away_and_converges_when_it_returns() {
    let _serial = begin();
    runtime()
        .block_on(outage())
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn outage() -> Result<()> {
    let before = scenario::restart_case()?;
    let cluster = Cluster::build(cluster::plan(&before.pods)?).await?;
    scenario::check_flows(&cluster, &before, &RESTART_FLOWS)?;
    let mut enforcer = Enforcer::start(Mode::ApiAgent, &cluster, &before).await?;
    let wrong = wrong_verdicts(&cluster, &RESTART_FLOWS).await?;
    if !wrong.is_empty() {
        return Err(format!("before the outage:\n{}", wrong.join("\n")));
    }

    enforcer
        .api_mut()
        .ok_or("no API server")?
        .server
        .stop_apiserver()?;
    let down = Instant::now();
    let mut rounds = 0;
    while down.elapsed() < OUTAGE {
        let wrong = wrong_verdicts(&cluster, &RESTART_FLOWS).await?;
        if !wrong.is_empty() {
            return Err(format!(
                "{:?} into the outage:\n{}",
                down.elapsed(),
                wrong.join("\n")
            ));
        }
        for agent in enforcer.agents() {
            if let Some(status) = agent.exited() {
                return Err(format!(
                    "an agent exited during the outage ({status})\n{}",
                    agent.log_tail(30)
                ));
            }
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    enforcer
        .api_mut()
        .ok_or("no API server")?
        .server
        .start_apiserver()?;
    say(&format!(
        "sim: API server down for {:?}; {rounds} rounds of {} probes, all verdicts right",
        down.elapsed(),
        RESTART_FLOWS.len()
    ));

    // A change made after the restart reaches the kernels (the enforcer waits for the exact
    // tables), and the packets follow.
    let after = scenario::change_case(true)?;
    let flows: Vec<Flow> = CHANGE_FLOWS
        .iter()
        .map(|(f, after)| Flow {
            allowed: *after,
            ..*f
        })
        .collect();
    scenario::check_flows(&cluster, &after, &flows)?;
    let took = enforcer.apply(&cluster, &after).await?;
    let wrong = wrong_verdicts(&cluster, &flows).await?;
    if !wrong.is_empty() {
        return Err(format!("after the restart:\n{}", wrong.join("\n")));
    }
    say(&format!(
        "sim: after the API server came back, a policy change reached both kernels in {} ms",
        took.as_millis()
    ));
    Ok(())
}

#[test]
fn pod_lifecycle_through_the_api_never_widens_access() {
    let _serial = begin();
    runtime()
        .block_on(lifecycle())
        .unwrap_or_else(|e| panic!("{e}"));
}

/// y/a takes traffic from x/b only (placement: x/b and y/a on node-2, x/c and y/b on node-1).
fn lifecycle_case() -> Result<crate::conformance_data::Case> {
    scenario::case(
        "pod lifecycle",
        vec![scenario::policy(
            "y",
            "a-from-xb",
            json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{
                    "namespaceSelector": {"matchLabels": {"ns": "x"}},
                    "podSelector": {"matchLabels": {"pod": "b"}},
                }]}],
            }),
        )],
    )
}

const fn flow(from: &'static str, to: &'static str, allowed: bool) -> Flow {
    Flow {
        from,
        to,
        via: Via::PodIp,
        port: 80,
        allowed,
    }
}

async fn lifecycle() -> Result<()> {
    let case = lifecycle_case()?;
    let cluster = Cluster::build(cluster::plan(&case.pods)?).await?;
    let flows = [
        flow("x/b", "y/a", true),
        flow("x/c", "y/a", false),
        flow("y/b", "y/a", false),
        flow("x/c", "y/b", true),
    ];
    scenario::check_flows(&cluster, &case, &flows)?;
    let mut enforcer = Enforcer::start(Mode::ApiAgent, &cluster, &case).await?;
    converge(&cluster, &flows, Duration::from_secs(5)).await?;
    let api = enforcer.api().ok_or("no API server")?;
    let pods = |ns: &str| Api::<core::Pod>::namespaced(api.client.clone(), ns);
    let graceful = DeleteParams {
        grace_period_seconds: Some(300),
        ..DeleteParams::default()
    };

    // 1. Terminating pods (no kubelet confirms the deletion) stay policed and stay peers.
    for (ns, name) in [("y", "a"), ("x", "b")] {
        pods(ns)
            .delete(name, &graceful)
            .await
            .map_err(|e| format!("deleting {ns}/{name} gracefully: {e}"))?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let wrong = wrong_verdicts(&cluster, &flows).await?;
        if !wrong.is_empty() {
            return Err(format!(
                "with y/a and x/b terminating:\n{}",
                wrong.join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say("sim: terminating pods kept their isolation and their peers");

    // 2. The CNI tears x/b's sandbox down and gives its IP to a new pod behind a new veth,
    //    while x/b still terminates in the API: the new pod must get none of x/b's access.
    let old = cluster.pod("x/b").ok_or("no x/b")?;
    let node = NODES[old.plan.node];
    let node_netns = cluster.nodes[old.plan.node].netns.name();
    let pod_netns = old.netns_name().to_owned();
    let new_veth = links::veth_name("x", "d");
    links::ip(Some(node_netns), &["link", "del", &old.veth])?;
    let gateway = Ipv4Addr::new(10, 244, node.2, 1);
    links::attach_pod(node_netns, &pod_netns, &new_veth, old.plan.ip, gateway)?;
    let reused = [flow("x/b", "y/a", false)];
    let must_fail = async |phase: &str| -> Result<()> {
        for _ in 0..5 {
            let wrong = wrong_verdicts(&cluster, &reused).await?;
            if !wrong.is_empty() {
                return Err(format!(
                    "the new pod behind {new_veth} got x/b's access {phase}:\n{}",
                    wrong.join("\n")
                ));
            }
        }
        Ok(())
    };
    must_fail("while x/b terminates").await?;

    // The kubelet creates the new pod x/d and reports the reused IP.
    let mut new_pod = cluster
        .objects(&case)
        .into_iter()
        .find(|o| {
            o["kind"] == "Pod" && o["metadata"]["name"] == "b" && o["metadata"]["namespace"] == "x"
        })
        .ok_or("no x/b object")?;
    new_pod["metadata"]["name"] = json!("d");
    new_pod["metadata"]["labels"] = json!({"pod": "d"});
    api.create_pod(&new_pod, true).await?;
    must_fail("once x/d claims the IP").await?;
    api.force_delete("x", "b").await?;
    must_fail("after x/b is gone").await?;

    // Proof the probe can succeed: allow x/d, and its traffic flows through its new veth.
    let policies =
        Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(api.client.clone(), "y");
    let allow_d = scenario::policy(
        "y",
        "a-from-xd",
        json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{
                "namespaceSelector": {"matchLabels": {"ns": "x"}},
                "podSelector": {"matchLabels": {"pod": "d"}},
            }]}],
        }),
    );
    let allow_d = serde_json::from_value(allow_d).map_err(|e| e.to_string())?;
    policies
        .create(&PostParams::default(), &allow_d)
        .await
        .map_err(|e| format!("creating y/a-from-xd: {e}"))?;
    let took = converge(
        &cluster,
        &[flow("x/b", "y/a", true)],
        Duration::from_secs(10),
    )
    .await?;
    say(&format!(
        "sim: a reused IP never carried the old pod's access; once allowed, the new pod connected after {} ms",
        took.as_millis()
    ));

    // 3. An invalid policy: a Warning Event names the field, its pods stay isolated, and the
    //    other policies still apply. v1.20 accepts this CIDR (Go reads it as 10.0.0.0/8).
    let bad = scenario::policy(
        "y",
        "bad-cidr",
        json!({
            "podSelector": {"matchLabels": {"pod": "b"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "::ffff:10.0.0.0/104"}}]}],
        }),
    );
    let bad = serde_json::from_value(bad).map_err(|e| e.to_string())?;
    policies
        .create(&PostParams::default(), &bad)
        .await
        .map_err(|e| format!("creating y/bad-cidr: {e}"))?;
    let isolated = [
        flow("x/c", "y/b", false),
        flow("x/b", "y/a", true),
        flow("x/c", "y/a", false),
    ];
    converge(&cluster, &isolated, Duration::from_secs(10)).await?;
    let events = Api::<events::Event>::namespaced(api.client.clone(), "y");
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing events: {e}"))?;
        let found = list.items.into_iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bad-cidr")
                && e.reason.as_deref() == Some("InvalidNetworkPolicy")
        });
        if let Some(event) = found {
            break event;
        }
        if Instant::now() > deadline {
            return Err("no InvalidNetworkPolicy Event on y/bad-cidr within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let note = event.note.unwrap_or_default();
    if event.type_.as_deref() != Some("Warning")
        || !note.contains("spec.ingress[0].from[0].ipBlock.cidr")
    {
        return Err(format!(
            "the Event does not name the field as a Warning: {note}"
        ));
    }
    say(&format!("sim: invalid policy reported: {note}"));

    // 4. A pod plugged in before its IP is reported: z/c's sandbox now belongs to a new pod
    //    z/e that a policy isolates; until the API names z/e's IP, its veth is dropped.
    let starting = [flow("z/c", "x/c", false)];
    api.force_delete("z", "c").await?;
    converge(
        &cluster,
        &[flow("z/c", "x/c", true)],
        Duration::from_secs(10),
    )
    .await?;
    let deny_e = scenario::policy(
        "z",
        "deny-e-egress",
        json!({"podSelector": {"matchLabels": {"pod": "e"}}, "policyTypes": ["Egress"]}),
    );
    let deny_e = serde_json::from_value(deny_e).map_err(|e| e.to_string())?;
    Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(api.client.clone(), "z")
        .create(&PostParams::default(), &deny_e)
        .await
        .map_err(|e| format!("creating z/deny-e-egress: {e}"))?;
    let mut e_pod = cluster
        .objects(&case)
        .into_iter()
        .find(|o| {
            o["kind"] == "Pod" && o["metadata"]["name"] == "c" && o["metadata"]["namespace"] == "z"
        })
        .ok_or("no z/c object")?;
    e_pod["metadata"]["name"] = json!("e");
    e_pod["metadata"]["labels"] = json!({"pod": "e"});
    api.create_pod(&e_pod, false).await?;
    let took = converge(&cluster, &starting, Duration::from_secs(10)).await?;
    let e_pod: core::Pod = serde_json::from_value(e_pod).map_err(|e| e.to_string())?;
    api.set_status("z", "e", &e_pod).await?;
    for _ in 0..5 {
        let wrong = wrong_verdicts(&cluster, &starting).await?;
        if !wrong.is_empty() {
            return Err(format!("once z/e's IP is reported:\n{}", wrong.join("\n")));
        }
    }
    say(&format!(
        "sim: a starting isolated pod's veth was dropped before its IP was reported (converged in {} ms, probe timeouts included)",
        took.as_millis()
    ));

    for agent in enforcer.agents() {
        if let Some(status) = agent.exited() {
            return Err(format!(
                "an agent exited ({status})\n{}",
                agent.log_tail(30)
            ));
        }
    }
    Ok(())
}

/// The agent started exactly as `deploy/daemonset.yaml` says (its arguments and environment,
/// every capability dropped but NET_ADMIN, no new privileges) enforces, logs drops and serves
/// its endpoints.
#[test]
fn the_agent_runs_with_the_daemonsets_arguments_and_only_its_capabilities() {
    let _serial = begin();
    runtime()
        .block_on(container())
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn container() -> Result<()> {
    let case = scenario::restart_case()?;
    let cluster = Cluster::build(cluster::plan(&case.pods)?).await?;
    scenario::check_flows(&cluster, &case, &RESTART_FLOWS)?;
    let mut enforcer = Enforcer::start(Mode::Container, &cluster, &case).await?;
    let wrong = wrong_verdicts(&cluster, &RESTART_FLOWS).await?;
    if !wrong.is_empty() {
        return Err(format!("with the DaemonSet's agent:\n{}", wrong.join("\n")));
    }
    const NET_ADMIN: u64 = 1 << 12;
    for agent in enforcer.agents() {
        let pid = agent.pid().ok_or("an agent is not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let caps = |name: &str| u64::from_str_radix(&field(name), 16).unwrap_or(u64::MAX);
        if caps("CapEff:") != NET_ADMIN
            || caps("CapBnd:") != NET_ADMIN
            || field("NoNewPrivs:") != "1"
        {
            return Err(format!(
                "agent {pid} runs with CapEff {} CapBnd {} NoNewPrivs {}, not NET_ADMIN alone",
                field("CapEff:"),
                field("CapBnd:"),
                field("NoNewPrivs:")
            ));
        }
    }
    for node in &cluster.nodes {
        let metrics = crate::agent::http_status(&node.inside, "/metrics").await?;
        if metrics != 200 {
            return Err(format!("/metrics on {} answered {metrics}", node.name));
        }
    }
    read_only_endpoints(&cluster).await?;
    service_account_is_least_privilege(enforcer.api().ok_or("no API server")?)?;
    // A denied flow (z/a -> x/a:80; x/a is on node-1) shows up in the drop log.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let log = enforcer
            .agents()
            .iter()
            .map(|a| a.log_tail(200))
            .collect::<String>();
        if log
            .contains(r#""action":"deny","direction":"ingress","pod":{"namespace":"x","name":"a""#)
            && log.contains(r#""peer":{"namespace":"z","name":"a""#)
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("no drop line for z/a -> x/a:\n{log}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... and as a PolicyDenied Event on the pod.
    let api = enforcer.api().ok_or("no API server")?;
    let events = Api::<events::Event>::namespaced(api.client.clone(), "x");
    let deadline = Instant::now() + Duration::from_secs(10);
    let note = loop {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing events: {e}"))?;
        let found = list.items.into_iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("a")
                && e.reason.as_deref() == Some("PolicyDenied")
        });
        if let Some(event) = found {
            break event.note.unwrap_or_default();
        }
        if Instant::now() > deadline {
            return Err("no PolicyDenied Event on x/a within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !note.contains("x/a-from-y") {
        return Err(format!(
            "the PolicyDenied Event does not name the policy: {note}"
        ));
    }
    say(&format!("sim: PolicyDenied on x/a: {note}"));
    say(
        "sim: the DaemonSet's agent (NET_ADMIN only, no new privileges) enforced, logged, wrote Events and served /metrics",
    );
    Ok(())
}

/// The agent's endpoints serve reads only: every writing method on them is refused (405),
/// paths that are not endpoints do not exist (404), and after all those requests every
/// node's table has the same rules (same handles) and every verdict is unchanged.
async fn read_only_endpoints(cluster: &Cluster) -> Result<()> {
    const ENDPOINTS: [&str; 5] = ["/healthz", "/readyz", "/metrics", "/flows", "/hints"];
    const WRITES: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];
    const NOT_ENDPOINTS: [&str; 5] = ["/", "/apply", "/config", "/debug/pprof", "/hints/apply"];
    let handles = |listing: Option<String>| {
        listing
            .ok_or_else(|| "the table is missing".to_owned())
            .and_then(|l| crate::nft::rule_handles(&l))
    };
    let mut before = Vec::new();
    for node in &cluster.nodes {
        before.push(handles(crate::nft::list_table(node.netns.name()).await?)?);
    }
    let mut wrong = Vec::new();
    for node in &cluster.nodes {
        let mut requests: Vec<(&str, &str, u16)> = Vec::new();
        for path in ENDPOINTS {
            for method in WRITES {
                requests.push((method, path, 405));
            }
        }
        for path in NOT_ENDPOINTS {
            requests.push(("GET", path, 404));
            requests.push(("POST", path, 404));
        }
        for (method, path, status) in requests {
            let (got, _) = crate::agent::http_request(&node.inside, method, path).await?;
            if got != status {
                wrong.push(format!(
                    "{}: {method} {path} answered {got}, not {status}",
                    node.name
                ));
            }
        }
    }
    for (node, old) in cluster.nodes.iter().zip(&before) {
        let now = handles(crate::nft::list_table(node.netns.name()).await?)?;
        if &now != old {
            wrong.push(format!(
                "{}: the table's rules changed after the requests",
                node.name
            ));
        }
    }
    wrong.extend(wrong_verdicts(cluster, &RESTART_FLOWS).await?);
    if !wrong.is_empty() {
        return Err(format!(
            "the endpoints are not read-only:\n{}",
            wrong.join("\n")
        ));
    }
    say("sim: every write to the agent's endpoints was refused (405) and changed nothing");
    Ok(())
}

/// An API request: method, path and optional (content type, body).
type Request<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);

/// The identity the DaemonSet's agent ran with (its service account, `deploy/rbac.yaml`) may
/// read pods, namespaces and policies and write Events, and is refused everything else the
/// server is asked here: so the agent above enforced, logged and wrote its Event with only
/// those permissions.
fn service_account_is_least_privilege(api: &crate::api::ApiCluster) -> Result<()> {
    let token = api.server.agent_token()?;
    let allowed = [
        ("GET", "/api/v1/pods"),
        ("GET", "/api/v1/namespaces"),
        ("GET", "/apis/networking.k8s.io/v1/networkpolicies"),
    ];
    let policy = r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"allow-all"},"spec":{"podSelector":{},"ingress":[{}]}}"#;
    let refused: [Request<'_>; 6] = [
        ("GET", "/api/v1/secrets", None),
        ("GET", "/api/v1/namespaces/kube-system/configmaps", None),
        ("DELETE", "/api/v1/namespaces/x/pods/a", None),
        (
            "POST",
            "/apis/networking.k8s.io/v1/namespaces/x/networkpolicies",
            Some(("application/json", policy)),
        ),
        (
            "DELETE",
            "/apis/networking.k8s.io/v1/namespaces/x/networkpolicies/a-from-y",
            None,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/x",
            Some((
                "application/merge-patch+json",
                r#"{"metadata":{"labels":{"ns":"y"}}}"#,
            )),
        ),
    ];
    let mut wrong = Vec::new();
    for (method, path) in allowed {
        if let Err(e) = api.server.request_as(&token, method, path, None) {
            wrong.push(format!("refused what the ClusterRole grants: {e}"));
        }
    }
    for (method, path, body) in refused {
        match api.server.request_as(&token, method, path, body) {
            Err(e) if e.contains("HTTP 403") => {}
            other => wrong.push(format!("{method} {path}: expected 403, got {other:?}")),
        }
    }
    if !wrong.is_empty() {
        return Err(format!(
            "the agent's service account is not least privilege:\n{}",
            wrong.join("\n")
        ));
    }
    say(
        "sim: the agent's service account may read pods, namespaces and policies, and nothing else asked",
    );
    Ok(())
}
