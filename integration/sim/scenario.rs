//! Hand-written scenarios for the restart and policy-change suites, on the conformance
//! cluster's pods (x/a ... z/c, labels `pod=<name>`, namespaces labelled `ns=<name>`).
//!
//! A scenario is a [`Case`] (so the cluster and the enforcer treat it like an upstream case)
//! plus TCP flows with the verdict the test expects. [`check_flows`] asks the library's
//! evaluator too, so a slip in a hand-written expectation shows up as such rather than as an
//! enforcement bug.

use kube_nftpol::model::{ObjectKey, Protocol};
use kube_nftpol::policy::{Endpoint, Flow as PolicyFlow, evaluate};
use serde_json::{Value, json};

use crate::Result;
use crate::cluster::Cluster;
use crate::conformance_data::{self, Case};
use crate::probes::{self, Probe, Via};

/// A TCP connection the test makes, and whether the policy allows it.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// Client pod, `ns/name`.
    pub from: &'static str,
    /// Server pod, `ns/name`.
    pub to: &'static str,
    /// Pod IP or Service IP.
    pub via: Via,
    /// TCP port (80 or 81).
    pub port: u16,
    /// Whether it must connect.
    pub allowed: bool,
}

impl Flow {
    /// The probe for this flow.
    pub fn probe<'a>(&self, cluster: &'a Cluster) -> Result<Probe<'a>> {
        probes::between(
            cluster,
            self.from,
            self.to,
            self.via,
            self.port,
            Protocol::Tcp,
        )
    }

    /// `from -> to:port via ...`, for reports.
    pub fn describe(&self) -> String {
        format!(
            "{} -> {}:{} via {}",
            self.from,
            self.to,
            self.port,
            self.via.name()
        )
    }
}

/// Probes every flow once (many at a time) and describes those whose verdict was wrong.
pub async fn wrong_verdicts(cluster: &Cluster, flows: &[Flow]) -> Result<Vec<String>> {
    let probes = flows
        .iter()
        .map(|f| f.probe(cluster))
        .collect::<Result<Vec<_>>>()?;
    let outcomes = probes::run_many(&probes).await;
    Ok(flows
        .iter()
        .zip(outcomes)
        .filter(|(f, got)| got.allowed() != Some(f.allowed))
        .map(|(f, got)| {
            format!(
                "{}: expected allowed={}, got {got}",
                f.describe(),
                f.allowed
            )
        })
        .collect())
}

/// The conformance cluster (its first case's namespaces and pods) with these policies.
pub fn case(name: &str, policies: Vec<Value>) -> Result<Case> {
    let path = conformance_data::path();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let data: Value = serde_json::from_str(&text).map_err(|e| format!("{e}"))?;
    let mut first = data
        .pointer("/cases/0")
        .cloned()
        .ok_or("the conformance data has no cases")?;
    first["name"] = json!(name);
    first["policies"] = json!(policies);
    first["probes"] = json!([]);
    serde_json::from_value(first).map_err(|e| format!("scenario {name}: {e}"))
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

/// Fails when the evaluator disagrees with a flow's expected verdict.
pub fn check_flows(cluster: &Cluster, case: &Case, flows: &[Flow]) -> Result<()> {
    let snapshot = cluster.snapshot(case);
    let endpoint = |key: &str| {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        Endpoint::Pod(ObjectKey::new(ns, name))
    };
    for f in flows {
        let flow = PolicyFlow {
            source: endpoint(f.from),
            destination: endpoint(f.to),
            protocol: Protocol::Tcp,
            port: f.port,
        };
        let verdict = evaluate(&snapshot, &flow).map_err(|e| format!("{}: {e}", f.describe()))?;
        if verdict.allowed != f.allowed {
            return Err(format!(
                "{}: {}: the test expects {}, the evaluator says {}",
                case.name,
                f.describe(),
                if f.allowed { "allowed" } else { "denied" },
                if verdict.allowed { "allowed" } else { "denied" },
            ));
        }
    }
    Ok(())
}

/// Policies of the restart suite: x/a takes TCP 80 from namespace y only; z/b may talk only
/// to namespace x.
pub fn restart_case() -> Result<Case> {
    case(
        "restart under steady traffic",
        vec![
            policy(
                "x",
                "a-from-y",
                json!({
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                                 "ports": [{"port": 80, "protocol": "TCP"}]}],
                }),
            ),
            policy(
                "z",
                "b-to-x",
                json!({
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
                }),
            ),
        ],
    )
}

/// The restart suite's flows: allowed and denied, by pod IP and Service IP, on one node and
/// across nodes (placement: x/a, x/c, y/b, z/a on node-1; x/b, y/a, z/b on node-2).
pub const RESTART_FLOWS: [Flow; 8] = [
    flow("y/a", "x/a", Via::PodIp, 80, true),
    flow("y/b", "x/a", Via::ServiceIp, 80, true),
    flow("z/b", "x/b", Via::PodIp, 80, true),
    flow("z/b", "x/c", Via::ServiceIp, 81, true),
    flow("z/a", "x/a", Via::PodIp, 80, false),
    flow("y/a", "x/a", Via::ServiceIp, 81, false),
    flow("z/b", "y/a", Via::PodIp, 80, false),
    flow("z/b", "z/c", Via::ServiceIp, 80, false),
];

/// The policy-change suite before (`changed == false`) and after: namespace y denies all
/// ingress, z/b may talk only to namespace x, and x/a takes TCP 80 from namespace y, which
/// the change turns into namespace z.
pub fn change_case(changed: bool) -> Result<Case> {
    let from = if changed { "z" } else { "y" };
    case(
        if changed {
            "policy change: after"
        } else {
            "policy change: before"
        },
        vec![
            policy(
                "y",
                "deny-ingress",
                json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
            ),
            policy(
                "z",
                "b-to-x",
                json!({
                    "podSelector": {"matchLabels": {"pod": "b"}},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}],
                }),
            ),
            policy(
                "x",
                CHANGED_POLICY,
                json!({
                    "podSelector": {"matchLabels": {"pod": "a"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": from}}}],
                                 "ports": [{"port": 80, "protocol": "TCP"}]}],
                }),
            ),
        ],
    )
}

/// The policy the change suite edits, in namespace x.
pub const CHANGED_POLICY: &str = "a-from-ns";

/// The policy-change suite's flows: `(flow, allowed before, allowed after)`.
pub const CHANGE_FLOWS: [(Flow, bool); 10] = [
    // Flipped by the change.
    (flow("y/a", "x/a", Via::PodIp, 80, true), false),
    (flow("y/b", "x/a", Via::ServiceIp, 80, true), false),
    (flow("z/a", "x/a", Via::PodIp, 80, false), true),
    (flow("z/c", "x/a", Via::ServiceIp, 80, false), true),
    // Untouched.
    (flow("y/a", "x/a", Via::PodIp, 81, false), false),
    (flow("z/b", "x/b", Via::ServiceIp, 80, true), true),
    (flow("z/b", "y/a", Via::PodIp, 80, false), false),
    (flow("x/c", "y/b", Via::ServiceIp, 80, false), false),
    (flow("x/b", "z/a", Via::PodIp, 81, true), true),
    (flow("z/a", "x/c", Via::ServiceIp, 80, true), true),
];

const fn flow(from: &'static str, to: &'static str, via: Via, port: u16, allowed: bool) -> Flow {
    Flow {
        from,
        to,
        via,
        port,
        allowed,
    }
}
