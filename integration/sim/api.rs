//! The simulator against a real kube-apiserver: it plays kubelet and CNI through the API.
//!
//! [`ApiCluster`] starts kube-apiserver and etcd ([`crate::apiserver`]), and makes the API hold
//! exactly the objects of a case ([`ApiCluster::sync`]): namespaces and their labels, pods
//! created with their spec and then given `podIP` and `phase` through the status subresource
//! (what the kubelet does), label changes as patches, and policies created, replaced or
//! deleted. The agents inside the node namespaces reach the API server through a small TCP
//! relay listening on `127.0.0.1:6443` inside each node namespace ([`Relay`]), with a
//! kubeconfig that says so: the agent runs exactly as in a cluster, with `--kubeconfig`.
//!
//! Kubernetes v1.20 (the API server built here) drops `endPort`; cases that use it run through
//! the manifest source only ([`uses_end_port`]). Nodes are created with their addresses in
//! their status, and ClusterNetworkPolicies after the experimental CRD of
//! `deploy/crd/` (which v1.20 takes without its CEL rules) is installed and established.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as networking;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kube_nftpol::source::kubernetes::ClusterPolicyObject;
use serde_json::{Value, json};
use socket2::{Domain, Type};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::Result;
use crate::apiserver::ApiServer;
use crate::setns::InNetns;

/// Where the relay listens inside each node namespace.
pub const RELAY_PORT: u16 = 6443;

/// Namespaces the API server makes itself; never deleted or relabelled.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// A running API server and a client for it.
pub struct ApiCluster {
    /// The API server processes.
    pub server: ApiServer,
    /// A client with the server's kubeconfig (from this process, in the root namespace).
    pub client: Client,
    /// Whether the ClusterNetworkPolicy CRD is installed.
    crd: AtomicBool,
}

/// The CRD the simulator installs: the experimental channel, for node peers.
pub const CRD: &str = "deploy/crd/clusternetworkpolicies.experimental.yaml";

fn fail(what: impl std::fmt::Display) -> impl FnOnce(kube::Error) -> String {
    move |e| format!("{what}: {}", crate::error_chain(&e))
}

impl ApiCluster {
    /// Starts kube-apiserver and etcd and connects to them.
    pub async fn start() -> Result<Self> {
        let server = ApiServer::start()?;
        let client = client(&server.kubeconfig_path()).await?;
        Ok(Self {
            server,
            client,
            crd: AtomicBool::new(false),
        })
    }

    /// The API server's address (`https://127.0.0.1:PORT` in the kubeconfig).
    pub fn addr(&self) -> Result<SocketAddr> {
        let url = self.server.url();
        url.trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("API server URL {url}: {e}"))
    }

    /// Writes the kubeconfig the agents use: the server's, pointed at the relay.
    pub fn agent_kubeconfig(&self, dir: &Path) -> Result<PathBuf> {
        let text = std::fs::read_to_string(self.server.kubeconfig_path())
            .map_err(|e| format!("reading the kubeconfig: {e}"))?;
        let relayed = text.replace(
            &self.server.url(),
            &format!("https://127.0.0.1:{RELAY_PORT}"),
        );
        if relayed == text {
            return Err(format!(
                "the kubeconfig does not name the server {}",
                self.server.url()
            ));
        }
        let path = dir.join("agent-kubeconfig");
        std::fs::write(&path, relayed).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Applies `deploy/rbac.yaml` and writes a kubeconfig like [`Self::agent_kubeconfig`]'s
    /// that authenticates as the agent's service account, so the agent can do exactly what the
    /// ClusterRole grants (the server authorizes with RBAC).
    pub fn service_account_kubeconfig(&self, dir: &Path) -> Result<PathBuf> {
        let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rbac.yaml");
        self.server
            .kubectl(&["apply", "-f", &rbac.display().to_string()])?;
        let path = self.agent_kubeconfig(dir)?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let admin = format!("token: {}", self.server.token());
        let agent = format!("token: {}", self.server.agent_token()?);
        let as_agent = text.replace(&admin, &agent);
        if as_agent == text {
            return Err("the kubeconfig holds no admin token to replace".into());
        }
        std::fs::write(&path, as_agent).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Makes the API hold exactly `items` (Namespace, Pod and NetworkPolicy objects as in a
    /// manifest): creates what is missing, updates what differs, deletes other pods and
    /// policies (force-deleted, as a kubelet confirms a deletion). Namespaces are never
    /// deleted: v1.20 without a controller manager would leave them terminating.
    pub async fn sync(&self, items: &[Value]) -> Result<()> {
        let kind = |v: &Value| v["kind"].as_str().unwrap_or_default().to_owned();
        let mut namespaces = Vec::new();
        let mut pods = Vec::new();
        let mut policies = Vec::new();
        let mut nodes = Vec::new();
        let mut cluster_policies = Vec::new();
        for item in items {
            match kind(item).as_str() {
                "Namespace" => namespaces.push(decode::<core::Namespace>(item)?),
                "Pod" => pods.push(decode::<core::Pod>(item)?),
                "NetworkPolicy" => policies.push(decode::<networking::NetworkPolicy>(item)?),
                "Node" => nodes.push(decode::<core::Node>(item)?),
                "ClusterNetworkPolicy" => {
                    cluster_policies.push(decode::<ClusterPolicyObject>(item)?);
                }
                other => return Err(format!("cannot sync a {other}")),
            }
        }
        self.sync_namespaces(&namespaces).await?;
        self.sync_nodes(&nodes).await?;
        self.sync_pods(&pods).await?;
        self.sync_policies(&policies).await?;
        self.sync_cluster_policies(&cluster_policies).await
    }

    /// Installs the ClusterNetworkPolicy CRD and waits until the server serves it.
    pub fn install_crd(&self) -> Result<()> {
        if self.crd.load(Ordering::Relaxed) {
            return Ok(());
        }
        let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join(CRD);
        self.server
            .kubectl(&["apply", "-f", &crd.display().to_string()])?;
        self.server.kubectl(&[
            "wait",
            "--for=condition=established",
            "--timeout=30s",
            "crd/clusternetworkpolicies.policy.networking.k8s.io",
        ])?;
        self.crd.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn sync_nodes(&self, wanted: &[core::Node]) -> Result<()> {
        let api: Api<core::Node> = Api::all(self.client.clone());
        let existing = api
            .list(&ListParams::default())
            .await
            .map_err(fail("listing nodes"))?;
        let mut current: BTreeMap<String, core::Node> = existing
            .items
            .into_iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, n)))
            .collect();
        for node in wanted {
            let name = node.metadata.name.clone().unwrap_or_default();
            match current.remove(&name) {
                None => {
                    let mut create = node.clone();
                    create.status = None;
                    api.create(&PostParams::default(), &create)
                        .await
                        .map_err(fail(format!("creating node {name}")))?;
                }
                Some(have) => {
                    if let Some(patch) = labels_patch(&have.metadata.labels, &node.metadata.labels)
                    {
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                            .await
                            .map_err(fail(format!("labelling node {name}")))?;
                    }
                }
            }
            let addresses = node.status.as_ref().and_then(|s| s.addresses.clone());
            let patch = json!({ "status": { "addresses": addresses } });
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(fail(format!("writing the addresses of node {name}")))?;
        }
        for name in current.into_keys() {
            api.delete(&name, &DeleteParams::default())
                .await
                .map_err(fail(format!("deleting node {name}")))?;
        }
        Ok(())
    }

    async fn sync_cluster_policies(&self, wanted: &[ClusterPolicyObject]) -> Result<()> {
        if wanted.is_empty() && !self.crd.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.install_crd()?;
        let api: Api<ClusterPolicyObject> = Api::all(self.client.clone());
        let existing = api
            .list(&ListParams::default())
            .await
            .map_err(fail("listing clusternetworkpolicies"))?;
        let mut current: BTreeMap<String, ClusterPolicyObject> = existing
            .items
            .into_iter()
            .filter_map(|p| Some((p.0.metadata.name.clone()?, p)))
            .collect();
        for policy in wanted {
            let name = policy.0.metadata.name.clone().unwrap_or_default();
            match current.remove(&name) {
                None => {
                    api.create(&PostParams::default(), policy)
                        .await
                        .map_err(fail(format!("creating clusternetworkpolicy {name}")))?;
                }
                Some(have) if have.0.spec == policy.0.spec => {}
                Some(have) => {
                    let mut replace = policy.clone();
                    replace.0.metadata.resource_version = have.0.metadata.resource_version;
                    api.replace(&name, &PostParams::default(), &replace)
                        .await
                        .map_err(fail(format!("replacing clusternetworkpolicy {name}")))?;
                }
            }
        }
        for name in current.into_keys() {
            api.delete(&name, &DeleteParams::default())
                .await
                .map_err(fail(format!("deleting clusternetworkpolicy {name}")))?;
        }
        Ok(())
    }

    async fn sync_namespaces(&self, wanted: &[core::Namespace]) -> Result<()> {
        let api: Api<core::Namespace> = Api::all(self.client.clone());
        let existing = api
            .list(&ListParams::default())
            .await
            .map_err(fail("listing namespaces"))?;
        let by_name: BTreeMap<String, core::Namespace> = existing
            .items
            .into_iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, n)))
            .collect();
        for namespace in wanted {
            let name = namespace.metadata.name.clone().unwrap_or_default();
            if SYSTEM_NAMESPACES.contains(&name.as_str()) {
                continue;
            }
            match by_name.get(&name) {
                None => {
                    api.create(&PostParams::default(), namespace)
                        .await
                        .map_err(fail(format!("creating namespace {name}")))?;
                }
                Some(current) => {
                    let patch = labels_patch(&current.metadata.labels, &namespace.metadata.labels);
                    if let Some(patch) = patch {
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                            .await
                            .map_err(fail(format!("labelling namespace {name}")))?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn sync_pods(&self, wanted: &[core::Pod]) -> Result<()> {
        let all: Api<core::Pod> = Api::all(self.client.clone());
        let existing = all
            .list(&ListParams::default())
            .await
            .map_err(fail("listing pods"))?;
        let key = |p: &core::Pod| {
            (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
            )
        };
        let mut current: BTreeMap<(String, String), core::Pod> =
            existing.items.into_iter().map(|p| (key(&p), p)).collect();
        for pod in wanted {
            let (namespace, name) = key(pod);
            let api = Api::<core::Pod>::namespaced(self.client.clone(), &namespace);
            // Node and container ports cannot change on a pod: recreate it.
            let fixed = |p: &core::Pod| {
                let spec = p.spec.as_ref();
                let ports: Vec<_> = spec
                    .iter()
                    .flat_map(|s| &s.containers)
                    .map(|c| c.ports.clone().unwrap_or_default())
                    .collect();
                (spec.and_then(|s| s.node_name.clone()), ports)
            };
            let have = current.remove(&(namespace.clone(), name.clone()));
            let have = match have {
                Some(have) if fixed(&have) != fixed(pod) => {
                    self.force_delete(&namespace, &name).await?;
                    None
                }
                other => other,
            };
            match have {
                None => {
                    let mut create = pod.clone();
                    create.status = None;
                    api.create(&PostParams::default(), &create)
                        .await
                        .map_err(fail(format!("creating pod {namespace}/{name}")))?;
                    self.set_status(&namespace, &name, pod).await?;
                }
                Some(have) => {
                    if let Some(patch) = labels_patch(&have.metadata.labels, &pod.metadata.labels) {
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                            .await
                            .map_err(fail(format!("labelling pod {namespace}/{name}")))?;
                    }
                    let ip = |p: &core::Pod| p.status.as_ref().and_then(|s| s.pod_ip.clone());
                    if ip(&have) != ip(pod) {
                        self.set_status(&namespace, &name, pod).await?;
                    }
                }
            }
        }
        for (namespace, name) in current.into_keys() {
            self.force_delete(&namespace, &name).await?;
        }
        Ok(())
    }

    /// Creates one pod (a manifest object with status) as the kubelet would: the object, then
    /// its status unless `with_status` is false (a pod whose IP is not reported yet).
    pub async fn create_pod(&self, item: &Value, with_status: bool) -> Result<()> {
        let pod: core::Pod = decode(item)?;
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut create = pod.clone();
        create.status = None;
        Api::<core::Pod>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &create)
            .await
            .map_err(fail(format!("creating pod {namespace}/{name}")))?;
        if with_status {
            self.set_status(&namespace, &name, &pod).await?;
        }
        Ok(())
    }

    /// Writes `podIP`, `podIPs` and `phase` from `pod` through the status subresource.
    pub async fn set_status(&self, namespace: &str, name: &str, pod: &core::Pod) -> Result<()> {
        let api = Api::<core::Pod>::namespaced(self.client.clone(), namespace);
        let status = pod.status.clone().unwrap_or_default();
        let patch = json!({ "status": {
            "phase": status.phase,
            "podIP": status.pod_ip,
            "podIPs": status.pod_ips,
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(fail(format!(
                "writing the status of pod {namespace}/{name}"
            )))?;
        Ok(())
    }

    /// Deletes a pod at once, as a kubelet does once its containers are gone.
    pub async fn force_delete(&self, namespace: &str, name: &str) -> Result<()> {
        let api = Api::<core::Pod>::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        api.delete(name, &params)
            .await
            .map_err(fail(format!("deleting pod {namespace}/{name}")))?;
        Ok(())
    }

    async fn sync_policies(&self, wanted: &[networking::NetworkPolicy]) -> Result<()> {
        let all: Api<networking::NetworkPolicy> = Api::all(self.client.clone());
        let existing = all
            .list(&ListParams::default())
            .await
            .map_err(fail("listing policies"))?;
        let key = |p: &networking::NetworkPolicy| {
            (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
            )
        };
        let mut current: BTreeMap<(String, String), networking::NetworkPolicy> =
            existing.items.into_iter().map(|p| (key(&p), p)).collect();
        for policy in wanted {
            let (namespace, name) = key(policy);
            let api = Api::<networking::NetworkPolicy>::namespaced(self.client.clone(), &namespace);
            match current.remove(&(namespace.clone(), name.clone())) {
                None => {
                    api.create(&PostParams::default(), policy)
                        .await
                        .map_err(fail(format!("creating policy {namespace}/{name}")))?;
                }
                Some(have) if have.spec == policy.spec => {}
                Some(have) => {
                    let mut replace = policy.clone();
                    replace.metadata.resource_version = have.metadata.resource_version;
                    api.replace(&name, &PostParams::default(), &replace)
                        .await
                        .map_err(fail(format!("replacing policy {namespace}/{name}")))?;
                }
            }
        }
        for (namespace, name) in current.into_keys() {
            let api = Api::<networking::NetworkPolicy>::namespaced(self.client.clone(), &namespace);
            api.delete(&name, &DeleteParams::default())
                .await
                .map_err(fail(format!("deleting policy {namespace}/{name}")))?;
        }
        Ok(())
    }
}

/// A client for the server a kubeconfig names.
pub async fn client(kubeconfig: &Path) -> Result<Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("reading {}: {e}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .map_err(|e| format!("kubeconfig {}: {e}", kubeconfig.display()))?;
    Client::try_from(config).map_err(|e| format!("client: {e}"))
}

fn decode<T: serde::de::DeserializeOwned>(item: &Value) -> Result<T> {
    serde_json::from_value(item.clone()).map_err(|e| format!("{item}: {e}"))
}

/// A merge patch turning `current` labels into `wanted` (removed keys set to null), or `None`
/// when they are equal.
fn labels_patch(
    current: &Option<BTreeMap<String, String>>,
    wanted: &Option<BTreeMap<String, String>>,
) -> Option<Value> {
    let empty = BTreeMap::new();
    let current = current.as_ref().unwrap_or(&empty);
    let wanted = wanted.as_ref().unwrap_or(&empty);
    if current == wanted {
        return None;
    }
    let mut labels = serde_json::Map::new();
    for key in current.keys().filter(|k| !wanted.contains_key(*k)) {
        labels.insert(key.clone(), Value::Null);
    }
    for (key, value) in wanted {
        labels.insert(key.clone(), Value::String(value.clone()));
    }
    Some(json!({ "metadata": { "labels": labels } }))
}

/// Whether a policy uses `endPort`, which the v1.20 API server drops.
pub fn uses_end_port(policy: &Value) -> bool {
    policy.to_string().contains("\"endPort\"")
}

/// A TCP relay from `127.0.0.1:RELAY_PORT` inside a node namespace to the API server in the
/// root namespace. Aborted on drop.
pub struct Relay {
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens inside `netns` and forwards every connection to `target`.
    pub async fn start(netns: &str, target: SocketAddr) -> Result<Self> {
        let inside = InNetns::enter(netns).map_err(|e| format!("entering {netns}: {e}"))?;
        let socket = inside
            .socket(Domain::IPV4, Type::STREAM, None)
            .await
            .map_err(|e| format!("relay socket in {netns}: {e}"))?;
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, RELAY_PORT));
        socket
            .set_reuse_address(true)
            .and_then(|()| socket.bind(&addr.into()))
            .and_then(|()| socket.listen(128))
            .map_err(|e| format!("relay listen in {netns}: {e}"))?;
        let listener = TcpListener::from_std(socket.into())
            .map_err(|e| format!("relay listener in {netns}: {e}"))?;
        drop(inside);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // The API server down: the agent sees its connection closed, as in a
                    // cluster whose API server is gone.
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Self { task })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
