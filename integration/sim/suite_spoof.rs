//! Spoofing: a pod that sends with an address it does not own is dropped at its veth, with the
//! agent, on real packets.
//!
//! x/a (node-1) takes UDP on [`PORT`] from x/b (node-2) and from the block [`ALLOWED_BLOCK`]
//! only. Other pods then send datagrams to x/a with x/b's address, or with an address of that
//! block, as their source (the address added to their own interface): from x/a's node, from
//! x/b's own node, and from x/b's namespace-mate. A recorder in x/a's namespace notes every
//! datagram that arrives.
//!
//! First without any enforcer: every forged datagram arrives, so the cluster itself would
//! deliver them and a later loss is the agent's doing. Then with the agent: x/b's own
//! datagrams arrive, none of the forged ones do, and the "spoofed source address" rule's
//! counters in the senders' nodes went up.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use socket2::{Domain, Type};
use tokio::net::UdpSocket;

use crate::cluster::{self, Cluster};
use crate::conformance_data::Case;
use crate::enforcer::{Enforcer, Mode};
use crate::{Result, begin, links, nft, runtime, say};

/// The port x/a records datagrams on (its servers use 80 and 81).
const PORT: u16 = 9999;
/// An address block outside the cluster that x/a's policy allows.
const ALLOWED_BLOCK: &str = "203.0.113.0/24";
/// An address of that block the forgers use.
const BLOCK_ADDRESS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// How long the recorder waits for stragglers after a round of sends.
const SETTLE: Duration = Duration::from_millis(500);
/// Datagrams per sender per round (one lost datagram must not decide anything).
const REPEATS: u32 = 3;

#[test]
fn a_pod_sending_with_another_pods_address_is_dropped_at_its_veth_with_the_agent() {
    let _serial = begin();
    runtime()
        .block_on(spoofing())
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Who sends, from which address, and whether the datagram may arrive with the agent.
struct Sender {
    pod: &'static str,
    /// `None`: the pod's own address.
    forged: Option<Forged>,
    allowed: bool,
}

#[derive(Clone, Copy)]
enum Forged {
    /// x/b's pod address.
    PeerAddress,
    /// An address of [`ALLOWED_BLOCK`].
    BlockAddress,
}

const SENDERS: [Sender; 6] = [
    sender("x/b", None, true),
    sender("x/c", None, false),
    // Placement: x/a, x/c, z/a on node-1; x/b, y/a on node-2.
    sender("x/c", Some(Forged::PeerAddress), false),
    sender("z/a", Some(Forged::BlockAddress), false),
    sender("y/a", Some(Forged::PeerAddress), false),
    sender("y/a", Some(Forged::BlockAddress), false),
];

const fn sender(pod: &'static str, forged: Option<Forged>, allowed: bool) -> Sender {
    Sender {
        pod,
        forged,
        allowed,
    }
}

fn spoof_case() -> Result<Case> {
    crate::scenario::case(
        "spoofing",
        vec![crate::scenario::policy(
            "x",
            "a-from-b-and-block",
            json!({
                "podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{
                    "from": [
                        {"podSelector": {"matchLabels": {"pod": "b"}}},
                        {"ipBlock": {"cidr": ALLOWED_BLOCK}},
                    ],
                    "ports": [{"port": PORT, "protocol": "UDP"}],
                }],
            }),
        )],
    )
}

/// Datagram payloads seen by the recorder.
type Seen = Arc<Mutex<BTreeSet<String>>>;

async fn spoofing() -> Result<()> {
    let case = spoof_case()?;
    let cluster = Cluster::build(cluster::plan(&case.pods)?).await?;
    let target = cluster.pod("x/a").ok_or("no pod x/a")?;
    let peer_ip = cluster.pod("x/b").ok_or("no pod x/b")?.plan.ip;
    for s in &SENDERS {
        if let Some(forged) = s.forged {
            let pod = cluster
                .pod(s.pod)
                .ok_or_else(|| format!("no pod {}", s.pod))?;
            let address = forged_address(forged, peer_ip);
            links::ip(
                Some(pod.netns_name()),
                &["addr", "add", &format!("{address}/32"), "dev", "eth0"],
            )?;
        }
    }
    let seen = Seen::default();
    let recorder = record(&cluster, Arc::clone(&seen)).await?;
    let to = SocketAddr::V4(SocketAddrV4::new(target.plan.ip, PORT));

    // Without enforcement, every datagram arrives: the cluster routes forged sources.
    let missing: Vec<String> = send_round(&cluster, "open", to, peer_ip, &seen)
        .await?
        .into_iter()
        .filter_map(|(label, arrived)| (!arrived).then_some(label))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "without any enforcer these datagrams did not arrive, so the test proves nothing \
             about them: {missing:?}"
        ));
    }

    let _enforcer = Enforcer::start(Mode::Agent, &cluster, &case).await?;
    let before = spoof_drops(&cluster).await?;
    let arrived = send_round(&cluster, "agent", to, peer_ip, &seen).await?;
    let after = spoof_drops(&cluster).await?;
    recorder.abort();

    let mut report = String::from("\nSpoofing, with the agent (UDP to x/a:9999):\n");
    let mut wrong = Vec::new();
    for (s, (label, got)) in SENDERS.iter().zip(&arrived) {
        report.push_str(&format!(
            "  {label:<44} expected {:<8} got {}\n",
            verdict(s.allowed),
            verdict(*got)
        ));
        if *got != s.allowed {
            wrong.push(label.clone());
        }
    }
    report.push_str(&format!(
        "  \"spoofed source address\" drops per node: before {before:?}, after {after:?}\n"
    ));
    say(&report);
    if !wrong.is_empty() {
        return Err(format!("wrong verdicts: {wrong:?}{report}"));
    }
    // node-1 holds x/c and z/a, node-2 y/a: both nodes' veths drop forged packets.
    for (node, (b, a)) in cluster.nodes.iter().zip(before.iter().zip(&after)) {
        if a <= b {
            return Err(format!(
                "{}: the anti-spoofing rule counted no drop ({b} -> {a}){report}",
                node.name
            ));
        }
    }
    Ok(())
}

fn verdict(arrived: bool) -> &'static str {
    if arrived { "arrives" } else { "dropped" }
}

fn forged_address(forged: Forged, peer_ip: Ipv4Addr) -> Ipv4Addr {
    match forged {
        Forged::PeerAddress => peer_ip,
        Forged::BlockAddress => BLOCK_ADDRESS,
    }
}

/// A UDP socket in x/a's namespace that records every payload it receives.
async fn record(cluster: &Cluster, seen: Seen) -> Result<tokio::task::JoinHandle<()>> {
    let target = cluster.pod("x/a").ok_or("no pod x/a")?;
    let socket = target
        .inside
        .socket(Domain::IPV4, Type::DGRAM, None)
        .await
        .map_err(|e| format!("recorder socket: {e}"))?;
    let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT));
    socket
        .bind(&any.into())
        .map_err(|e| format!("recorder bind: {e}"))?;
    let socket = UdpSocket::from_std(socket.into()).map_err(|e| format!("recorder: {e}"))?;
    Ok(tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, _)) = socket.recv_from(&mut buf).await {
            let payload = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(payload);
        }
    }))
}

/// Every sender sends [`REPEATS`] datagrams tagged with the round; returns per sender a label
/// and whether any of its datagrams arrived.
async fn send_round(
    cluster: &Cluster,
    round: &str,
    to: SocketAddr,
    peer_ip: Ipv4Addr,
    seen: &Seen,
) -> Result<Vec<(String, bool)>> {
    let mut tags = Vec::new();
    for (i, s) in SENDERS.iter().enumerate() {
        let pod = cluster
            .pod(s.pod)
            .ok_or_else(|| format!("no pod {}", s.pod))?;
        let source = s.forged.map_or(pod.plan.ip, |f| forged_address(f, peer_ip));
        let label = match s.forged {
            None => format!("{} from its own address {source}", s.pod),
            Some(Forged::PeerAddress) => format!("{} forging x/b's address {source}", s.pod),
            Some(Forged::BlockAddress) => format!("{} forging {source}", s.pod),
        };
        let tag = format!("{round}-{i}");
        let socket = pod
            .inside
            .socket(Domain::IPV4, Type::DGRAM, None)
            .await
            .map_err(|e| format!("{label}: socket: {e}"))?;
        let from = SocketAddr::V4(SocketAddrV4::new(source, 0));
        socket
            .bind(&from.into())
            .map_err(|e| format!("{label}: bind: {e}"))?;
        for _ in 0..REPEATS {
            // A send that fails locally is a datagram that did not arrive.
            let _ = socket.send_to(tag.as_bytes(), &to.into());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tags.push((label, tag));
    }
    tokio::time::sleep(SETTLE).await;
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(tags
        .into_iter()
        .map(|(label, tag)| {
            let arrived = seen.contains(&tag);
            (label, arrived)
        })
        .collect())
}

/// Packets each node's "spoofed source address" rules dropped so far.
async fn spoof_drops(cluster: &Cluster) -> Result<Vec<u64>> {
    let mut drops = Vec::new();
    for node in &cluster.nodes {
        let listing = nft::run(
            node.netns.name(),
            &["list", "chain", "inet", "kube-nftpol", "prerouting"],
            None,
        )
        .await?;
        let packets = listing
            .lines()
            .filter(|l| l.contains("\"spoofed source address\""))
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "packets")?;
                words.next()?.parse::<u64>().ok()
            })
            .sum();
        drops.push(packets);
    }
    Ok(drops)
}
