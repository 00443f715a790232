//! The ClusterNetworkPolicy conformance suite of network-policy-api v0.2.0 (24 tests, 92
//! sub-tests, 289 probes; `crates/test-support/data/cnp-conformance/`) against the real-node
//! rig's cluster (`integration/cluster/`): real kubelets, containerd, a ptp or bridge CNI, the
//! agent as its DaemonSet. Run it as root against an up rig with the agent deployed:
//!
//! ```sh
//! sudo integration/cluster/cnp-conformance.sh          # or: run.sh --cnp ptp|bridge|both
//! cargo test --test cluster_cnp -- [--parallel N] [--attempts N] [--test SUBSTRING] [--keep]
//! cargo test --test cluster_cnp -- --dry-run   # no cluster: the adapted base, the counts
//! ```
//!
//! What it does, with the test-support player (`cnp_conformance::Suite`):
//!
//! 1. applies the experimental channel's CRD (`deploy/crd/`; node peers and named ports need
//!    it; v1.20 drops its CEL rules and keeps the schema), deletes any ClusterNetworkPolicy;
//! 2. applies the base manifests adapted to the rig's images ([`base`]), waits for every
//!    StatefulSet, reads each pod's `status.podIP`;
//! 3. a baseline with no policy: every distinct TCP and UDP probe of the suite must connect (so a
//!    "must not connect" that passes is the policy's doing, not a missing server);
//! 4. for each test, each checkpoint of `Suite::checkpoints` with the real addresses: deletes
//!    the test's objects no longer in force, `kubectl apply`s those in force, waits until every
//!    agent has programmed a change seen after the write (`kube_nftpol_programming_latency_
//!    seconds_count` grew past its value before the write, read through the API server's pod
//!    proxy; at most 20 s), then runs the checkpoint's probes ([`probes`]), each retried at most
//!    `--attempts` times (default 3, 1 s apart) until it gives the expected verdict; retries
//!    are counted and printed;
//! 5. prints each test's and sub-test's result ([`report`]) and exits 1 on any failure.
//!
//! SCTP probes (86 of 289) are skipped and counted: this kernel has no SCTP sockets.

mod base;
mod converge;
mod kubectl;
mod probes;
mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use kube_nftpol_test_support::cnp_conformance::Suite;
use serde_json::Value;

use converge::converge;
use kubectl::Kubectl;
use probes::{Job, RigPod, Settings};
use report::{Probes, Report};

const CRD: &str = "clusternetworkpolicies.policy.networking.k8s.io";

/// Command-line options.
struct Options {
    settings: Settings,
    only: Option<String>,
    keep: bool,
    dry_run: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        settings: Settings {
            parallel: 4,
            attempts: 3,
            pause: Duration::from_secs(1),
        },
        only: None,
        keep: false,
        dry_run: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{what} N"))
        };
        match arg.as_str() {
            "--parallel" => options.settings.parallel = number("--parallel")?,
            "--attempts" => {
                options.settings.attempts =
                    u32::try_from(number("--attempts")?).map_err(|e| e.to_string())?;
            }
            "--test" => options.only = Some(args.next().ok_or("--test SUBSTRING")?),
            "--keep" => options.keep = true,
            "--dry-run" => options.dry_run = true,
            // What cargo's test runner may pass.
            "--nocapture" | "--quiet" | "-q" => {}
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(options)
}

fn main() {
    let started = Instant::now();
    let code = match run(started) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(error) => {
            eprintln!("cluster_cnp: FAILED: {error}");
            1
        }
    };
    eprintln!("cluster_cnp: {:.0} s", started.elapsed().as_secs_f64());
    std::process::exit(code);
}

pub(crate) fn say(started: Instant, text: &str) {
    eprintln!(
        "cluster_cnp: [{:4.0} s] {text}",
        started.elapsed().as_secs_f64()
    );
}

fn run(started: Instant) -> Result<bool, String> {
    let options = options()?;
    let kubectl = Kubectl::from_env();
    let suite = Suite::load();
    let base = base::adapt(
        suite.manifest(&suite.base_manifests),
        &base::agnhost_image(),
    )?;
    if options.dry_run {
        return dry_run(&suite, &base);
    }
    let agents = kubectl.agents()?;
    say(started, &format!("agents: {agents:?}"));

    let crd = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/crd/clusternetworkpolicies.experimental.yaml"
    );
    kubectl.must(&["apply", "-f", crd], None)?;
    kubectl.must(
        &[
            "wait",
            "--for=condition=established",
            &format!("crd/{CRD}"),
            "--timeout=60s",
        ],
        None,
    )?;
    kubectl.must(&["delete", CRD, "--all"], None)?;

    let base = base::adapt(
        suite.manifest(&suite.base_manifests),
        &base::agnhost_image(),
    )?;
    kubectl.apply(&base)?;
    for object in base.iter().filter(|o| o["kind"] == "StatefulSet") {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        kubectl.must(
            &[
                "-n",
                namespace,
                "rollout",
                "status",
                &format!("statefulset/{name}"),
                "--timeout=300s",
            ],
            None,
        )?;
    }
    let pods = rig_pods(&kubectl, &suite)?;
    for (key, pod) in &pods {
        say(started, &format!("{key}: {} on {}", pod.ip, pod.node));
    }
    let ip_of = |pod: &str| pods.get(pod).map(|p| p.ip);

    let baseline = baseline_jobs(&suite);
    say(
        started,
        &format!(
            "baseline, no policy: {} distinct TCP and UDP probes must connect",
            baseline.len()
        ),
    );
    let outcomes = probes::run_all(&kubectl, &pods, &baseline, options.settings);
    let broken: Vec<String> = baseline
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| !o.passed)
        .map(|(j, o)| {
            format!(
                "{} -> {} {}/{}: {}",
                j.from, j.to, j.protocol, j.port, o.last
            )
        })
        .collect();
    if !broken.is_empty() {
        return Err(format!(
            "without a policy these probes do not connect (the rig's servers or clients):\n  {}",
            broken.join("\n  ")
        ));
    }
    say(
        started,
        &format!(
            "baseline: {} of {} connected",
            outcomes.len(),
            baseline.len()
        ),
    );

    let mut report = Report::default();
    let mut applied: BTreeMap<String, Value> = BTreeMap::new();
    let mut checkpoints_run = 0usize;
    for test in &suite.tests {
        if options
            .only
            .as_deref()
            .is_some_and(|only| !test.name.contains(only))
        {
            continue;
        }
        let names: Vec<String> = test.subtests.iter().map(|s| s.name.clone()).collect();
        report.test(&test.name, &names);
        let checkpoints = suite.checkpoints(test, &ip_of)?;
        for checkpoint in &checkpoints {
            checkpoints_run += 1;
            let desired: BTreeMap<String, Value> = checkpoint
                .policies
                .iter()
                .map(|o| (object_id(o), o.clone()))
                .collect();
            let enforce = Instant::now();
            converge(&kubectl, &agents, &mut applied, desired, started)?;
            let mut jobs = Vec::new();
            let mut skipped = 0usize;
            for probe in &checkpoint.probes {
                if probe.protocol == "sctp" {
                    skipped += 1;
                    continue;
                }
                jobs.push(Job {
                    from: probe.from.clone(),
                    to: probe.to.clone(),
                    protocol: probe.protocol.clone(),
                    port: suite.port(probe.port),
                    connect: probe.connect,
                });
            }
            let outcomes = probes::run_all(&kubectl, &pods, &jobs, options.settings);
            report.probe(
                &checkpoint.subtest.name,
                Probes {
                    skipped,
                    ..Probes::default()
                },
            );
            for (job, outcome) in jobs.iter().zip(&outcomes) {
                let mut add = Probes::default();
                if outcome.passed {
                    add.passed = 1;
                    add.retried = usize::from(outcome.attempts > 1);
                } else {
                    add.failed = 1;
                    report.failure(format!(
                        "{} / {}: {} -> {} ({}) {}/{} must {}connect; after {} attempts: {}",
                        test.name,
                        checkpoint.subtest.name,
                        job.from,
                        job.to,
                        ip_of(&job.to).map(|ip| ip.to_string()).unwrap_or_default(),
                        job.protocol,
                        job.port,
                        if job.connect { "" } else { "not " },
                        outcome.attempts,
                        outcome.last
                    ));
                }
                report.probe(&checkpoint.subtest.name, add);
            }
            say(
                started,
                &format!(
                    "{} / {}: {} probes ({} SCTP skipped) in {:.1} s",
                    test.name,
                    checkpoint.subtest.name,
                    jobs.len(),
                    skipped,
                    enforce.elapsed().as_secs_f64()
                ),
            );
        }
    }
    converge(&kubectl, &agents, &mut applied, BTreeMap::new(), started)?;
    if !options.keep {
        for object in base.iter().filter(|o| o["kind"] == "Namespace") {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            kubectl.must(&["delete", "namespace", name, "--wait=false"], None)?;
        }
    }
    let table = report.render();
    println!("{table}");
    let (tests, subtests, probes) = report.totals();
    say(
        started,
        &format!(
            "{checkpoints_run} checkpoints; baseline {} probes",
            baseline.len()
        ),
    );
    Ok(tests.failed == 0 && subtests.failed == 0 && probes.failed == 0)
}

/// `--dry-run`: the adapted base and the suite's checkpoints with made-up addresses, no cluster.
fn dry_run(suite: &Suite, base: &[Value]) -> Result<bool, String> {
    let text = serde_json::to_string_pretty(base).map_err(|e| e.to_string())?;
    println!("{text}");
    let placement =
        kube_nftpol_test_support::cnp_conformance::Placement::simulated(&suite.base_pods());
    let (mut checkpoints, mut probes, mut sctp) = (0, 0, 0);
    for test in &suite.tests {
        for checkpoint in suite.checkpoints(test, &|pod| placement.ip_of(pod))? {
            checkpoints += 1;
            probes += checkpoint.probes.len();
            sctp += checkpoint
                .probes
                .iter()
                .filter(|p| p.protocol == "sctp")
                .count();
        }
    }
    println!(
        "{} tests, {checkpoints} checkpoints, {probes} probes ({sctp} SCTP), baseline {} probes",
        suite.tests.len(),
        baseline_jobs(suite).len()
    );
    Ok(true)
}

/// `kind/namespace/name`, as the player keys objects.
fn object_id(object: &Value) -> String {
    format!(
        "{}/{}/{}",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Each base pod's address, client container and node, by `ns/name`.
fn rig_pods(kubectl: &Kubectl, suite: &Suite) -> Result<BTreeMap<String, RigPod>, String> {
    let namespaces: BTreeSet<String> = suite.base_pods().into_iter().map(|p| p.namespace).collect();
    let mut out = BTreeMap::new();
    for namespace in namespaces {
        for pod in kubectl.pods(&namespace)? {
            let name = pod["metadata"]["name"].as_str().unwrap_or_default();
            let key = format!("{namespace}/{name}");
            let ip: IpAddr = pod["status"]["podIP"]
                .as_str()
                .and_then(|ip| ip.parse().ok())
                .ok_or_else(|| format!("{key}: no status.podIP"))?;
            let container = pod["spec"]["containers"][0]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let node = pod["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            out.insert(
                key,
                RigPod {
                    ip,
                    container,
                    node,
                },
            );
        }
    }
    for pod in suite.base_pods() {
        let key = format!("{}/{}", pod.namespace, pod.name);
        if !out.contains_key(&key) {
            return Err(format!("{key} is not running"));
        }
    }
    Ok(out)
}

/// Every distinct TCP and UDP probe of the suite, expected to connect.
fn baseline_jobs(suite: &Suite) -> Vec<Job> {
    let mut jobs = BTreeSet::new();
    for test in &suite.tests {
        for subtest in &test.subtests {
            for step in &subtest.steps {
                if let kube_nftpol_test_support::cnp_conformance::Step::Probe(probe) = step
                    && probe.protocol != "sctp"
                {
                    jobs.insert(Job {
                        from: probe.from.clone(),
                        to: probe.to.clone(),
                        protocol: probe.protocol.clone(),
                        port: suite.port(probe.port),
                        connect: true,
                    });
                }
            }
        }
    }
    jobs.into_iter().collect()
}
