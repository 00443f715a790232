//! The revocation pass: after each change the kernel enforces, end the node's established
//! connections that the change denies ([`crate::revoke`]), unless `--keep-established`.
//!
//! The control loop hands over each snapshot it applied (and verified) on a watch channel, so
//! a burst of changes collapses into one pass over the latest. A pass lists the node's
//! conntrack table, judges every TCP, UDP and SCTP entry with the snapshot in the kernel, puts
//! the headers of the denied connections' packets into the `revoked4`/`6` sets (their next
//! packets are answered with a TCP reset or an ICMP port unreachable, see `compile`), then
//! deletes their entries, and writes one `"action":"revoke"` line per ended connection and
//! side to stdout, beside the drop log (and into the recent flows). When a newer snapshot was
//! applied meanwhile, the pass starts over with it rather than act on an older one.
//!
//! The revoked elements are remembered until they expire: each pass takes out those whose
//! connection the new snapshot allows again, so a UDP client that reuses its ports is not
//! answered with errors once allowed (a TCP handshake's first packet is never answered).
//!
//! Owns the revocation metrics (`kube_nftpol_revocation_*`,
//! `kube_nftpol_revoked_connections_total`).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::State;
use crate::compile::{self, LogKind, SetElement, render_text};
use crate::dataplane::conntrack::{self, Listing};
use crate::dataplane::nft::Nft;
use crate::flow_line::{Action, FlowLine, Format};
use crate::flowlog::decode::LoggedPacket;
use crate::flowlog::enrich::enrich;
use crate::metrics::{LabelValue, latency_histogram};
use crate::model::{Direction, IpProtocol, Protocol, Snapshot};
use crate::revoke::{self, Connection, Node, Revocation};
use crate::source::manifests::Loaded;

/// How long the kernel answers the packets of an ended connection with a reset or an error.
/// After it, they are dropped by the pod chains as any denied packet.
pub const REVOKED_TIMEOUT: Duration = Duration::from_secs(300);

/// Labels of the revoked-connections counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RevokedLabels {
    /// The side that denied it: `ingress` or `egress`.
    pub direction: LabelValue<Direction>,
}

/// The revocation pass's metrics.
#[derive(Debug, Clone)]
pub struct RevocationMetrics {
    /// Connections ended, by the side that denied them.
    pub revoked: Family<RevokedLabels, Counter>,
    /// Passes run.
    pub passes: Counter,
    /// Passes that failed (conntrack could not be read, or the sets not written).
    pub errors: Counter,
    /// Seconds a pass took, from the listing to the last deletion.
    pub duration: Histogram,
    /// Entries of the node's conntrack table the last pass judged (TCP, UDP, SCTP).
    pub connections: Gauge,
}

impl RevocationMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            revoked: Family::default(),
            passes: Counter::default(),
            errors: Counter::default(),
            duration: latency_histogram(),
            connections: Gauge::default(),
        };
        for direction in [Direction::Ingress, Direction::Egress] {
            drop(metrics.revoked.get_or_create(&RevokedLabels {
                direction: LabelValue(direction),
            }));
        }
        let help = "Established connections ended because a policy change denied them, by the \
                    denying side";
        registry.register("revoked_connections", help, metrics.revoked.clone());
        let sub = registry.sub_registry_with_prefix("revocation");
        sub.register("passes", "Revocation passes run", metrics.passes.clone());
        let help = "Revocation passes that failed (conntrack unreadable, sets not written)";
        sub.register("errors", help, metrics.errors.clone());
        let help = "Time a revocation pass took, from listing conntrack to the last deletion";
        sub.register("pass_duration_seconds", help, metrics.duration.clone());
        let help = "TCP, UDP and SCTP entries of the node's conntrack table the last pass judged";
        sub.register("connections", help, metrics.connections.clone());
        metrics
    }
}

/// What the pass needs besides the snapshots.
pub(super) struct Revoker {
    pub node: String,
    pub audit_all: bool,
    pub format: Format,
    pub nft: Nft,
    pub metrics: RevocationMetrics,
    pub state: Arc<State>,
}

/// Runs a pass for each snapshot the control loop applied, until the channel closes.
pub(super) async fn run(revoker: Revoker, mut applied: watch::Receiver<Option<Arc<Loaded>>>) {
    let mut remembered = Remembered::default();
    while applied.changed().await.is_ok() {
        let Some(loaded) = applied.borrow_and_update().clone() else {
            continue;
        };
        let started = Instant::now();
        match pass(&revoker, &loaded.snapshot, &applied, &mut remembered).await {
            Ok(Some(ended)) => {
                revoker
                    .metrics
                    .duration
                    .observe(started.elapsed().as_secs_f64());
                revoker.metrics.passes.inc();
                if ended > 0 {
                    info!(
                        connections = ended,
                        millis = started.elapsed().as_millis(),
                        "ended established connections the change denies"
                    );
                }
            }
            // A newer snapshot is in the kernel: the next turn judges with it.
            Ok(None) => debug!("revocation pass superseded"),
            Err(error) => {
                revoker.metrics.errors.inc();
                warn!(error = %format!("{error:#}"), "revocation pass failed; established connections stay");
            }
        }
    }
}

/// One pass: the number of connections ended, or `None` when a newer snapshot was applied
/// before anything was changed.
async fn pass(
    revoker: &Revoker,
    snapshot: &Snapshot,
    applied: &watch::Receiver<Option<Arc<Loaded>>>,
    remembered: &mut Remembered,
) -> anyhow::Result<Option<usize>> {
    let listing: Listing = tokio::task::spawn_blocking(conntrack::list).await??;
    revoker
        .metrics
        .connections
        .set(i64::try_from(listing.connections.len()).unwrap_or(i64::MAX));
    let local_addresses = local_addresses();
    let node = Node {
        name: &revoker.node,
        local_addresses: &local_addresses,
        audit_all: revoker.audit_all,
    };
    let revocations = revoke::revocations(snapshot, &node, &listing.connections);
    let allowed_again = remembered.allowed_again(snapshot, &node, Instant::now());
    if applied.has_changed().unwrap_or(false) {
        return Ok(None);
    }
    let connections: Vec<Connection> = {
        let mut seen = HashSet::new();
        revocations
            .iter()
            .map(|r| r.connection)
            .filter(|c| seen.insert(*c))
            .collect()
    };
    // Answer first, then delete: a packet that arrives between the two is still established.
    let script = sets_script(&connections, &allowed_again);
    if !script.is_empty() {
        revoker.nft.apply(&script).await?;
    }
    remembered.forget(&allowed_again);
    remembered.add(&connections, Instant::now());
    let deleted = tokio::task::spawn_blocking(move || {
        connections
            .iter()
            .map(|c| conntrack::delete(c).map(|deleted| (*c, deleted)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    let ended: HashSet<Connection> = deleted
        .into_iter()
        .filter_map(|(connection, deleted)| deleted.then_some(connection))
        .collect();
    let now = SystemTime::now();
    let mut stdout = std::io::stdout().lock();
    for revocation in revocations.iter().filter(|r| ended.contains(&r.connection)) {
        revoker
            .metrics
            .revoked
            .get_or_create(&RevokedLabels {
                direction: LabelValue(revocation.direction),
            })
            .inc();
        let line = revocation_line(revocation, snapshot, now);
        match line.render(revoker.format) {
            // Nothing useful to do when stdout is gone.
            Ok(text) => drop(writeln!(stdout, "{text}")),
            Err(error) => warn!(%error, "cannot encode a revocation line"),
        }
        revoker.state.recent_flows().record(&line);
    }
    Ok(Some(ended.len()))
}

/// The flow line of an ended connection: as the drop log would write a denied first packet
/// from the client to the server, with the revoke action.
pub fn revocation_line(revocation: &Revocation, snapshot: &Snapshot, now: SystemTime) -> FlowLine {
    let connection = &revocation.connection;
    let (client, server) = (connection.client(), connection.server());
    let packet = LoggedPacket {
        kind: LogKind::Denied,
        direction: revocation.direction,
        pod: revocation.pod.clone(),
        source: client.ip(),
        destination: server.ip(),
        protocol: ip_protocol(connection.protocol),
        source_port: Some(client.port()),
        destination_port: Some(server.port()),
    };
    let mut line = enrich(&packet, snapshot, now);
    line.action = Action::Revoke;
    line
}

fn ip_protocol(protocol: Protocol) -> IpProtocol {
    match protocol {
        Protocol::Tcp => IpProtocol::Tcp,
        Protocol::Udp => IpProtocol::Udp,
        Protocol::Sctp => IpProtocol::Sctp,
    }
}

/// The `nft -f` script that adds the headers of `ended` to the revoked sets and takes out those
/// of `allowed_again`.
fn sets_script(ended: &[Connection], allowed_again: &[Connection]) -> String {
    let mut script = String::new();
    for family in compile::Family::ALL {
        let set = compile::revoked_set_name(family);
        let headers = |connections: &[Connection]| -> Vec<SetElement> {
            let mut elements: Vec<SetElement> = connections
                .iter()
                .filter(|c| c.family() == family)
                .flat_map(Connection::revoked_headers)
                .collect();
            // A connection between equal ports repeats an element; nft takes each once.
            elements.sort();
            elements.dedup();
            elements
        };
        let removed = headers(allowed_again);
        if !removed.is_empty() {
            script.push_str(&render_text::delete_elements(&set, family, &removed));
        }
        script.push_str(&render_text::add_elements_with_timeout(
            &set,
            family,
            &headers(ended),
            REVOKED_TIMEOUT.as_secs(),
        ));
    }
    script
}

/// The connections whose headers are in the revoked sets, until the kernel's timeout ends
/// (forgotten a little before, so a deletion never names an element already gone: one missing
/// element fails the whole `nft` transaction).
#[derive(Debug, Default)]
struct Remembered(HashMap<Connection, Instant>);

/// How long before the kernel's timeout an element is forgotten.
const FORGET_MARGIN: Duration = Duration::from_secs(10);

impl Remembered {
    fn add(&mut self, connections: &[Connection], now: Instant) {
        let until = now + REVOKED_TIMEOUT.saturating_sub(FORGET_MARGIN);
        for connection in connections {
            self.0.insert(*connection, until);
        }
    }

    /// Forgets the expired; the remembered connections `snapshot` no longer denies.
    fn allowed_again(
        &mut self,
        snapshot: &Snapshot,
        node: &Node<'_>,
        now: Instant,
    ) -> Vec<Connection> {
        self.0.retain(|_, until| *until > now);
        self.0
            .keys()
            .filter(|c| revoke::revocations(snapshot, node, [*c]).is_empty())
            .copied()
            .collect()
    }

    fn forget(&mut self, connections: &[Connection]) {
        for connection in connections {
            self.0.remove(connection);
        }
    }
}

/// The addresses of the node's interfaces (its own traffic is never ended).
fn local_addresses() -> HashSet<IpAddr> {
    match nix::ifaddrs::getifaddrs() {
        Ok(addresses) => addresses
            .filter_map(|a| a.address)
            .filter_map(|address| {
                if let Some(v4) = address.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect(),
        Err(error) => {
            warn!(%error, "cannot list the node's addresses");
            HashSet::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics;
    use crate::revoke::Tuple;

    fn connection(client: &str, server: &str) -> Connection {
        Connection {
            protocol: Protocol::Udp,
            original: Tuple {
                source: client.parse().unwrap(),
                destination: server.parse().unwrap(),
            },
            reply: Tuple {
                source: server.parse().unwrap(),
                destination: client.parse().unwrap(),
            },
            zone: 0,
        }
    }

    #[test]
    fn the_sets_script_adds_every_header_once_with_the_timeout_and_deletes_what_is_allowed_again() {
        let ended = [connection("10.0.0.1:5000", "10.0.0.2:53")];
        let again = [connection("[fd00::1]:5000", "[fd00::2]:53")];
        let script = sets_script(&ended, &again);
        assert_eq!(
            script,
            "add element inet kube-nftpol revoked4 { 10.0.0.1 . 10.0.0.2 . udp . 53 . 5000 timeout 300s, \
             10.0.0.1 . 10.0.0.2 . udp . 5000 . 53 timeout 300s, \
             10.0.0.2 . 10.0.0.1 . udp . 53 . 5000 timeout 300s, \
             10.0.0.2 . 10.0.0.1 . udp . 5000 . 53 timeout 300s }\n\
             delete element inet kube-nftpol revoked6 { fd00::1 . fd00::2 . udp . 53 . 5000, \
             fd00::1 . fd00::2 . udp . 5000 . 53, fd00::2 . fd00::1 . udp . 53 . 5000, \
             fd00::2 . fd00::1 . udp . 5000 . 53 }\n"
        );
        // Equal ports: each element once.
        let same = sets_script(&[connection("10.0.0.1:53", "10.0.0.2:53")], &[]);
        assert_eq!(same.matches("timeout").count(), 2, "{same}");
        assert_eq!(sets_script(&[], &[]), "");
    }

    #[test]
    fn remembered_connections_are_forgotten_before_the_kernel_forgets_them() {
        let mut remembered = Remembered::default();
        let start = Instant::now();
        let c = connection("10.0.0.1:5000", "10.0.0.2:53");
        remembered.add(&[c], start);
        let snapshot = Snapshot::new();
        let local = HashSet::new();
        let node = Node {
            name: "n1",
            local_addresses: &local,
            audit_all: false,
        };
        // Nothing denies it in an empty cluster: allowed again.
        assert_eq!(remembered.allowed_again(&snapshot, &node, start), [c]);
        let late = start + REVOKED_TIMEOUT - FORGET_MARGIN;
        assert!(remembered.allowed_again(&snapshot, &node, late).is_empty());
        assert!(remembered.0.is_empty());
    }

    #[test]
    fn the_metrics_are_registered_at_zero_for_both_directions() {
        let mut registry = metrics::registry();
        let _metrics = RevocationMetrics::register(&mut registry);
        let text = metrics::encode(&registry);
        for series in [
            "kube_nftpol_revoked_connections_total{direction=\"ingress\"} 0",
            "kube_nftpol_revoked_connections_total{direction=\"egress\"} 0",
            "kube_nftpol_revocation_passes_total 0",
            "kube_nftpol_revocation_errors_total 0",
            "kube_nftpol_revocation_connections 0",
        ] {
            assert!(text.contains(series), "{series} in {text}");
        }
    }
}
