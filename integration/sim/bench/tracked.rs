//! Tracked connections for the programming benchmark's revocation figures: fills a node's
//! conntrack table with established, assured TCP entries (`conntrack -I`, as if the
//! connections had run through the node) and reads the revocation pass's metrics.
//!
//! The entries run from pods of other nodes to the node's `app-0`..`app-2` pods on their
//! `http` port, which the scale cluster's `allow-app` policies admit (from 10.0.0.0/8): every
//! one is judged by a pass and none may be ended.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube_nftpol_test_support::scale_cluster::{POD_PORTS, ScaleCluster};

use crate::Result;
use crate::agent;
use crate::setns::InNetns;

/// How many entries the benchmark adds.
pub const ENTRIES: usize = 10_000;

/// `(client, server)` addresses and the client's port of `count` allowed connections into
/// `node`'s pods of `cluster`.
pub fn allowed_connections(
    cluster: ScaleCluster,
    node: &str,
    count: usize,
) -> Vec<(Ipv4Addr, Ipv4Addr, u16)> {
    let admitted = ["app-0", "app-1", "app-2"];
    let (local, remote): (Vec<_>, Vec<_>) = cluster.pods().partition(|p| p.node == node);
    let servers: Vec<Ipv4Addr> = local
        .iter()
        .filter(|p| {
            p.labels
                .get("app")
                .is_some_and(|app| admitted.contains(&app.as_str()))
        })
        .map(|p| p.ip)
        .collect();
    let clients: Vec<Ipv4Addr> = remote.iter().map(|p| p.ip).collect();
    if servers.is_empty() || clients.is_empty() {
        return Vec::new();
    }
    (0..count)
        .map(|i| {
            let server = servers[i % servers.len()];
            // A stride that visits every client: many distinct flows, some repeated.
            let client = clients[(i * 7919) % clients.len()];
            let port = 1024 + u16::try_from(i % 60_000).unwrap_or(0);
            (client, server, port)
        })
        .collect()
}

/// Adds the connections to the conntrack table of network namespace `netns` (one `conntrack
/// -I` each, in one shell reading them on stdin); returns how long that took.
pub fn insert(netns: &str, connections: &[(Ipv4Addr, Ipv4Addr, u16)]) -> Result<Duration> {
    let http = POD_PORTS[0].1;
    let mut script = String::new();
    for (client, server, port) in connections {
        script.push_str(&format!(
            "conntrack -I -p tcp -s {client} -d {server} --sport {port} --dport {http} -r {server} \
             -q {client} --reply-port-src {http} --reply-port-dst {port} --state ESTABLISHED \
             --timeout 1200 -u ASSURED,SEEN_REPLY 2>/dev/null || echo failed\n"
        ));
    }
    let started = Instant::now();
    let mut shell = Command::new("ip")
        .args(["netns", "exec", netns, "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("conntrack -I: {e}"))?;
    let mut stdin = shell.stdin.take().ok_or("no stdin for sh")?;
    stdin
        .write_all(script.as_bytes())
        .map_err(|e| format!("conntrack -I: {e}"))?;
    drop(stdin);
    let out = shell
        .wait_with_output()
        .map_err(|e| format!("conntrack -I: {e}"))?;
    let failed = String::from_utf8_lossy(&out.stdout)
        .matches("failed")
        .count();
    if failed > 0 {
        return Err(format!(
            "conntrack -I failed for {failed} of {} entries",
            connections.len()
        ));
    }
    Ok(started.elapsed())
}

/// The revocation pass's counters on the agent's `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passes {
    /// Passes run.
    pub count: f64,
    /// Their seconds, added up.
    pub seconds: f64,
    /// Entries the last pass judged.
    pub connections: f64,
    /// Connections ended, both directions.
    pub revoked: f64,
}

impl Passes {
    /// Reads them from the agent of the node `inside` is in.
    pub async fn read(inside: &InNetns) -> Result<Self> {
        let (status, body) = agent::http_get(inside, "/metrics").await?;
        if status != 200 {
            return Err(format!("GET /metrics answered {status}"));
        }
        let value = |name: &str| -> f64 {
            body.lines()
                .filter_map(|l| l.strip_prefix(name))
                .filter_map(|rest| rest.rsplit_once(' '))
                .filter(|(labels, _)| labels.is_empty() || labels.starts_with('{'))
                .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
                .sum()
        };
        Ok(Self {
            count: value("kube_nftpol_revocation_passes_total"),
            seconds: value("kube_nftpol_revocation_pass_duration_seconds_sum"),
            connections: value("kube_nftpol_revocation_connections"),
            revoked: value("kube_nftpol_revoked_connections_total"),
        })
    }

    /// What ran between `before` and these readings: (passes, mean seconds per pass).
    pub fn since(&self, before: &Self) -> (f64, f64) {
        let count = self.count - before.count;
        let mean = if count > 0.0 {
            (self.seconds - before.seconds) / count
        } else {
            0.0
        };
        (count, mean)
    }
}
