//! Probes as upstream's `PokeServer` runs them: `kubectl exec` into the client pod's first
//! container and `/agnhost connect IP:PORT --timeout=1s --protocol=tcp` (UDP:
//! `/udpprobe connect IP PORT 1000`, the image's stand-in for agnhost 2.45's UDP connect),
//! many at once, each retried a bounded number of times until it gives the expected verdict.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::kubectl::{Kubectl, Run};

/// A pod of the base: its address and the container probes run in.
#[derive(Debug, Clone)]
pub struct RigPod {
    /// `status.podIP` (a host-network pod's is its node's).
    pub ip: IpAddr,
    /// Its first container (`<statefulset>-client`), where `kubectl exec` runs.
    pub container: String,
    /// The node it runs on.
    pub node: String,
}

/// One probe to run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Job {
    /// The client pod, `ns/name`.
    pub from: String,
    /// The server pod, `ns/name`.
    pub to: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The port.
    pub port: u16,
    /// Whether it must connect.
    pub connect: bool,
}

/// What a probe gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// It gave the expected verdict.
    pub passed: bool,
    /// Attempts made (1 when the first one gave the expected verdict).
    pub attempts: u32,
    /// What the last attempt saw (`connected`, `not connected: TIMEOUT ...`, or kubectl's
    /// error).
    pub last: String,
}

/// How probes run.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Probes at once.
    pub parallel: usize,
    /// Attempts per probe until the expected verdict.
    pub attempts: u32,
    /// Pause between attempts.
    pub pause: Duration,
}

/// Runs every job, `settings.parallel` at a time; outcomes in job order.
pub fn run_all(
    kubectl: &Kubectl,
    pods: &BTreeMap<String, RigPod>,
    jobs: &[Job],
    settings: Settings,
) -> Vec<Outcome> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..settings.parallel.max(1) {
            scope.spawn(|| {
                loop {
                    let index = {
                        let mut next = next.lock().expect("lock");
                        let index = *next;
                        *next += 1;
                        index
                    };
                    let Some(job) = jobs.get(index) else { break };
                    let outcome = run_one(kubectl, pods, job, settings);
                    results.lock().expect("lock")[index] = Some(outcome);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("lock")
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| Outcome {
                passed: false,
                attempts: 0,
                last: "not run".into(),
            })
        })
        .collect()
}

/// One probe, retried until it gives the expected verdict or runs out of attempts.
fn run_one(
    kubectl: &Kubectl,
    pods: &BTreeMap<String, RigPod>,
    job: &Job,
    settings: Settings,
) -> Outcome {
    let mut last = String::new();
    for attempt in 1..=settings.attempts.max(1) {
        if attempt > 1 {
            std::thread::sleep(settings.pause);
        }
        match attempt_once(kubectl, pods, job) {
            Ok(connected) => {
                last = if connected {
                    "connected".to_owned()
                } else {
                    "not connected".to_owned()
                };
                if connected == job.connect {
                    return Outcome {
                        passed: true,
                        attempts: attempt,
                        last,
                    };
                }
            }
            Err(error) => last = error,
        }
    }
    Outcome {
        passed: false,
        attempts: settings.attempts.max(1),
        last,
    }
}

/// Whether one attempt connected; an error when kubectl failed without a verdict.
fn attempt_once(
    kubectl: &Kubectl,
    pods: &BTreeMap<String, RigPod>,
    job: &Job,
) -> Result<bool, String> {
    let (Some(client), Some(server)) = (pods.get(&job.from), pods.get(&job.to)) else {
        return Err(format!("no pod {} or {}", job.from, job.to));
    };
    let Some((namespace, name)) = job.from.split_once('/') else {
        return Err(format!("{}: not ns/name", job.from));
    };
    let target = match server.ip {
        IpAddr::V4(ip) => format!("{ip}:{}", job.port),
        IpAddr::V6(ip) => format!("[{ip}]:{}", job.port),
    };
    let (ip, port) = (server.ip.to_string(), job.port.to_string());
    let command: Vec<&str> = match job.protocol.as_str() {
        "tcp" => vec![
            "/agnhost",
            "connect",
            &target,
            "--timeout=1s",
            "--protocol=tcp",
        ],
        "udp" => vec!["/udpprobe", "connect", &ip, &port, "1000"],
        other => return Err(format!("protocol {other} is not probed here")),
    };
    let run: Run = kubectl.exec(namespace, name, &client.container, &command);
    if run.ok {
        return Ok(true);
    }
    let said = format!("{}{}", run.stderr, run.stdout);
    if ["TIMEOUT", "REFUSED", "OTHER"]
        .iter()
        .any(|m| said.contains(m))
    {
        Ok(false)
    } else {
        Err(format!("kubectl exec failed: {}", said.trim()))
    }
}
