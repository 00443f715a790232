//! Every agent's recent flows, read through the API server's pod proxy
//! (`/api/v1/namespaces/NS/pods/POD:PORT/proxy/flows`), so nothing but the API server needs to
//! be reachable: `kube-nftpol flows` prints them, `suggest --cluster` suggests from them.
//!
//! The agents are the pods with the DaemonSet's label in its namespace ([`ClusterArgs`]). Each
//! is asked concurrently (at most [`CONCURRENCY`] at once), each within `--timeout-secs`; one
//! that does not answer (not running, unreachable, refusing the token) is reported with why,
//! and the others' flows are still returned. The reader's token goes in
//! [`access::TOKEN_HEADER`], since the API server deletes `Authorization` before proxying
//! (kubernetes/kubernetes#38775); the kubeconfig's credentials authenticate to the API server,
//! which needs list on pods and get on pods/proxy in the agents' namespace.
//!
//! [`fetch`] returns the flows of every agent as flow lines (one per flow of a pod, as the
//! agents keep them) with the agents that answered and those that did not;
//! [`ClusterFlows::by_workload`] merges them by workload.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Limited};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, ListParams};
use serde::{Deserialize, Serialize};

use super::reader_token;
use crate::access;
use crate::flow_line::FlowLine;
use crate::flows::{self, NodeFlows, Window, WorkloadFlow};

/// Agents asked at once at most.
pub const CONCURRENCY: usize = 16;
/// The most an agent's answer may weigh (a full window of 4,096 flows is a few MiB of JSON).
const MAX_ANSWER_BYTES: usize = 256 << 20;
/// The most of an error body quoted.
const MAX_ERROR_CHARS: usize = 300;

/// Where the agents are and how to read them: the flags `flows` and `suggest --cluster` share.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kubeconfig for the API server [default: in-cluster, then KUBECONFIG, then
    /// ~/.kube/config]; its user needs list on pods and get on pods/proxy in the agents'
    /// namespace (the Role kube-nftpol-flow-reader there)
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Bearer token for the agents, whose user may get flows.kube-nftpol.io (ClusterRole
    /// kube-nftpol-flow-reader) [default: the kubeconfig's token or token file]
    #[arg(long, value_name = "TOKEN", env = reader_token::TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
    /// Namespace of the agents' pods
    #[arg(long, value_name = "NS", default_value = "kube-system")]
    pub agent_namespace: String,
    /// Label selector of the agents' pods
    #[arg(
        long,
        value_name = "SELECTOR",
        default_value = "app.kubernetes.io/name=kube-nftpol"
    )]
    pub agent_selector: String,
    /// Port of the agents' endpoints (their --metrics-addr)
    #[arg(long, value_name = "PORT", default_value_t = 9640)]
    pub agent_port: u16,
    /// Seconds to wait for each agent (at most 600)
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout_secs: u64,
}

/// An agent that answered, and how full its window is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    /// The agent's pod.
    pub pod: String,
    /// Its node, as it says.
    pub node: String,
    /// Distinct flows it keeps, of every namespace.
    pub kept: usize,
    /// The most it keeps.
    pub capacity: usize,
    /// Flows it evicted to make room since it started: older flows of its node are missing.
    pub evicted: u64,
}

/// An agent that did not answer, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unanswered {
    /// The agent's pod.
    pub pod: String,
    /// Its node, when it is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why: the pod is not running, the request failed or timed out, or the status and message
    /// of the answer (the API server's or the agent's: 401 and 403 are about the token).
    pub error: String,
}

/// The flows of every agent that answered.
#[derive(Debug, Clone, Default)]
pub struct ClusterFlows {
    /// The agents that answered, by pod name.
    pub answered: Vec<Answered>,
    /// The agents that did not, by pod name.
    pub unanswered: Vec<Unanswered>,
    /// Their flows, one line per flow of a pod (lines of one flow from two agents combined),
    /// in the order of [`flows::FlowKey`].
    pub flows: Vec<FlowLine>,
}

impl ClusterFlows {
    /// Whether every agent answered.
    pub fn complete(&self) -> bool {
        self.unanswered.is_empty()
    }

    /// The flows merged by workload.
    pub fn by_workload(&self) -> Vec<WorkloadFlow> {
        flows::by_workload(&self.flows)
    }
}

/// Reads every agent's flows (of the pods of `namespace`, or all): the kubeconfig and token of
/// `args`. Errors are what keeps any agent from being asked (no kubeconfig, no token, the pods
/// cannot be listed, no agent found); an agent that does not answer is in
/// [`ClusterFlows::unanswered`].
pub async fn fetch(args: &ClusterArgs, namespace: Option<&str>) -> anyhow::Result<ClusterFlows> {
    let config = crate::agent::kube_config(args.kubeconfig.as_deref()).await?;
    let token = reader_token::resolve(args.token.as_deref(), &config.auth_info)?;
    let client = kube::Client::try_from(config).context("creating the Kubernetes client")?;
    fetch_with(&client, &token, args, namespace).await
}

/// [`fetch`] with a client and token already at hand.
pub async fn fetch_with(
    client: &kube::Client,
    token: &str,
    args: &ClusterArgs,
    namespace: Option<&str>,
) -> anyhow::Result<ClusterFlows> {
    let pods = Api::<Pod>::namespaced(client.clone(), &args.agent_namespace)
        .list(&ListParams::default().labels(&args.agent_selector))
        .await
        .with_context(|| {
            format!(
                "listing the agents (pods {} in namespace {})",
                args.agent_selector, args.agent_namespace
            )
        })?;
    anyhow::ensure!(
        !pods.items.is_empty(),
        "no agents: no pod in namespace {} matches {} (see --agent-namespace and \
         --agent-selector)",
        args.agent_namespace,
        args.agent_selector
    );
    let timeout = Duration::from_secs(args.timeout_secs);
    let answers: Vec<(Pod, Result<NodeFlows, String>)> =
        futures::stream::iter(pods.items.into_iter().map(|pod| async move {
            let answer = ask(client, token, args, namespace, &pod, timeout).await;
            (pod, answer)
        }))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    let mut cluster = ClusterFlows::default();
    let mut merged = Window::unbounded();
    for (pod, answer) in answers {
        let name = pod.metadata.name.clone().unwrap_or_default();
        match answer {
            Ok(node_flows) => {
                cluster.answered.push(Answered {
                    pod: name,
                    node: node_flows.node,
                    kept: node_flows.kept,
                    capacity: node_flows.capacity,
                    evicted: node_flows.evicted,
                });
                for line in node_flows.flows {
                    merged.record(line);
                }
            }
            Err(error) => cluster.unanswered.push(Unanswered {
                pod: name,
                node: pod.spec.and_then(|s| s.node_name),
                error,
            }),
        }
    }
    cluster.answered.sort_by(|a, b| a.pod.cmp(&b.pod));
    cluster.unanswered.sort_by(|a, b| a.pod.cmp(&b.pod));
    cluster.flows = merged.flows().cloned().collect();
    Ok(cluster)
}

/// One agent's flows, or why not.
async fn ask(
    client: &kube::Client,
    token: &str,
    args: &ClusterArgs,
    namespace: Option<&str>,
    pod: &Pod,
    timeout: Duration,
) -> Result<NodeFlows, String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    if phase != "Running" {
        return Err(format!("the pod is not running (phase {phase})"));
    }
    if status.and_then(|s| s.pod_ip.as_deref()).is_none() {
        return Err("the pod has no IP address yet".to_owned());
    }
    let mut path = format!(
        "/api/v1/namespaces/{}/pods/{name}:{}/proxy/flows",
        args.agent_namespace, args.agent_port
    );
    if let Some(namespace) = namespace {
        path.push('?');
        path.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .append_pair("namespace", namespace)
                .finish(),
        );
    }
    let request = http::Request::get(&path)
        .header(access::TOKEN_HEADER, format!("Bearer {token}"))
        .body(kube::client::Body::empty())
        .map_err(|e| format!("building the request: {e}"))?;
    let exchange = async {
        let response = client
            .send(request)
            .await
            .map_err(|e| format!("GET {path}: {:#}", anyhow::Error::new(e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("GET {path}: reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", message(&body)));
        }
        serde_json::from_slice::<NodeFlows>(&body)
            .map_err(|e| format!("the answer is not the agent's /flows: {e}"))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", timeout.as_secs())))
}

/// What an error answer says: an API server's `Status` message, else the body's first line.
fn message(body: &[u8]) -> String {
    if let Ok(status) = serde_json::from_slice::<Status>(body)
        && let Some(message) = status.message.filter(|m| !m.is_empty())
    {
        return message;
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut quoted: String = line.trim().chars().take(MAX_ERROR_CHARS).collect();
    if quoted.len() < line.trim().len() {
        quoted.push_str("...");
    }
    if quoted.is_empty() {
        "(no message)".to_owned()
    } else {
        quoted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_server_status_gives_its_message() {
        let status = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"a\" is forbidden: User \"bob\" cannot get resource \"pods/proxy\"","reason":"Forbidden","code":403}"#;
        assert_eq!(
            message(status),
            r#"pods "a" is forbidden: User "bob" cannot get resource "pods/proxy""#
        );
    }

    #[test]
    fn an_agents_text_answer_gives_its_first_line_cut_short() {
        assert_eq!(
            message(b"\nforbidden: user \"bob\" may not\nmore\n"),
            "forbidden: user \"bob\" may not"
        );
        let long = "x".repeat(1000);
        assert_eq!(message(long.as_bytes()).len(), MAX_ERROR_CHARS + 3);
        assert_eq!(message(b""), "(no message)");
    }
}
