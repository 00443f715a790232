//! The simulated cluster: two nodes, one namespace per pod with its servers, kube-proxy's
//! DNAT, and the manifest directory the enforcer reads.
//!
//! Placement: pods alternate between the nodes in the order the scenario lists them (x/a on
//! node-1, x/b on node-2, ...), so probes cross nodes and stay on one node alike. Pods keep
//! the IPs the conformance data gives them, all in 10.244.1.0/24 whatever their node; the pods
//! of node-2 are reached through per-pod /32 routes via node-2's IP (see [`crate::links`]).
//! Routing is what carries packets, so this is as realistic as kindnet's per-node CIDRs, and
//! the ipBlock CIDRs the conformance cases were computed for stay valid.
//!
//! The pods (names, IPs, placement) are fixed for a cluster's life; a scenario
//! ([`Case`]) changes namespace labels, pod labels, container ports and policies, written to
//! the manifest directory by [`Cluster::write_manifests`]. The cluster does not enforce
//! anything itself (that is [`crate::enforcer`]).
//!
//! Everything is torn down on drop, also when a test panics: servers stop, the threads inside
//! the namespaces leave, and the namespaces are deleted with whatever runs in them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use kube_nftpol::Snapshot;
use kube_nftpol::compile::{self, Options, Ruleset};
use serde_json::{Value, json};

use crate::conformance_data::{Case, CasePod};
use crate::netns::Netns;
use crate::servers::{PORTS, Servers};
use crate::setns::InNetns;
use crate::{NETNS_PREFIX, Result, kube_proxy, links};

/// The nodes: name, node IP, and the third octet of its pod CIDR (`10.244.N.0/24`).
pub const NODES: [(&str, Ipv4Addr, u8); 2] = [
    ("node-1", Ipv4Addr::new(172, 18, 0, 2), 1),
    ("node-2", Ipv4Addr::new(172, 18, 0, 3), 2),
];

/// Where a pod lives and how it is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod IP.
    pub ip: Ipv4Addr,
    /// The ClusterIP of the pod's Service.
    pub service_ip: Ipv4Addr,
    /// Index into [`NODES`].
    pub node: usize,
}

impl PodPlan {
    /// `ns/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The plan for a scenario's pods: alternate nodes, IPv4 only.
pub fn plan(pods: &[CasePod]) -> Result<Vec<PodPlan>> {
    pods.iter()
        .enumerate()
        .map(|(i, pod)| {
            let v4 = |ip: IpAddr| match ip {
                IpAddr::V4(ip) => Ok(ip),
                IpAddr::V6(ip) => Err(format!("{}/{}: IPv6 {ip} unsupported", pod.ns, pod.name)),
            };
            Ok(PodPlan {
                namespace: pod.ns.clone(),
                name: pod.name.clone(),
                ip: v4(pod.ip)?,
                service_ip: v4(pod.service_ip)?,
                node: i % NODES.len(),
            })
        })
        .collect()
}

/// The network namespace of a pod: `<cluster>-<ns>-<pod>`, or `<cluster>-<veth>` when that
/// would pass the 255 bytes a file name in `/run/netns` may have (a 63-character namespace with
/// a 253-character pod name); the veth name is unique in the cluster.
fn pod_netns_name(cluster: &str, namespace: &str, pod: &str, veth: &str) -> String {
    let name = format!("{cluster}-{namespace}-{pod}");
    if name.len() <= 200 {
        name
    } else {
        format!("{cluster}-{veth}")
    }
}

/// A simulated node. Fields drop in order: the thread inside leaves before the namespace goes.
#[derive(Debug)]
pub struct Node {
    /// The Kubernetes node name (`node-1`).
    pub name: &'static str,
    /// The node IP.
    pub ip: Ipv4Addr,
    /// A thread inside the node's namespace.
    pub inside: InNetns,
    /// The node's namespace.
    pub netns: Netns,
}

/// A simulated pod. Fields drop in order: servers stop, the thread inside leaves, then the
/// namespace (and with it the veth pair) goes.
#[derive(Debug)]
pub struct SimPod {
    /// Where it lives.
    pub plan: PodPlan,
    /// `ns/name`, what its servers answer with.
    pub identity: String,
    /// The host side of its veth, on its node.
    pub veth: String,
    /// Its servers.
    pub servers: Servers,
    /// A thread inside the pod's namespace.
    pub inside: InNetns,
    /// The pod's namespace, held for its `Drop`.
    _netns: Netns,
}

impl SimPod {
    /// The name of the pod's network namespace.
    pub fn netns_name(&self) -> &str {
        self._netns.name()
    }
}

/// The whole simulated cluster. Pods go before nodes on drop.
#[derive(Debug)]
pub struct Cluster {
    /// The prefix of every namespace of this cluster (`knp-sim-<pid>-<n>`).
    pub id: String,
    /// The pods, in plan order.
    pub pods: Vec<SimPod>,
    /// The nodes, in [`NODES`] order.
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Builds the nodes and pods of `plan`, starts the servers and loads kube-proxy's table.
    pub async fn build(plan: Vec<PodPlan>) -> Result<Self> {
        Self::build_serving(plan, |_| (PORTS.to_vec(), PORTS.to_vec())).await
    }

    /// [`Self::build`], each pod serving the TCP and UDP ports `serves` gives it.
    pub async fn build_serving(
        plan: Vec<PodPlan>,
        serves: impl Fn(&PodPlan) -> (Vec<u16>, Vec<u16>),
    ) -> Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "{NETNS_PREFIX}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix("knp-sim-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        std::fs::create_dir(dir.path().join("manifests"))
            .and_then(|()| std::fs::create_dir(dir.path().join("staging")))
            .map_err(|e| format!("cannot create the manifest directory: {e}"))?;

        let mut nodes = Vec::new();
        for (name, ip, _) in NODES {
            let netns = Netns::named(format!("{id}-{name}"));
            links::setup_node(netns.name())?;
            let inside = InNetns::enter(netns.name()).map_err(|e| e.to_string())?;
            nodes.push(Node {
                name,
                ip,
                inside,
                netns,
            });
        }
        let [n1, n2] = [&nodes[0], &nodes[1]];
        links::link_nodes(n1.netns.name(), n1.ip, n2.netns.name(), n2.ip)?;
        for (node, peer) in [(0, 1), (1, 0)] {
            let peer_cidr = format!("10.244.{}.0/24", NODES[peer].2);
            links::route_via(nodes[node].netns.name(), &peer_cidr, nodes[peer].ip)?;
        }

        let mut pods: Vec<SimPod> = Vec::new();
        for p in plan {
            let identity = p.key();
            let node = nodes
                .get(p.node)
                .ok_or_else(|| format!("{identity}: no node {}", p.node))?;
            let veth = links::veth_name(&p.namespace, &p.name);
            if let Some(other) = pods.iter().find(|o| o.veth == veth || o.plan.ip == p.ip) {
                return Err(format!("{identity} clashes with {}", other.identity));
            }
            let netns = Netns::named(pod_netns_name(&id, &p.namespace, &p.name, &veth));
            let gateway = Ipv4Addr::new(10, 244, NODES[p.node].2, 1);
            links::attach_pod(node.netns.name(), netns.name(), &veth, p.ip, gateway)?;
            for (_, other) in nodes.iter().enumerate().filter(|(i, _)| *i != p.node) {
                links::route_via(other.netns.name(), &format!("{}/32", p.ip), node.ip)?;
            }
            let inside = InNetns::enter(netns.name()).map_err(|e| e.to_string())?;
            let (tcp, udp) = serves(&p);
            let servers =
                Servers::start_serving(&inside, p.ip, Ipv4Addr::UNSPECIFIED, &identity, &tcp, &udp)
                    .await?;
            pods.push(SimPod {
                plan: p,
                identity,
                veth,
                servers,
                inside,
                _netns: netns,
            });
        }

        let services: Vec<(Ipv4Addr, Ipv4Addr)> = pods
            .iter()
            .map(|p| (p.plan.service_ip, p.plan.ip))
            .collect();
        for node in &nodes {
            kube_proxy::install(node.netns.name(), &services).await?;
        }
        Ok(Self {
            id,
            pods,
            nodes,
            dir,
        })
    }

    /// The pod `ns/name`.
    pub fn pod(&self, key: &str) -> Option<&SimPod> {
        self.pods.iter().find(|p| p.identity == key)
    }

    /// The directory the enforcer reads manifests from.
    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    /// A scratch directory for the enforcer (logs, scripts).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Fails unless the case has exactly this cluster's pods (names, IPs, Services, order).
    pub fn check_case(&self, case: &Case) -> Result<()> {
        let wanted = plan(&case.pods)?;
        let have: Vec<&PodPlan> = self.pods.iter().map(|p| &p.plan).collect();
        if wanted.iter().collect::<Vec<_>>() != have {
            return Err(format!(
                "{}: its pods differ from the cluster's (one cluster serves every case)",
                case.name
            ));
        }
        Ok(())
    }

    /// The case's cluster state with this cluster's placement.
    pub fn snapshot(&self, case: &Case) -> Snapshot {
        case.snapshot_with(|i| {
            let node = self.pods.get(i).map_or(0, |p| p.plan.node);
            NODES[node].0.to_owned()
        })
    }

    /// The ruleset each node should hold for the case, in node order.
    pub fn expected(&self, case: &Case, with_veths: bool) -> Vec<Ruleset> {
        let snapshot = self.snapshot(case);
        let options = Options::default();
        (0..self.nodes.len())
            .map(|i| {
                let node = self.nodes[i].name;
                let interfaces = self.interfaces(i, with_veths);
                compile::compile_with_interfaces(&snapshot, node, &interfaces, &options)
            })
            .collect()
    }

    /// The veth of each pod of node `index`, as the agent learns them from the node's routes
    /// (its anti-spoofing sets); none without `with_veths`.
    pub fn interfaces(&self, index: usize, with_veths: bool) -> kube_nftpol::model::PodInterfaces {
        self.pods
            .iter()
            .filter(|p| with_veths && p.plan.node == index)
            .map(|p| (IpAddr::V4(p.plan.ip), p.veth.clone()))
            .collect()
    }

    /// Writes the case as manifests (one JSON `List`: namespaces, pods with node, IP and
    /// container ports, policies), replacing the previous ones in one rename so a reader never
    /// sees half a file.
    pub fn write_manifests(&self, case: &Case) -> Result<()> {
        self.write_objects(&self.objects(case))
            .map_err(|e| format!("{}: {e}", case.name))
    }

    /// Writes objects as the manifests (one JSON `List`), replacing the previous ones in one
    /// rename.
    pub fn write_objects(&self, objects: &[Value]) -> Result<()> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let staged = self.dir.path().join("staging").join("cluster.json");
        let text = serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?;
        std::fs::write(&staged, text)
            .and_then(|()| std::fs::rename(&staged, self.manifests().join("cluster.json")))
            .map_err(|e| format!("cannot write the manifests: {e}"))
    }

    /// The Namespace, Pod (with status) and NetworkPolicy objects of `case` on this cluster.
    pub fn objects(&self, case: &Case) -> Vec<Value> {
        let mut items: Vec<Value> = case
            .namespaces
            .iter()
            .map(|(name, labels)| {
                let annotations = case.namespace_annotations.get(name);
                json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": name, "labels": labels, "annotations": annotations}})
            })
            .collect();
        for (pod, sim) in case.pods.iter().zip(&self.pods) {
            let ports: Vec<Value> = pod
                .ports
                .iter()
                .map(|p| json!({"name": p.name, "containerPort": p.port, "protocol": p.protocol}))
                .collect();
            items.push(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"namespace": pod.ns, "name": pod.name, "labels": pod.labels},
                "spec": {
                    "nodeName": NODES[sim.plan.node].0,
                    "containers": [{"name": "server", "image": "agnhost", "ports": ports}],
                },
                "status": {
                    "phase": "Running",
                    "podIP": pod.ip.to_string(),
                    "podIPs": [{"ip": pod.ip.to_string()}],
                },
            }));
        }
        items.extend(case.policies.iter().cloned());
        items
    }
}
