//! The ClusterNetworkPolicy conformance suite of kubernetes-sigs/network-policy-api v0.2.0 as
//! data (`data/cnp-conformance/tests.yaml`, made from the upstream Go tests by `translate.py`
//! beside it; the upstream manifests in `data/cnp-conformance/base/`), and the player that
//! turns each upstream test into the cluster states its probes run against.
//!
//! Every runner uses it the same way, whatever carries the packets:
//!
//! 1. [`Suite::load`] the data;
//! 2. put the base cluster in place: [`Suite::base_objects`] (namespaces, the pods of the base
//!    StatefulSets, nodes) for a placement ([`Placement::simulated`] here; a real cluster has
//!    its own pods and only needs the namespaces and workloads of `base/manifests.yaml`);
//! 3. for each test, [`Suite::checkpoints`] with the real pod addresses: each checkpoint is the
//!    complete set of policy objects (ClusterNetworkPolicies and NetworkPolicies) in force
//!    after the steps so far, and the probes that follow. Apply the objects (and delete those
//!    of the test that are gone), run every probe from its client pod to the target's address,
//!    compare with `connect`.
//!
//! Steps are replayed in upstream order, each test from its own manifests, mutations building
//! on each other within a test exactly as the upstream patches do.
//!
//! `run_on_evaluator` below is the core crate's runner; the node simulator's suite
//! (`integration/sim/suite_cnp_conformance.rs`) is the packet runner; a real-cluster rig calls
//! the same two functions with the addresses its pods got.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Value, json};

/// Where the data lives.
pub fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/cnp-conformance"))
}

/// The suite.
#[derive(Debug, Clone, Deserialize)]
pub struct Suite {
    /// The upstream repository, tag and commit translated.
    pub source: Source,
    /// The base manifests, relative to [`dir`].
    pub base_manifests: String,
    /// The host-network ports the suite's templates and node probes use (upstream's default
    /// range, 34345 onwards).
    pub host_network_ports: Vec<u16>,
    /// The tests, in the order of their upstream files.
    pub tests: Vec<Test>,
}

/// Where the data comes from.
#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The commit of the tag.
    pub commit: String,
}

/// One upstream `ConformanceTest`.
#[derive(Debug, Clone, Deserialize)]
pub struct Test {
    /// Its `ShortName`.
    pub name: String,
    /// The upstream file it is in.
    pub source: String,
    /// Its `Description`.
    pub description: String,
    /// Its `Features` (`ClusterNetworkPolicy`, `ClusterNetworkPolicyNamedPorts`,
    /// `ClusterNetworkPolicyEgressNodePeers`).
    pub features: Vec<String>,
    /// Its `Manifests`, relative to [`dir`].
    pub manifests: Vec<String>,
    /// Its `t.Run`s, in order.
    pub subtests: Vec<Subtest>,
}

/// One upstream `t.Run`.
#[derive(Debug, Clone, Deserialize)]
pub struct Subtest {
    /// Its name, as upstream writes it.
    pub name: String,
    /// What it does, in order.
    pub steps: Vec<Step>,
}

/// One thing a sub-test does.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// `PokeServer`: a connection that must connect or time out.
    Probe(Probe),
    /// Two rules of a direction exchanged.
    SwapRules {
        /// The ClusterNetworkPolicy.
        policy: String,
        /// `ingress` or `egress`.
        direction: String,
        /// One rule's index.
        a: usize,
        /// The other's.
        b: usize,
    },
    /// A rule's action changed.
    SetAction {
        /// The ClusterNetworkPolicy.
        policy: String,
        /// `ingress` or `egress`.
        direction: String,
        /// The rule's index.
        rule: usize,
        /// The new action.
        action: String,
    },
    /// The policy's priority changed.
    SetPriority {
        /// The ClusterNetworkPolicy.
        policy: String,
        /// The new priority.
        priority: i64,
    },
    /// A rule's protocols replaced.
    SetProtocols {
        /// The ClusterNetworkPolicy.
        policy: String,
        /// `ingress` or `egress`.
        direction: String,
        /// The rule's index.
        rule: usize,
        /// The new `protocols`.
        protocols: Vec<Value>,
    },
    /// A rule inserted at index 0; `{{cidr ns/pod}}` in it is the pod's address as a CIDR.
    PrependRule {
        /// The ClusterNetworkPolicy.
        policy: String,
        /// `ingress` or `egress`.
        direction: String,
        /// The rule.
        rule: Value,
    },
    /// An object deleted.
    Delete {
        /// Its kind (`NetworkPolicy`).
        kind: String,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// One `PokeServer`.
#[derive(Debug, Clone, Deserialize)]
pub struct Probe {
    /// The client pod, `ns/name`.
    pub from: String,
    /// The server pod, `ns/name`, dialled at its `status.podIP` (a host-network pod's is its
    /// node's address).
    pub to: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The port.
    pub port: PortRef,
    /// Whether it must connect (`true`) or time out (`false`).
    pub connect: bool,
}

/// A probe's port.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    /// A number.
    Number(u16),
    /// An index into [`Suite::host_network_ports`].
    HostNetwork {
        /// The index.
        host_network_port: usize,
    },
}

/// The cluster state a group of probes runs against, and the probes.
#[derive(Debug, Clone)]
pub struct Checkpoint<'a> {
    /// The test.
    pub test: &'a Test,
    /// The sub-test the probes belong to.
    pub subtest: &'a Subtest,
    /// Every policy object of the test in force (ClusterNetworkPolicies, NetworkPolicies), by
    /// `kind/namespace/name`.
    pub policies: Vec<Value>,
    /// The probes, in order.
    pub probes: Vec<&'a Probe>,
}

/// A pod of the base manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasePod {
    /// Its namespace.
    pub namespace: String,
    /// Its name (`<statefulset>-<ordinal>`).
    pub name: String,
    /// Its template's labels.
    pub labels: BTreeMap<String, String>,
    /// Its containers' declared ports: name, number, protocol.
    pub ports: Vec<(String, u16, String)>,
    /// Whether it runs in its node's network namespace (the `forbidden-forrest` centaurs).
    pub host_network: bool,
    /// The TCP, UDP and SCTP ports its containers serve, declared or not (what a simulated
    /// pod must listen on).
    pub serves: Vec<(String, u16)>,
}

/// Where each pod runs and which address it has.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Nodes: name, address, pod CIDR's third octet.
    pub nodes: Vec<(String, IpAddr, u8)>,
    /// Each base pod's node index and address, by `ns/name`.
    pub pods: BTreeMap<String, (usize, IpAddr)>,
}

impl Placement {
    /// Two nodes (`node-1` 172.18.0.2, `node-2` 172.18.0.3, labelled `kubernetes.io/os:
    /// linux` as kubelets label theirs); the pods alternate between them in base order
    /// (so `harry-potter-0` runs on node-1 and `harry-potter-1` on node-2) with addresses in
    /// their node's `10.244.<n>.0/24`, and the host-network pods take their node's address
    /// (`centaur-0` node-1, `centaur-1` node-2).
    pub fn simulated(pods: &[BasePod]) -> Self {
        let nodes = vec![
            ("node-1".to_owned(), "172.18.0.2".parse().expect("ip"), 1),
            ("node-2".to_owned(), "172.18.0.3".parse().expect("ip"), 2),
        ];
        let mut placed = BTreeMap::new();
        let (mut regular, mut host) = (0usize, 0usize);
        for pod in pods {
            let key = format!("{}/{}", pod.namespace, pod.name);
            if pod.host_network {
                let node = host % nodes.len();
                host += 1;
                placed.insert(key, (node, nodes[node].1));
            } else {
                let node = regular % nodes.len();
                let ip = format!("10.244.{}.{}", nodes[node].2, 10 + regular / nodes.len());
                regular += 1;
                placed.insert(key, (node, ip.parse().expect("ip")));
            }
        }
        Self {
            nodes,
            pods: placed,
        }
    }

    /// A pod's address (`ns/name`).
    pub fn ip_of(&self, pod: &str) -> Option<IpAddr> {
        self.pods.get(pod).map(|(_, ip)| *ip)
    }

    /// A pod's node name.
    pub fn node_of(&self, pod: &str) -> Option<&str> {
        self.pods
            .get(pod)
            .and_then(|(node, _)| self.nodes.get(*node))
            .map(|(name, _, _)| name.as_str())
    }
}

impl Suite {
    /// Reads the suite.
    pub fn load() -> Self {
        let path = dir().join("tests.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
    }

    /// A manifest file's objects, the host-network ports filled in as upstream's templates do.
    pub fn manifest(&self, relative: &str) -> Vec<Value> {
        let path = dir().join(relative);
        let mut text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        for (i, port) in self.host_network_ports.iter().enumerate() {
            text = text.replace(
                &format!("{{{{ index .HostNetworkPorts {i} }}}}"),
                &port.to_string(),
            );
        }
        assert!(!text.contains("{{"), "{relative}: a template left unfilled");
        let documents: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()));
        documents.into_iter().filter(|d| !d.is_null()).collect()
    }

    /// The pods the base StatefulSets make, in manifest order.
    pub fn base_pods(&self) -> Vec<BasePod> {
        let mut pods = Vec::new();
        for object in self.manifest(&self.base_manifests) {
            if object["kind"] != "StatefulSet" {
                continue;
            }
            let namespace = text(&object["metadata"]["namespace"]);
            let name = text(&object["metadata"]["name"]);
            let template = &object["spec"]["template"];
            let labels: BTreeMap<String, String> =
                serde_json::from_value(template["metadata"]["labels"].clone()).unwrap_or_default();
            let spec = &template["spec"];
            let containers = spec["containers"].as_array().cloned().unwrap_or_default();
            let mut ports = Vec::new();
            let mut serves = Vec::new();
            for container in &containers {
                for port in container["ports"].as_array().into_iter().flatten() {
                    let number = port["containerPort"].as_u64().unwrap_or_default();
                    let protocol = port["protocol"].as_str().unwrap_or("TCP").to_owned();
                    ports.push((
                        text(&port["name"]),
                        u16::try_from(number).unwrap_or_default(),
                        protocol,
                    ));
                }
                serves.extend(served(container));
            }
            serves.sort();
            serves.dedup();
            let replicas = object["spec"]["replicas"].as_u64().unwrap_or(1);
            for ordinal in 0..replicas {
                pods.push(BasePod {
                    namespace: namespace.clone(),
                    name: format!("{name}-{ordinal}"),
                    labels: labels.clone(),
                    ports: ports.clone(),
                    host_network: spec["hostNetwork"] == true,
                    serves: serves.clone(),
                });
            }
        }
        pods
    }

    /// The base cluster as objects for a placement: the Namespaces of the base manifests, a
    /// Node per node (`kubernetes.io/os: linux`), and a Pod per base pod with its node, phase
    /// Running and address, as a kubelet and CNI would report them.
    pub fn base_objects(&self, placement: &Placement) -> Vec<Value> {
        let mut objects: Vec<Value> = self
            .manifest(&self.base_manifests)
            .into_iter()
            .filter(|o| o["kind"] == "Namespace")
            .collect();
        for (name, ip, _) in &placement.nodes {
            objects.push(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", "kubernetes.io/hostname": name}},
                "status": {"addresses": [{"type": "InternalIP", "address": ip.to_string()}, {"type": "Hostname", "address": name}]},
            }));
        }
        for pod in self.base_pods() {
            let key = format!("{}/{}", pod.namespace, pod.name);
            let (Some(ip), Some(node)) = (placement.ip_of(&key), placement.node_of(&key)) else {
                panic!("{key} is not placed");
            };
            let ports: Vec<Value> = pod
                .ports
                .iter()
                .map(|(name, port, protocol)| json!({"name": name, "containerPort": port, "protocol": protocol}))
                .collect();
            objects.push(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"namespace": pod.namespace, "name": pod.name, "labels": pod.labels},
                "spec": {"nodeName": node, "hostNetwork": pod.host_network,
                         "containers": [{"name": "agnhost", "image": "agnhost", "ports": ports}]},
                "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
                           "hostIP": placement.nodes[placement.pods[&key].0].1.to_string()},
            }));
        }
        objects
    }

    /// A probe's port number.
    pub fn port(&self, port: PortRef) -> u16 {
        match port {
            PortRef::Number(number) => number,
            PortRef::HostNetwork { host_network_port } => {
                self.host_network_ports[host_network_port]
            }
        }
    }

    /// The checkpoints of a test: after its manifests are applied and each run of steps that
    /// changes objects, the objects in force and the probes that follow. `ip_of` gives a pod's
    /// address (`ns/name`), for the rules that name one.
    pub fn checkpoints<'a>(
        &self,
        test: &'a Test,
        ip_of: &dyn Fn(&str) -> Option<IpAddr>,
    ) -> Result<Vec<Checkpoint<'a>>, String> {
        let mut objects: BTreeMap<String, Value> = BTreeMap::new();
        for manifest in &test.manifests {
            for object in self.manifest(manifest) {
                objects.insert(object_id(&object), object);
            }
        }
        let mut out: Vec<Checkpoint<'a>> = Vec::new();
        for subtest in &test.subtests {
            let mut changed = true;
            for step in &subtest.steps {
                match step {
                    Step::Probe(probe) => {
                        let fresh =
                            changed || out.last().is_none_or(|c| !std::ptr::eq(c.subtest, subtest));
                        if fresh {
                            out.push(Checkpoint {
                                test,
                                subtest,
                                policies: objects.values().cloned().collect(),
                                probes: Vec::new(),
                            });
                            changed = false;
                        }
                        if let Some(last) = out.last_mut() {
                            last.probes.push(probe);
                        }
                    }
                    other => {
                        apply(&mut objects, other, ip_of)
                            .map_err(|e| format!("{} / {}: {e}", test.name, subtest.name))?;
                        changed = true;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// `kind/namespace/name`.
fn object_id(object: &Value) -> String {
    format!(
        "{}/{}/{}",
        text(&object["kind"]),
        text(&object["metadata"]["namespace"]),
        text(&object["metadata"]["name"])
    )
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// The ports a base container serves: `serve-hostname --tcp|--udp --port N`, `netexec
/// --udp-port N`, and `porter` with `SERVE_SCTP_PORT_N`.
fn served(container: &Value) -> Vec<(String, u16)> {
    let command = container["command"]
        .as_array()
        .map(|c| c.iter().map(text).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let mut out = Vec::new();
    let words: Vec<&str> = command.split_whitespace().collect();
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .and_then(|w| w.parse::<u16>().ok())
    };
    if command.contains("serve-hostname") {
        let protocol = if command.contains("--udp") {
            "UDP"
        } else {
            "TCP"
        };
        if let Some(port) = after("--port") {
            out.push((protocol.to_owned(), port));
        }
    }
    if command.contains("netexec")
        && let Some(port) = after("--udp-port")
    {
        out.push(("UDP".to_owned(), port));
    }
    for env in container["env"].as_array().into_iter().flatten() {
        if let Some(port) = text(&env["name"])
            .strip_prefix("SERVE_SCTP_PORT_")
            .and_then(|p| p.parse::<u16>().ok())
        {
            out.push(("SCTP".to_owned(), port));
        }
    }
    out
}

/// Applies one changing step to the objects.
fn apply(
    objects: &mut BTreeMap<String, Value>,
    step: &Step,
    ip_of: &dyn Fn(&str) -> Option<IpAddr>,
) -> Result<(), String> {
    let rules = |policy: &Value, direction: &str| -> Result<Vec<Value>, String> {
        policy["spec"][direction]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("no {direction} rules"))
    };
    match step {
        Step::Probe(_) => {}
        Step::SwapRules {
            policy,
            direction,
            a,
            b,
        } => {
            let policy = object(objects, policy)?;
            let mut list = rules(policy, direction)?;
            if *a >= list.len() || *b >= list.len() {
                return Err(format!("no {direction}[{a}] or [{b}]"));
            }
            list.swap(*a, *b);
            policy["spec"][direction.as_str()] = Value::Array(list);
        }
        Step::SetAction {
            policy,
            direction,
            rule,
            action,
        } => {
            let policy = object(objects, policy)?;
            let slot = policy["spec"][direction.as_str()]
                .get_mut(*rule)
                .ok_or_else(|| format!("no {direction}[{rule}]"))?;
            slot["action"] = json!(action);
        }
        Step::SetPriority { policy, priority } => {
            object(objects, policy)?["spec"]["priority"] = json!(priority);
        }
        Step::SetProtocols {
            policy,
            direction,
            rule,
            protocols,
        } => {
            let policy = object(objects, policy)?;
            let slot = policy["spec"][direction.as_str()]
                .get_mut(*rule)
                .ok_or_else(|| format!("no {direction}[{rule}]"))?;
            slot["protocols"] = json!(protocols);
        }
        Step::PrependRule {
            policy,
            direction,
            rule,
        } => {
            let text = serde_json::to_string(rule).map_err(|e| e.to_string())?;
            let filled = fill_cidrs(&text, ip_of)?;
            let rule: Value = serde_json::from_str(&filled).map_err(|e| e.to_string())?;
            let policy = object(objects, policy)?;
            let mut list = rules(policy, direction)?;
            list.insert(0, rule);
            policy["spec"][direction.as_str()] = Value::Array(list);
        }
        Step::Delete {
            kind,
            namespace,
            name,
        } => {
            objects
                .remove(&format!("{kind}/{namespace}/{name}"))
                .ok_or_else(|| format!("no {kind} {namespace}/{name} to delete"))?;
        }
    }
    Ok(())
}

/// The ClusterNetworkPolicy `name` among the objects.
fn object<'o>(
    objects: &'o mut BTreeMap<String, Value>,
    name: &str,
) -> Result<&'o mut Value, String> {
    objects
        .get_mut(&format!("ClusterNetworkPolicy//{name}"))
        .ok_or_else(|| format!("no ClusterNetworkPolicy {name}"))
}

/// Replaces each `{{cidr ns/pod}}` with the pod's address and its host mask.
fn fill_cidrs(text: &str, ip_of: &dyn Fn(&str) -> Option<IpAddr>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{cidr ") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{{cidr ".len()..];
        let end = after.find("}}").ok_or("an unterminated {{cidr}}")?;
        let pod = &after[..end];
        let ip = ip_of(pod).ok_or_else(|| format!("no address for {pod}"))?;
        let mask = if ip.is_ipv4() { 32 } else { 128 };
        out.push_str(&format!("{ip}/{mask}"));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The cluster a set of objects describes, loaded the way the agent's manifest source loads
/// them (each object as a JSON document through the core's manifest loader).
pub fn load(objects: &[Value]) -> Result<kube_nftpol_core::manifest::Loaded, String> {
    let mut loader = kube_nftpol_core::manifest::Loader::default();
    for (i, object) in objects.iter().enumerate() {
        let text = serde_json::to_string(object).map_err(|e| e.to_string())?;
        loader
            .add_text(&text, &format!("object-{i}.json"))
            .map_err(|e| format!("{e}: {}", error_sources(&e)))?;
    }
    Ok(loader.finish())
}

fn error_sources(error: &dyn std::error::Error) -> String {
    let mut text = String::new();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The flow of a probe, pod to address as the kernel sees it: from the client pod's address
/// to the target's (a host-network target's is its node's), on the probe's protocol and port.
pub fn flow(
    suite: &Suite,
    probe: &Probe,
    ip_of: &dyn Fn(&str) -> Option<IpAddr>,
) -> Result<kube_nftpol_core::policy::Flow, String> {
    use kube_nftpol_core::model::Protocol;
    use kube_nftpol_core::policy::{Endpoint, Flow};
    let address = |pod: &str| ip_of(pod).ok_or_else(|| format!("no address for {pod}"));
    Ok(Flow {
        source: Endpoint::Ip(address(&probe.from)?),
        destination: Endpoint::Ip(address(&probe.to)?),
        protocol: Protocol::parse_any_case(&probe.protocol)
            .ok_or_else(|| format!("protocol {}", probe.protocol))?,
        port: suite.port(probe.port),
    })
}
