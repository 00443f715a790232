//! The churn suite: 1,000 pods created and deleted with IP reuse while policies change, through a real
//! kube-apiserver, under steady probes: no probe is wrongly allowed, and afterwards each
//! node's table is exactly what the compiler makes of the final cluster.
//!
//! The cluster: the conformance pods (x/a ... z/c) and four slots (x/s0 on node-2, x/s1 on
//! node-1, x/s2 on node-2, x/s3 on node-1: real pod namespaces with servers, IPs 10.244.1.41
//! to .44), agents on both nodes reading the API ([`Mode::ApiAgent`]). The harness is the
//! only writer to the API, one call at a time, a step every [`STEP`] for [`PODS`] steps; each
//! step creates one pod (without status, then its IP and phase through the status subresource,
//! as the kubelet does), and may delete others and change a policy:
//! - one step in [`SLOT_EVERY`] gives a slot a new identity: the slot's pod is deleted and a
//!   new pod (random namespace among x, y, z, random `role` label) claims the slot's IP behind
//!   the same veth, so the probes to and from slots hit addresses whose owner keeps changing;
//! - the other steps create an API-only pod (on node-1, node-2 or a node-3 that does not
//!   exist) with an IP from a pool of 16 ([`POOL`]) while at most 12 live, deleting one at
//!   random when 12 do, so addresses come back within a few steps;
//! - a deletion is graceful one time in four (the pod stays terminating for a few steps, its
//!   IP already free for the next pod: two pods claim it, the live one wins), otherwise
//!   immediate (grace period 0, as a kubelet confirms it);
//! - one step in [`POLICY_EVERY`] creates, changes or deletes one of five policies whose
//!   peers and targets are the slots' and churned pods' labels.
//!
//! The test keeps its own model of what the API holds after every write (a version: the
//! instants the call started and returned, and the snapshot after it, with IP conflicts
//! resolved by the documented rule (`docs/agent.md`, "Behaviour with the Kubernetes API"): a terminating pod loses the address to a live one, and
//! among equals the latest claim wins). Fifteen TCP flows between real pods (slots included,
//! by pod IP and Service IP) are probed all along ([`steady`]). The churn is drawn from a seeded
//! generator (`KNP_CHURN_SEED` repeats a run).
//!
//! **When a probe counts as wrongly allowed.** A probe ran from `start` to `end`. The policy
//! "at the start" is any version that may have been the one the agent enforced at `start`:
//! the last version written completely before `start - ALLOWANCE` and every version after it,
//! where [`ALLOWANCE`] is the time an agent is given to hear of a write and program it
//! (printed with how often it was needed). The policy "at the end" is any version whose write
//! had begun by `end`. The probe is wrong only if it connected although the evaluator
//! (`policy::evaluate`) denies the flow in every version from the first at its start to the
//! last at its end: then no state the cluster was in, or had just left, allows it. Denied
//! probes are never counted wrong (a starting pod, a rebinding address and a late change all
//! fail closed); those denied although every version of their window allows them are counted
//! and the count printed.
//!
//! **Afterwards.** The test waits for each node's table to equal, exactly
//! ([`nft::exact_differences`]), the compiler's ruleset for the final model (compiled here with
//! `kube_nftpol::compile`, loaded into a scratch namespace and listed back): the same chains,
//! rules and their expressions, and set and map elements, no stale element.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube_nftpol::compile::{self, Options};
use kube_nftpol::model::{Protocol, Snapshot};
use kube_nftpol::policy::{Endpoint, Flow as PolicyFlow, evaluate};
use kube_nftpol::source::manifests;
use serde_json::{Value, json};

use crate::api::ApiCluster;
use crate::cluster::{self, Cluster, NODES};
use crate::conformance_data::{Case, CasePod, CasePort};
use crate::enforcer::{Enforcer, Mode};
use crate::probes::{self, Outcome, Via};
use crate::rng::Rng;
use crate::steady::{self, Attempt};
use crate::{Result, begin, nft, runtime, say};

/// Pods created in all.
const PODS: usize = 1000;
/// One step (one pod created) at most this often.
const STEP: Duration = Duration::from_millis(80);
/// One step in this many renews a slot's identity; the others churn API-only pods.
const SLOT_EVERY: u64 = 5;
/// One step in this many changes a policy.
const POLICY_EVERY: u64 = 8;
/// One deletion in this many is graceful (the pod terminates for a few steps).
const GRACEFUL_EVERY: u64 = 4;
/// API-only pods live at once, at most.
const API_ONLY_LIVE: usize = 12;
/// The API-only pods' addresses: 10.244.1.100 to .115.
const POOL: std::ops::RangeInclusive<u8> = 100..=115;
/// How long an agent is given to hear of a write and program it (see the module doc).
const ALLOWANCE: Duration = Duration::from_secs(1);
/// How long the tables may take to reach the final state once the writes stop.
const CONVERGE: Duration = Duration::from_secs(30);
/// The churned labels: `role` of slots and API-only pods.
const ROLES: [&str; 3] = ["client", "server", "other"];
const NAMESPACES: [&str; 3] = ["x", "y", "z"];

/// The slots: real pods whose API identity churns.
const SLOTS: [&str; 4] = ["s0", "s1", "s2", "s3"];

/// The probed flows: `(from, to, via, port)`, `ns/name` as the cluster names its pods.
const FLOWS: [(&str, &str, Via, u16); 15] = [
    ("x/s0", "x/a", Via::PodIp, 80),
    ("x/s1", "x/a", Via::PodIp, 80),
    ("x/s2", "x/a", Via::ServiceIp, 80),
    ("x/s3", "x/a", Via::PodIp, 80),
    ("x/c", "x/s0", Via::PodIp, 80),
    ("x/c", "x/s1", Via::PodIp, 80),
    ("x/c", "x/s2", Via::ServiceIp, 80),
    ("x/c", "x/s3", Via::PodIp, 80),
    ("z/b", "x/s1", Via::PodIp, 80),
    ("z/b", "x/s3", Via::PodIp, 80),
    ("y/b", "x/a", Via::PodIp, 80),
    ("z/a", "x/a", Via::ServiceIp, 80),
    ("x/b", "y/a", Via::PodIp, 80),
    ("y/c", "z/b", Via::PodIp, 81),
    ("x/s2", "y/b", Via::ServiceIp, 80),
];

type Key = (String, String);

/// What the API holds, as the harness wrote it.
#[derive(Default)]
struct World {
    namespaces: Vec<Value>,
    pods: BTreeMap<Key, Value>,
    /// The order in which pods were given their IP (the latest claim wins a conflict).
    claims: BTreeMap<Key, u64>,
    next_claim: u64,
    policies: BTreeMap<Key, Value>,
}

impl World {
    /// The cluster the API holds, as the agent must see it.
    fn snapshot(&self) -> Result<Snapshot> {
        let items: Vec<&Value> = self
            .namespaces
            .iter()
            .chain(self.pods.values())
            .chain(self.policies.values())
            .collect();
        let text = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
        let loaded =
            manifests::load_str(&text, "churn.json").map_err(|e| format!("the model: {e}"))?;
        let mut snapshot = loaded.snapshot;
        // An IP claimed twice: a live pod beats a terminating one, then the latest claim.
        let mut claimants: BTreeMap<IpAddr, Vec<(bool, u64, kube_nftpol::model::ObjectKey)>> =
            BTreeMap::new();
        for pod in snapshot.pods().filter(|p| p.is_policy_endpoint()) {
            let key = (pod.key.namespace.clone(), pod.key.name.clone());
            let claim = self.claims.get(&key).copied().unwrap_or(0);
            for ip in &pod.ips {
                claimants
                    .entry(*ip)
                    .or_default()
                    .push((!pod.terminating, claim, pod.key.clone()));
            }
        }
        for (ip, mut pods) in claimants.into_iter().filter(|(_, p)| p.len() > 1) {
            pods.sort();
            pods.pop();
            for (_, _, loser) in pods {
                if let Some(pod) = snapshot.pod(&loser) {
                    let mut pod = pod.clone();
                    pod.ips.retain(|owned| *owned != ip);
                    snapshot.upsert_pod(pod);
                }
            }
        }
        Ok(snapshot)
    }
}

/// The API's content after one write.
struct Version {
    started: Instant,
    ended: Instant,
    snapshot: Snapshot,
}

/// What the churn did, for the report.
#[derive(Default)]
struct Tally {
    created: usize,
    slot_identities: usize,
    deleted_now: usize,
    deleted_gracefully: usize,
    ip_reuses: usize,
    policy_changes: usize,
    writes: usize,
    took: Duration,
}

/// The pods' addresses used so far, to count reuses.
struct Reuse(std::collections::BTreeSet<Ipv4Addr>);

/// Writes to the API and records a version after each write.
struct Writer<'a> {
    api: &'a ApiCluster,
    world: World,
    versions: Vec<Version>,
    tally: Tally,
}

impl Writer<'_> {
    fn record(&mut self, started: Instant) -> Result<()> {
        let ended = Instant::now();
        self.tally.writes += 1;
        let snapshot = self.world.snapshot()?;
        self.versions.push(Version {
            started,
            ended,
            snapshot,
        });
        Ok(())
    }

    /// Creates a pod as the kubelet would: the object, then its IP and phase.
    async fn create(&mut self, item: Value) -> Result<()> {
        let key = key_of(&item);
        let mut bare = item.clone();
        if let Some(object) = bare.as_object_mut() {
            object.remove("status");
        }
        let started = Instant::now();
        self.api.create_pod(&item, false).await?;
        self.world.pods.insert(key.clone(), bare);
        self.record(started)?;
        let pod: core::Pod = serde_json::from_value(item.clone()).map_err(|e| e.to_string())?;
        let started = Instant::now();
        self.api.set_status(&key.0, &key.1, &pod).await?;
        self.world.next_claim += 1;
        self.world.claims.insert(key.clone(), self.world.next_claim);
        self.world.pods.insert(key, item);
        self.tally.created += 1;
        self.record(started)
    }

    /// Deletes a pod at once.
    async fn delete_now(&mut self, key: &Key) -> Result<()> {
        let started = Instant::now();
        self.api.force_delete(&key.0, &key.1).await?;
        self.world.pods.remove(key);
        self.world.claims.remove(key);
        self.tally.deleted_now += 1;
        self.record(started)
    }

    /// Deletes a pod gracefully: it stays, terminating, until [`Self::delete_now`].
    async fn delete_gracefully(&mut self, key: &Key) -> Result<()> {
        let api = Api::<core::Pod>::namespaced(self.api.client.clone(), &key.0);
        let params = DeleteParams {
            grace_period_seconds: Some(300),
            ..DeleteParams::default()
        };
        let started = Instant::now();
        let answer = api
            .delete(&key.1, &params)
            .await
            .map_err(|e| format!("deleting {}/{} gracefully: {e}", key.0, key.1))?;
        let pod = answer
            .left()
            .ok_or_else(|| format!("{}/{} went at once", key.0, key.1))?;
        let mut value = serde_json::to_value(&pod).map_err(|e| e.to_string())?;
        value["apiVersion"] = json!("v1");
        value["kind"] = json!("Pod");
        self.world.pods.insert(key.clone(), value);
        self.tally.deleted_gracefully += 1;
        self.record(started)
    }

    /// Puts policy `index` in `state` (0: absent, 1 or 2: a variant).
    async fn set_policy(&mut self, index: usize, state: usize) -> Result<()> {
        let wanted = policy(index, state);
        let (namespace, name) = POLICY_NAMES[index];
        let key = (namespace.to_owned(), name.to_owned());
        let api = Api::<NetworkPolicy>::namespaced(self.api.client.clone(), namespace);
        let fail = |what: &str| {
            let what = format!("{what} policy {namespace}/{name}");
            move |e: kube::Error| format!("{what}: {e}")
        };
        let started;
        match (&wanted, self.world.policies.contains_key(&key)) {
            (None, false) => return Ok(()),
            (None, true) => {
                started = Instant::now();
                api.delete(name, &DeleteParams::default())
                    .await
                    .map_err(fail("deleting"))?;
            }
            (Some(value), false) => {
                let object: NetworkPolicy =
                    serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
                started = Instant::now();
                api.create(&PostParams::default(), &object)
                    .await
                    .map_err(fail("creating"))?;
            }
            (Some(value), true) => {
                let mut object: NetworkPolicy =
                    serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
                let have = api.get(name).await.map_err(fail("reading"))?;
                object.metadata.resource_version = have.metadata.resource_version;
                started = Instant::now();
                api.replace(name, &PostParams::default(), &object)
                    .await
                    .map_err(fail("replacing"))?;
            }
        }
        match wanted {
            Some(value) => self.world.policies.insert(key, value),
            None => self.world.policies.remove(&key),
        };
        self.tally.policy_changes += 1;
        self.record(started)
    }
}

fn key_of(item: &Value) -> Key {
    let field = |name: &str| {
        item["metadata"][name]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (field("namespace"), field("name"))
}

/// A pod object with its status, serving TCP 80 and 81 as every simulated pod does.
fn pod_object(key: &Key, role: &str, node: &str, ip: Ipv4Addr) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": key.0, "name": key.1, "labels": {"role": role, "pod": "churn"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "server", "image": "agnhost", "ports": [
                {"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"}]}],
        },
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]},
    })
}

const POLICY_NAMES: [(&str, &str); 5] = [
    ("x", "a-from-clients"),
    ("y", "deny-ingress"),
    ("z", "b-to-servers"),
    ("x", "churn-from-z"),
    ("z", "clients-egress"),
];

/// Policy `index` in `state`: `None` for 0 (absent), else one of two variants.
fn policy(index: usize, state: usize) -> Option<Value> {
    if state == 0 {
        return None;
    }
    let second = state == 2;
    let (namespace, name) = POLICY_NAMES[index];
    let role = |r: &str| json!({"matchLabels": {"role": r}});
    let spec = match index {
        // x/a takes TCP 80 from clients anywhere (or from servers, on 81 too).
        0 => json!({
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{
                "from": [{"namespaceSelector": {}, "podSelector": role(if second { "server" } else { "client" })}],
                "ports": if second { json!([{"port": 80}, {"port": 81}]) } else { json!([{"port": 80}]) },
            }],
        }),
        // Namespace y takes nothing (or only from namespace x).
        1 => {
            if second {
                json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}]})
            } else {
                json!({"podSelector": {}, "policyTypes": ["Ingress"]})
            }
        }
        // z/b may reach only servers anywhere (or only namespace y).
        2 => {
            let to = if second {
                json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}}}])
            } else {
                json!([{"namespaceSelector": {}, "podSelector": role("server")}])
            };
            json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"], "egress": [{"to": to}]})
        }
        // Churned pods of x take traffic from namespace z (or from clients of any namespace).
        3 => {
            let from = if second {
                json!([{"namespaceSelector": {}, "podSelector": role("client")}])
            } else {
                json!([{"namespaceSelector": {"matchLabels": {"ns": "z"}}}])
            };
            json!({"podSelector": {"matchLabels": {"pod": "churn"}}, "ingress": [{"from": from}]})
        }
        // Clients of z may reach only namespace x (or only x/a on 80).
        _ => {
            let to = if second {
                json!([{"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}, "podSelector": {"matchLabels": {"pod": "a"}}}], "ports": [{"port": 80}]}])
            } else {
                json!([{"to": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}])
            };
            json!({"podSelector": role("client"), "policyTypes": ["Egress"], "egress": to})
        }
    };
    Some(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }))
}

/// The conformance pods, the slots, and every policy in its first variant.
fn initial_case() -> Result<Case> {
    let policies = (0..POLICY_NAMES.len())
        .filter_map(|i| policy(i, 1))
        .collect();
    let mut case = crate::scenario::case("churn", policies)?;
    for (i, name) in SLOTS.iter().enumerate() {
        let n = 41 + u8::try_from(i).unwrap_or(0);
        case.pods.push(CasePod {
            ns: "x".into(),
            name: (*name).into(),
            labels: [
                ("role".to_owned(), ROLES[i % ROLES.len()].to_owned()),
                ("pod".to_owned(), "churn".to_owned()),
            ]
            .into(),
            ip: IpAddr::V4(Ipv4Addr::new(10, 244, 1, n)),
            service_ip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, n)),
            ports: vec![CasePort {
                name: "serve-80-tcp".into(),
                port: 80,
                protocol: "TCP".into(),
            }],
        });
    }
    Ok(case)
}

/// The slot being churned: its IP, node, and current identity.
struct Slot {
    ip: Ipv4Addr,
    node: &'static str,
    current: Key,
}

/// The figures of a run.
struct Figures {
    tally: Tally,
    attempts: usize,
    connected: usize,
    wrong: Vec<String>,
    late: usize,
    late_max: Duration,
    denied_throughout: usize,
    errors: Vec<String>,
    converged: Duration,
    elements: usize,
    /// Per flow: attempts connected and denied.
    per_flow: Vec<(usize, usize)>,
}

#[test]
fn churning_a_thousand_pods_with_reused_ips_under_policy_changes_allows_nothing_wrong() {
    let _serial = begin();
    let figures = runtime()
        .block_on(churn())
        .unwrap_or_else(|e| panic!("{e}"));
    let t = &figures.tally;
    say(&format!(
        "\nChurn through the API server: {} pods created ({} slot identities on real pods, {} API-only) in {:.1} s, {} deleted ({} of them terminating first), {} creations on a reused IP, {} policy changes, {} API writes\n\
         probes: {} attempts, {} connected; wrongly allowed: {}; allowed only within the {} ms allowance: {} (latest {} ms after the denying write); denied although every version allowed: {}; errors: {}\n\
         after the writes: both tables equal the compiled final snapshot after {} ms ({} set and map elements compared)",
        t.created,
        t.slot_identities,
        t.created - t.slot_identities,
        t.took.as_secs_f64(),
        t.deleted_now,
        t.deleted_gracefully,
        t.ip_reuses,
        t.policy_changes,
        t.writes,
        figures.attempts,
        figures.connected,
        figures.wrong.len(),
        ALLOWANCE.as_millis(),
        figures.late,
        figures.late_max.as_millis(),
        figures.denied_throughout,
        figures.errors.len(),
        figures.converged.as_millis(),
        figures.elements,
    ));
    let mut table = String::from(
        "\n| flow                               | connected | denied |\n|------------------------------------|-----------|--------|\n",
    );
    for ((from, to, via, port), (connected, denied)) in FLOWS.iter().zip(&figures.per_flow) {
        let flow = format!("{from} -> {to}:{port} via {}", via.name());
        table.push_str(&format!("| {flow:34} | {connected:>9} | {denied:>6} |\n"));
    }
    say(&table);
    // The churn must flip verdicts: most flows to or from a slot saw both.
    let flipped = FLOWS
        .iter()
        .zip(&figures.per_flow)
        .filter(|((from, to, ..), (c, d))| {
            (from.contains("/s") || to.contains("/s")) && *c > 0 && *d > 0
        })
        .count();
    assert!(
        flipped >= 6,
        "only {flipped} flows to or from a slot were both allowed and denied: the churn did not change verdicts"
    );
    assert!(
        figures.errors.is_empty(),
        "probe errors:\n{}",
        figures.errors.join("\n")
    );
    assert!(
        figures.wrong.is_empty(),
        "{} probes were wrongly allowed:\n{}",
        figures.wrong.len(),
        figures.wrong.join("\n")
    );
    assert_eq!(t.created, PODS, "not every pod was created");
}

async fn churn() -> Result<Figures> {
    let case = initial_case()?;
    let cluster = Cluster::build(cluster::plan(&case.pods)?).await?;
    let mut enforcer = Enforcer::start(Mode::ApiAgent, &cluster, &case).await?;
    let seed = std::env::var("KNP_CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    say(&format!(
        "sim: churning {PODS} pods through the API server on {} (seed {seed})",
        cluster.id
    ));
    let api = enforcer.api().ok_or("no API server")?;
    let mut world = World::default();
    for item in cluster.objects(&case) {
        match item["kind"].as_str() {
            Some("Namespace") => world.namespaces.push(item),
            Some("Pod") => {
                let key = key_of(&item);
                world.next_claim += 1;
                world.claims.insert(key.clone(), world.next_claim);
                world.pods.insert(key, item);
            }
            _ => {
                world.policies.insert(key_of(&item), item);
            }
        }
    }
    let started = Instant::now();
    let first = Version {
        started,
        ended: started,
        snapshot: world.snapshot()?,
    };
    let mut writer = Writer {
        api,
        world,
        versions: vec![first],
        tally: Tally::default(),
    };
    let slots: Vec<Slot> = SLOTS
        .iter()
        .map(|name| {
            let pod = cluster.pod(&format!("x/{name}")).ok_or("no slot")?;
            Ok(Slot {
                ip: pod.plan.ip,
                node: NODES[pod.plan.node].0,
                current: ("x".to_owned(), (*name).to_owned()),
            })
        })
        .collect::<Result<_>>()?;

    let probes = FLOWS
        .iter()
        .map(|(from, to, via, port)| {
            probes::between(&cluster, from, to, *via, *port, Protocol::Tcp)
        })
        .collect::<Result<Vec<_>>>()?;
    let stop = AtomicBool::new(false);
    let driver = async {
        let result = write_churn(&mut writer, slots, seed).await;
        // Probes go on while the agents catch up with the last writes.
        tokio::time::sleep(ALLOWANCE).await;
        stop.store(true, Ordering::SeqCst);
        result
    };
    let (result, attempts) = futures::join!(
        driver,
        steady::probe_until(&probes, 2, Duration::from_millis(100), &stop)
    );
    result?;
    let Writer {
        world,
        versions,
        mut tally,
        ..
    } = writer;
    tally.took = started.elapsed() - ALLOWANCE;

    // The tables reach exactly the compiled final snapshot.
    let waiting = Instant::now();
    let final_snapshot = world.snapshot()?;
    let mut elements = 0;
    for (index, node) in cluster.nodes.iter().enumerate() {
        let interfaces = cluster.interfaces(index, true);
        let expected = compile::compile_with_interfaces(
            &final_snapshot,
            node.name,
            &interfaces,
            &Options::default(),
        );
        let reference = nft::reference_listing(&expected).await?;
        loop {
            let listing = nft::list_table(node.netns.name()).await?;
            let differences = nft::exact_differences(listing.as_deref(), &expected, &reference)?;
            if differences.is_empty() {
                break;
            }
            if waiting.elapsed() > CONVERGE {
                return Err(format!(
                    "{}: the table is not the compiled final snapshot after {CONVERGE:?}:\n{}\n{}",
                    node.name,
                    differences
                        .iter()
                        .take(20)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n"),
                    enforcer.agents()[index].log_tail(20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        elements += expected
            .sets
            .iter()
            .map(|s| s.elements.len())
            .sum::<usize>()
            + expected
                .maps
                .iter()
                .map(|m| m.elements.len())
                .sum::<usize>();
    }
    let converged = waiting.elapsed();
    for a in enforcer.agents() {
        if let Some(status) = a.exited() {
            return Err(format!("an agent exited ({status})\n{}", a.log_tail(30)));
        }
    }
    let mut figures = judge(&cluster, &versions, &attempts)?;
    figures.tally = tally;
    figures.converged = converged;
    figures.elements = elements;
    Ok(figures)
}

async fn write_churn(writer: &mut Writer<'_>, mut slots: Vec<Slot>, seed: u64) -> Result<()> {
    let mut rng = Rng(seed | 1);
    let mut live: Vec<(Key, Ipv4Addr)> = Vec::new();
    // Pods deleted gracefully, with the steps left before they are gone.
    let mut terminating: Vec<(Key, u32)> = Vec::new();
    let mut policy_states = [1usize; POLICY_NAMES.len()];
    let mut used = Reuse(slots.iter().map(|s| s.ip).collect());
    for step in 0..PODS {
        let due = Instant::now() + STEP;
        if rng.one_in(POLICY_EVERY) {
            let index = rng.below(POLICY_NAMES.len());
            let state = (policy_states[index] + 1 + rng.below(2)) % 3;
            writer.set_policy(index, state).await?;
            policy_states[index] = state;
        }
        for (key, steps) in std::mem::take(&mut terminating) {
            if steps == 0 {
                writer.delete_now(&key).await?;
            } else {
                terminating.push((key, steps - 1));
            }
        }
        let graceful = rng.one_in(GRACEFUL_EVERY);
        let (namespace, role) = (*rng.pick(&NAMESPACES), *rng.pick(&ROLES));
        if rng.one_in(SLOT_EVERY) {
            let slot = rng.below(slots.len());
            let old = slots[slot].current.clone();
            delete(writer, &old, graceful, &mut terminating, &mut rng).await?;
            let key = (namespace.to_owned(), format!("{}-{step}", SLOTS[slot]));
            let (ip, node) = (slots[slot].ip, slots[slot].node);
            writer.create(pod_object(&key, role, node, ip)).await?;
            writer.tally.slot_identities += 1;
            writer.tally.ip_reuses += 1;
            slots[slot].current = key;
        } else {
            if live.len() >= API_ONLY_LIVE {
                let (old, _) = live.swap_remove(rng.below(live.len()));
                delete(writer, &old, graceful, &mut terminating, &mut rng).await?;
            }
            let free: Vec<Ipv4Addr> = POOL
                .map(|n| Ipv4Addr::new(10, 244, 1, n))
                .filter(|ip| !live.iter().any(|(_, used)| used == ip))
                .collect();
            let ip = *rng.pick(&free);
            if !used.0.insert(ip) {
                writer.tally.ip_reuses += 1;
            }
            let node = *rng.pick(&["node-1", "node-2", "node-3"]);
            let key = (namespace.to_owned(), format!("churn-{step}"));
            writer.create(pod_object(&key, role, node, ip)).await?;
            live.push((key, ip));
        }
        tokio::time::sleep_until(due.into()).await;
    }
    Ok(())
}

/// Deletes a pod at once, or gracefully with a few steps of terminating ahead of it.
async fn delete(
    writer: &mut Writer<'_>,
    key: &Key,
    graceful: bool,
    terminating: &mut Vec<(Key, u32)>,
    rng: &mut Rng,
) -> Result<()> {
    if graceful {
        writer.delete_gracefully(key).await?;
        terminating.push((key.clone(), 2 + u32::try_from(rng.below(6)).unwrap_or(0)));
        Ok(())
    } else {
        writer.delete_now(key).await
    }
}

/// Judges every attempt against the versions (see the module doc).
fn judge(cluster: &Cluster, versions: &[Version], attempts: &[Attempt]) -> Result<Figures> {
    let ends = |flow: usize| -> Result<(IpAddr, IpAddr, u16)> {
        let (from, to, _, port) = FLOWS[flow];
        let ip = |key: &str| {
            cluster
                .pod(key)
                .map(|p| IpAddr::V4(p.plan.ip))
                .ok_or_else(|| format!("no pod {key}"))
        };
        Ok((ip(from)?, ip(to)?, port))
    };
    let mut memo: HashMap<(usize, usize), bool> = HashMap::new();
    let mut allows = |version: usize, flow: usize| -> Result<bool> {
        if let Some(known) = memo.get(&(version, flow)) {
            return Ok(*known);
        }
        let (source, destination, port) = ends(flow)?;
        let verdict = evaluate(
            &versions[version].snapshot,
            &PolicyFlow {
                source: Endpoint::Ip(source),
                destination: Endpoint::Ip(destination),
                protocol: Protocol::Tcp,
                port,
            },
        )
        .map_err(|e| format!("evaluating flow {flow}: {e}"))?;
        memo.insert((version, flow), verdict.allowed);
        Ok(verdict.allowed)
    };
    // The last version written completely by `t` (the first one stands for everything before).
    let in_force = |t: Instant| versions.iter().rposition(|v| v.ended <= t).unwrap_or(0);
    // The last version whose write had begun by `t`.
    let begun = |t: Instant| versions.iter().rposition(|v| v.started <= t).unwrap_or(0);

    let mut figures = Figures {
        tally: Tally::default(),
        attempts: attempts.len(),
        connected: 0,
        wrong: Vec::new(),
        late: 0,
        late_max: Duration::ZERO,
        denied_throughout: 0,
        errors: Vec::new(),
        converged: Duration::ZERO,
        elements: 0,
        per_flow: vec![(0, 0); FLOWS.len()],
    };
    for a in attempts {
        let describe = || {
            let (from, to, via, port) = FLOWS[a.flow];
            format!("{from} -> {to}:{port} via {}", via.name())
        };
        let last = begun(a.ended);
        let at_start = in_force(a.started);
        let allowance_start = a.started.checked_sub(ALLOWANCE).map_or(0, in_force);
        match &a.outcome {
            Outcome::Connected => {
                figures.connected += 1;
                figures.per_flow[a.flow].0 += 1;
                let mut allowed_by = None;
                for v in (allowance_start..=last).rev() {
                    if allows(v, a.flow)? {
                        allowed_by = Some(v);
                        break;
                    }
                }
                match allowed_by {
                    None => figures.wrong.push(format!(
                        "{}: connected, denied by versions {allowance_start}..={last}",
                        describe()
                    )),
                    Some(v) if v < at_start => {
                        figures.late += 1;
                        // How long after the write that denied it the probe still connected.
                        let denied_since = versions[v + 1].ended;
                        figures.late_max = figures.late_max.max(a.ended - denied_since);
                    }
                    Some(_) => {}
                }
            }
            Outcome::TimedOut => {
                figures.per_flow[a.flow].1 += 1;
                let mut all = true;
                for v in at_start..=last.max(at_start) {
                    if !allows(v, a.flow)? {
                        all = false;
                        break;
                    }
                }
                if all {
                    figures.denied_throughout += 1;
                }
            }
            Outcome::Error(e) => figures.errors.push(format!("{}: {e}", describe())),
        }
    }
    Ok(figures)
}
