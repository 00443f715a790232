//! Probes: the first packets of a connection from one pod to an address, and what came of it.
//!
//! - TCP: connect with a timeout ([`TIMEOUT`]); a timeout means denied (the policy drops the
//!   SYN). A connection must then deliver the destination pod's identity, which proves it
//!   reached the intended pod, through the Service DNAT too.
//! - UDP: one datagram from a source port no other probe of this run used (so no conntrack
//!   entry of an earlier, allowed probe can carry it), answered by the pod's echo server.
//! - SCTP: a raw INIT (IP protocol 132) from the client's namespace, with a fresh source port
//!   and initiate tag; allowed when the destination's packet socket sees it arrive
//!   ([`crate::servers::SctpSeen`]).
//!
//! Anything other than success or a timeout (a refused connection, a wrong pod answering) is
//! an [`Outcome::Error`]: the harness, not the policy, is then at fault. Probes are async and
//! meant to run many at a time.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube_nftpol::model::Protocol as L4;
use socket2::{Domain, Protocol, SockAddr, Type};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, UdpSocket};
use tokio::time::timeout;

use crate::cluster::Cluster;
use crate::servers::SctpSeen;
use crate::setns::InNetns;
use crate::{Result, sctp};

/// How long a probe waits for its connection (TCP), answer (UDP) or arrival (SCTP) before
/// calling it denied. Allowed probes take well under a millisecond on veth links.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// Source ports the UDP and SCTP probes take in turn (below the kernel's ephemeral range, so
/// they never clash with the TCP probes' ports).
const SOURCE_PORTS: std::ops::Range<u32> = 10_000..32_000;

/// How many probes run at once: enough for a whole case (up to 288 probes) to wait out its
/// timeouts together.
pub const PARALLEL: usize = 320;

/// Which address of the destination pod a probe connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The pod IP.
    PodIp,
    /// The ClusterIP of the pod's Service (DNAT by kube-proxy on the client's node).
    ServiceIp,
}

impl Via {
    /// Both, pod IP first.
    pub const BOTH: [Self; 2] = [Self::PodIp, Self::ServiceIp];

    /// For reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::PodIp => "pod IP",
            Self::ServiceIp => "Service IP",
        }
    }
}

/// The probe from pod `from` to pod `to` (`ns/name` both) through `via`.
pub fn between<'a>(
    cluster: &'a Cluster,
    from: &str,
    to: &str,
    via: Via,
    port: u16,
    protocol: L4,
) -> Result<Probe<'a>> {
    let pod = |key: &str| {
        cluster
            .pod(key)
            .ok_or_else(|| format!("the probe names {key}, which is not a pod of the cluster"))
    };
    let (client, server) = (pod(from)?, pod(to)?);
    Ok(Probe {
        client: &client.inside,
        client_ip: client.plan.ip,
        target: match via {
            Via::PodIp => server.plan.ip,
            Via::ServiceIp => server.plan.service_ip,
        },
        port,
        protocol,
        identity: &server.identity,
        sctp: &server.servers.sctp,
    })
}

/// Runs probes concurrently ([`PARALLEL`] at a time); outcomes in the probes' order.
pub async fn run_many(probes: &[Probe<'_>]) -> Vec<Outcome> {
    futures::stream::iter(probes)
        .map(Probe::run)
        .buffered(PARALLEL)
        .collect()
        .await
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The connection was made (TCP), answered (UDP) or arrived (SCTP).
    Connected,
    /// Nothing within [`TIMEOUT`]: the policy dropped it.
    TimedOut,
    /// Something the policy cannot cause.
    Error(String),
}

impl Outcome {
    /// The verdict this outcome means: `Some(true)` allowed, `Some(false)` denied, `None` for
    /// an error.
    pub fn allowed(&self) -> Option<bool> {
        match self {
            Self::Connected => Some(true),
            Self::TimedOut => Some(false),
            Self::Error(_) => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connected => f.write_str("allowed"),
            Self::TimedOut => f.write_str("denied"),
            Self::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// One probe: from a pod to an address and port.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The client pod's namespace.
    pub client: &'a InNetns,
    /// The client pod's IP (the source the destination must see).
    pub client_ip: Ipv4Addr,
    /// Where to connect: the destination's pod IP or Service IP.
    pub target: Ipv4Addr,
    /// The destination port (the same on the Service and the pod).
    pub port: u16,
    /// The transport protocol.
    pub protocol: L4,
    /// The destination pod's identity (`ns/name`), which its servers answer with.
    pub identity: &'a str,
    /// The destination pod's SCTP observer.
    pub sctp: &'a SctpSeen,
}

impl Probe<'_> {
    /// Sends the probe and waits for its outcome.
    pub async fn run(&self) -> Outcome {
        let result = match self.protocol {
            L4::Tcp => self.tcp().await,
            L4::Udp => self.udp().await,
            L4::Sctp => self.sctp().await,
        };
        result.unwrap_or_else(Outcome::Error)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.target, self.port))
    }

    async fn tcp(&self) -> Result<Outcome> {
        let socket = self
            .client
            .socket(Domain::IPV4, Type::STREAM, None)
            .await
            .map_err(|e| format!("tcp socket: {e}"))?;
        let socket = TcpSocket::from_std_stream(socket.into());
        let mut stream = match timeout(TIMEOUT, socket.connect(self.addr())).await {
            Err(_) => return Ok(Outcome::TimedOut),
            Ok(Err(e)) => return Err(format!("connect: {e}")),
            Ok(Ok(stream)) => stream,
        };
        let mut answer = Vec::new();
        match timeout(TIMEOUT, stream.read_to_end(&mut answer)).await {
            Err(_) => Err("connected, but no answer from the server".to_owned()),
            Ok(Err(e)) => Err(format!("connected, then read failed: {e}")),
            Ok(Ok(_)) => self.check_identity(&answer, b""),
        }
    }

    async fn udp(&self) -> Result<Outcome> {
        let socket = self
            .client
            .socket(Domain::IPV4, Type::DGRAM, None)
            .await
            .map_err(|e| format!("udp socket: {e}"))?;
        let mut bound = Err(std::io::Error::other("no port tried"));
        for _ in 0..16 {
            let local = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, next_source_port());
            bound = socket.bind(&SocketAddr::V4(local).into());
            if bound.is_ok() {
                break;
            }
        }
        bound.map_err(|e| format!("udp bind: {e}"))?;
        let socket = UdpSocket::from_std(socket.into()).map_err(|e| format!("udp: {e}"))?;
        socket
            .connect(self.addr())
            .await
            .map_err(|e| format!("udp connect: {e}"))?;
        let request = format!("probe {}", next_tag());
        socket
            .send(request.as_bytes())
            .await
            .map_err(|e| format!("udp send: {e}"))?;
        let mut buf = [0u8; 1500];
        match timeout(TIMEOUT, socket.recv(&mut buf)).await {
            Err(_) => Ok(Outcome::TimedOut),
            Ok(Err(e)) => Err(format!("udp receive: {e}")),
            Ok(Ok(n)) => self.check_identity(&buf[..n], format!(" {request}").as_bytes()),
        }
    }

    async fn sctp(&self) -> Result<Outcome> {
        let raw = Protocol::from(i32::from(sctp::IPPROTO_SCTP));
        let socket = self
            .client
            .socket(Domain::IPV4, Type::RAW, Some(raw))
            .await
            .map_err(|e| format!("raw socket: {e}"))?;
        let (tag, src_port) = (next_tag(), next_source_port());
        let packet = sctp::init_packet(src_port, self.port, tag);
        let to = SockAddr::from(SocketAddrV4::new(self.target, 0));
        socket
            .send_to(&packet, &to)
            .map_err(|e| format!("sending the SCTP INIT: {e}"))?;
        let Ok(init) = timeout(TIMEOUT, self.sctp.wait(tag)).await else {
            return Ok(Outcome::TimedOut);
        };
        if (init.src, init.src_port, init.dst_port) == (self.client_ip, src_port, self.port) {
            Ok(Outcome::Connected)
        } else {
            Err(format!(
                "INIT arrived as {}:{} -> {}:{}, sent from {}:{src_port} to port {}",
                init.src, init.src_port, init.dst, init.dst_port, self.client_ip, self.port
            ))
        }
    }

    fn check_identity(&self, answer: &[u8], suffix: &[u8]) -> Result<Outcome> {
        let expected = [self.identity.as_bytes(), suffix].concat();
        if answer == expected.as_slice() {
            Ok(Outcome::Connected)
        } else {
            Err(format!(
                "answered {:?}, expected {:?}",
                String::from_utf8_lossy(answer),
                String::from_utf8_lossy(&expected)
            ))
        }
    }
}

/// The next source port for UDP and SCTP probes.
fn next_source_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = SOURCE_PORTS.end - SOURCE_PORTS.start;
    let port = SOURCE_PORTS.start + NEXT.fetch_add(1, Ordering::Relaxed) % span;
    u16::try_from(port).unwrap_or(u16::MAX)
}

/// A fresh, non-zero probe id (SCTP initiate tag, UDP payload).
fn next_tag() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
