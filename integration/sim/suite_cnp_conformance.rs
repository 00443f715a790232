//! Suite: the ClusterNetworkPolicy conformance suite of network-policy-api v0.2.0 (24 tests, 92
//! sub-tests, standard and experimental: named ports and node peers) on real packets.
//!
//! The cluster is upstream's base: namespaces gryffindor, slytherin, hufflepuff and ravenclaw
//! with two pods each serving TCP 80 and 8080, UDP 53 and 5353 and SCTP 9003 and 9005 (ports
//! `web` TCP 80 and `dns` UDP 53 named), and forbidden-forrest's two host-network `centaur`
//! pods, served here by the node namespaces themselves on upstream's host-network ports. The
//! pods alternate between the two nodes ([`Placement::simulated`]), so probes cross nodes, stay
//! on one, and reach the sender's own node's address (the `input` path) and the other node's.
//! Each upstream test is replayed from the data (`crates/test-support/data/cnp-conformance/`):
//! after each run of steps the enforcer brings both kernels to the objects then in force, and
//! every probe of the sub-test runs from its client pod to its server's address, as upstream's
//! `PokeServer` dials `status.podIP`. A results table (test, sub-tests, probes, passed) goes to
//! stderr; the test fails listing every mismatch.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use kube_nftpol::model::Protocol;
use serde_json::Value;

use crate::cluster::{Cluster, PodPlan};
use crate::cnp_data::{BasePod, Placement, Suite};
use crate::enforcer::{Enforcer, Mode};
use crate::probes::{self, Probe};
use crate::servers::Servers;
use crate::{Result, begin, runtime, say};

#[test]
fn cluster_network_policy_conformance_passes_on_real_packets_with_the_static_compile() {
    run(Some(Mode::Static));
}

#[test]
fn cluster_network_policy_conformance_passes_on_real_packets_with_the_agent() {
    run(Some(Mode::Agent));
}

/// The agents read Nodes, Pods, NetworkPolicies and ClusterNetworkPolicies (the experimental
/// CRD) from a real kube-apiserver v1.20; the steps go through the API.
#[test]
fn cluster_network_policy_conformance_passes_on_real_packets_with_the_agent_reading_the_api_server()
{
    run(Some(Mode::ApiAgent));
}

/// Guards the suite against a harness that times out by itself: with no ruleset, every probe of
/// every checkpoint connects and reaches the pod (or node) it names.
#[test]
fn without_a_ruleset_every_cluster_network_policy_probe_connects() {
    run(None);
}

/// The base cluster, simulated: the pods' namespaces and the host-network servers.
struct Sim {
    cluster: Cluster,
    placement: Placement,
    /// The host-network pods: `ns/name`, node index, their servers (in the node namespace).
    hosts: Vec<(String, usize, Servers)>,
}

fn v4(ip: IpAddr) -> Result<Ipv4Addr> {
    match ip {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(ip) => Err(format!("IPv6 {ip} is not simulated")),
    }
}

/// The TCP and UDP ports a base pod serves.
fn serves(pod: &BasePod) -> (Vec<u16>, Vec<u16>) {
    let of = |protocol: &str| {
        pod.serves
            .iter()
            .filter(|(p, _)| p == protocol)
            .map(|(_, port)| *port)
            .collect()
    };
    (of("TCP"), of("UDP"))
}

async fn build(suite: &Suite) -> Result<Sim> {
    let pods = suite.base_pods();
    let placement = Placement::simulated(&pods);
    let mut plan = Vec::new();
    for (i, pod) in pods.iter().filter(|p| !p.host_network).enumerate() {
        let key = format!("{}/{}", pod.namespace, pod.name);
        let (node, ip) = placement.pods[&key];
        plan.push(PodPlan {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            ip: v4(ip)?,
            service_ip: Ipv4Addr::new(10, 96, 1, u8::try_from(10 + i).unwrap_or(u8::MAX)),
            node,
        });
    }
    let cluster = Cluster::build_serving(plan, |p| {
        pods.iter()
            .find(|b| b.namespace == p.namespace && b.name == p.name)
            .map(serves)
            .unwrap_or_default()
    })
    .await?;
    let mut hosts = Vec::new();
    for pod in pods.iter().filter(|p| p.host_network) {
        let key = format!("{}/{}", pod.namespace, pod.name);
        let (node, ip) = placement.pods[&key];
        let (tcp, udp) = serves(pod);
        let ip = v4(ip)?;
        let servers =
            Servers::start_serving(&cluster.nodes[node].inside, ip, ip, &key, &tcp, &udp).await?;
        hosts.push((key, node, servers));
    }
    Ok(Sim {
        cluster,
        placement,
        hosts,
    })
}

impl Sim {
    /// The probe from a client pod to a pod's or a host-network pod's address.
    fn probe(&self, suite: &Suite, probe: &crate::cnp_data::Probe) -> Result<Probe<'_>> {
        let client = self
            .cluster
            .pod(&probe.from)
            .ok_or_else(|| format!("no client pod {}", probe.from))?;
        let protocol = Protocol::parse_any_case(&probe.protocol)
            .ok_or_else(|| format!("protocol {}", probe.protocol))?;
        let port = suite.port(probe.port);
        let (target, identity, sctp) = match self.cluster.pod(&probe.to) {
            Some(server) => (
                server.plan.ip,
                server.identity.as_str(),
                &server.servers.sctp,
            ),
            None => {
                let (key, node, servers) = self
                    .hosts
                    .iter()
                    .find(|(key, _, _)| *key == probe.to)
                    .ok_or_else(|| format!("no server {}", probe.to))?;
                (self.cluster.nodes[*node].ip, key.as_str(), &servers.sctp)
            }
        };
        Ok(Probe {
            client: &client.inside,
            client_ip: client.plan.ip,
            target,
            port,
            protocol,
            identity,
            sctp,
        })
    }
}

/// One test's line in the results table.
struct Row {
    test: String,
    subtests: usize,
    failed_subtests: usize,
    probes: usize,
    passed: usize,
    apply: Duration,
}

fn run(mode: Option<Mode>) {
    let _serial = begin();
    let started = Instant::now();
    let name = mode.map_or("no ruleset", Mode::name);
    let result = runtime().block_on(all_tests(mode));
    let (rows, mismatches) = result.unwrap_or_else(|e| panic!("{name}: {e}"));
    say(&table(name, &rows, started.elapsed()));
    if !mismatches.is_empty() {
        panic!(
            "{} of {} probes gave the wrong verdict ({name}):\n{}",
            mismatches.len(),
            rows.iter().map(|r| r.probes).sum::<usize>(),
            mismatches.join("\n")
        );
    }
}

async fn all_tests(mode: Option<Mode>) -> Result<(Vec<Row>, Vec<String>)> {
    let suite = Suite::load();
    if suite.tests.len() != 24 {
        return Err(format!(
            "expected 24 upstream tests, found {}",
            suite.tests.len()
        ));
    }
    let sim = build(&suite).await?;
    let ip_of = |pod: &str| sim.placement.ip_of(pod);
    let base = suite.base_objects(&sim.placement);
    let mut enforcer = match mode {
        Some(mode) => Some(Enforcer::start_objects(mode, &sim.cluster, &base).await?),
        None => None,
    };
    say(&format!(
        "sim: {} ClusterNetworkPolicy conformance tests on {} ({} pods, 2 host-network, enforcer: {})",
        suite.tests.len(),
        sim.cluster.id,
        sim.cluster.pods.len(),
        mode.map_or("none", Mode::name)
    ));
    let (mut rows, mut mismatches) = (Vec::new(), Vec::new());
    for test in &suite.tests {
        let mut row = Row {
            test: test.name.clone(),
            subtests: test.subtests.len(),
            failed_subtests: 0,
            probes: 0,
            passed: 0,
            apply: Duration::ZERO,
        };
        let mut failed = std::collections::BTreeSet::new();
        for checkpoint in suite.checkpoints(test, &ip_of)? {
            if let Some(enforcer) = &mut enforcer {
                let objects: Vec<Value> =
                    base.iter().chain(&checkpoint.policies).cloned().collect();
                row.apply += enforcer
                    .apply_objects(&sim.cluster, &objects)
                    .await
                    .map_err(|e| format!("{} / {}: {e}", test.name, checkpoint.subtest.name))?;
            }
            let planned: Vec<Probe<'_>> = checkpoint
                .probes
                .iter()
                .map(|p| sim.probe(&suite, p))
                .collect::<Result<_>>()?;
            let outcomes = probes::run_many(&planned).await;
            for ((probe, planned), got) in checkpoint.probes.iter().zip(&planned).zip(outcomes) {
                row.probes += 1;
                // Without a ruleset everything must connect.
                let expected = mode.is_none() || probe.connect;
                if got.allowed() == Some(expected) {
                    row.passed += 1;
                } else {
                    failed.insert(checkpoint.subtest.name.clone());
                    mismatches.push(format!(
                        "  {} ({}) | {} | {} -> {} ({}) {}/{} | expected {} | got {got}",
                        test.name,
                        test.source,
                        checkpoint.subtest.name,
                        probe.from,
                        probe.to,
                        planned.target,
                        probe.protocol,
                        planned.port,
                        if expected { "connect" } else { "timeout" },
                    ));
                }
            }
        }
        row.failed_subtests = failed.len();
        rows.push(row);
    }
    Ok((rows, mismatches))
}

fn table(mode: &str, rows: &[Row], elapsed: Duration) -> String {
    let width = rows.iter().map(|r| r.test.len()).max().unwrap_or(4).max(30);
    let mut out = format!(
        "\nClusterNetworkPolicy conformance (network-policy-api v0.2.0) on real packets, enforcer: {mode}\n\n"
    );
    let _ = writeln!(
        out,
        "| {:width$} | sub-tests | passed | probes | passed | apply ms |",
        "test"
    );
    let _ = writeln!(
        out,
        "|{}|-----------|--------|--------|--------|----------|",
        "-".repeat(width + 2)
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {:width$} | {:>9} | {:>6} | {:>6} | {:>6} | {:>8} |",
            r.test,
            r.subtests,
            r.subtests - r.failed_subtests,
            r.probes,
            r.passed,
            r.apply.as_millis()
        );
    }
    let sum = |f: fn(&Row) -> usize| rows.iter().map(f).sum::<usize>();
    let _ = writeln!(
        out,
        "| {:width$} | {:>9} | {:>6} | {:>6} | {:>6} | {:>8} |",
        format!(
            "total ({} tests, {:.1} s)",
            rows.len(),
            elapsed.as_secs_f64()
        ),
        sum(|r| r.subtests),
        sum(|r| r.subtests - r.failed_subtests),
        sum(|r| r.probes),
        sum(|r| r.passed),
        rows.iter().map(|r| r.apply.as_millis()).sum::<u128>()
    );
    out
}
