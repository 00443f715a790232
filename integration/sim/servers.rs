//! What runs inside each pod: TCP and UDP servers (on ports 80 and 81 for the upstream
//! NetworkPolicy cases, on the ports its containers serve for the ClusterNetworkPolicy suite),
//! and an SCTP observer.
//!
//! - TCP: accepts, writes the pod's identity (`ns/name`) and closes, so a probe knows it
//!   reached the pod it meant (through the Service DNAT too).
//! - UDP: answers each datagram with the identity, a space and the datagram.
//! - SCTP: no SCTP sockets on this kernel, so a packet socket (AF_PACKET, IPv4) watches the
//!   pod's interfaces and records the INIT chunks addressed to the pod IP (for a host-network
//!   pod, in its node's namespace, a raw SCTP socket: what the node delivers); an SCTP probe is
//!   allowed when its INIT shows up here. The socket sees the pod's own outgoing packets too;
//!   those are not addressed to the pod and are ignored.
//!
//! Sockets are created inside the pod namespace ([`InNetns`]) and served by tasks of the
//! test's tokio runtime (the SCTP watcher by a thread of its own); dropping [`Servers`] stops
//! them.

use std::collections::HashMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::Result;
use crate::sctp::{self, Init};
use crate::setns::InNetns;

/// Ports every pod serves over TCP and UDP.
pub const PORTS: [u16; 2] = [80, 81];

/// The EtherType of IPv4, which packet sockets take in network byte order.
const ETH_P_IP: u16 = 0x0800;

/// How often the SCTP watcher looks whether it should stop.
const WATCH_POLL: Duration = Duration::from_millis(200);

/// SCTP INITs that reached a pod, by initiate tag.
#[derive(Debug, Default)]
pub struct SctpSeen {
    seen: Mutex<HashMap<u32, Init>>,
    changed: Notify,
}

impl SctpSeen {
    /// The INIT with this tag, if it arrived.
    pub fn get(&self, tag: u32) -> Option<Init> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tag)
            .copied()
    }

    /// Waits until the INIT with this tag arrives; cancel it with a timeout.
    pub async fn wait(&self, tag: u32) -> Init {
        loop {
            let changed = self.changed.notified();
            if let Some(init) = self.get(tag) {
                return init;
            }
            changed.await;
        }
    }

    fn record(&self, init: Init) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(init.initiate_tag, init);
        self.changed.notify_waiters();
    }
}

/// A pod's servers; they stop when this is dropped.
#[derive(Debug)]
pub struct Servers {
    /// INITs addressed to the pod.
    pub sctp: Arc<SctpSeen>,
    tasks: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl Servers {
    /// Starts the servers of the pod `identity` (`ns/name`) with address `pod_ip`, on these TCP
    /// and UDP ports ([`PORTS`] for the upstream NetworkPolicy cases) of address `bind` (a pod:
    /// every address; a host-network pod: its node's, so that UDP answers come from the address
    /// the client asked, as upstream's `--udp-listen-addresses $(HOST_IP)` does); the SCTP
    /// observer records INITs to `pod_ip`.
    pub async fn start_serving(
        netns: &InNetns,
        pod_ip: Ipv4Addr,
        bind: Ipv4Addr,
        identity: &str,
        tcp_ports: &[u16],
        udp_ports: &[u16],
    ) -> Result<Self> {
        let context = |what: String| move |e: std::io::Error| format!("{identity}: {what}: {e}");
        let mut tasks = Vec::new();
        for &port in tcp_ports {
            let any = SocketAddr::V4(SocketAddrV4::new(bind, port));

            let tcp = netns
                .socket(Domain::IPV4, Type::STREAM, None)
                .await
                .map_err(context(format!("tcp socket {port}")))?;
            tcp.set_reuse_address(true)
                .and_then(|()| tcp.bind(&any.into()))
                .and_then(|()| tcp.listen(1024))
                .map_err(context(format!("tcp listen {port}")))?;
            let listener = TcpListener::from_std(tcp.into())
                .map_err(context(format!("tcp listener {port}")))?;
            tasks.push(tokio::spawn(serve_tcp(listener, identity.to_owned())));
        }
        for &port in udp_ports {
            let any = SocketAddr::V4(SocketAddrV4::new(bind, port));
            let udp = netns
                .socket(Domain::IPV4, Type::DGRAM, None)
                .await
                .map_err(context(format!("udp socket {port}")))?;
            udp.bind(&any.into())
                .map_err(context(format!("udp bind {port}")))?;
            let udp =
                UdpSocket::from_std(udp.into()).map_err(context(format!("udp socket {port}")))?;
            tasks.push(tokio::spawn(serve_udp(udp, identity.to_owned())));
        }

        // A pod's interface only ever sees what its node let through; a node's own interfaces
        // see packets before its `input` chain judges them, so a host-network pod watches what
        // is delivered to it instead: a raw SCTP socket gets a copy of each SCTP packet after
        // `input` (the kernel has no SCTP module to take it).
        let packets = if bind.is_unspecified() {
            let protocol = Protocol::from(i32::from(ETH_P_IP.to_be()));
            netns
                .socket(Domain::PACKET, Type::DGRAM, Some(protocol))
                .await
        } else {
            let protocol = Protocol::from(i32::from(crate::sctp::IPPROTO_SCTP));
            netns.socket(Domain::IPV4, Type::RAW, Some(protocol)).await
        }
        .map_err(context("packet socket".to_owned()))?;
        packets
            .set_nonblocking(false)
            .and_then(|()| packets.set_read_timeout(Some(WATCH_POLL)))
            .map_err(context("packet socket".to_owned()))?;
        let sctp = Arc::new(SctpSeen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (sctp, stop) = (Arc::clone(&sctp), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("sctp-{identity}"))
                .spawn(move || watch_sctp(&packets, pod_ip, &sctp, &stop))
                .map_err(context("sctp watcher thread".to_owned()))?
        };
        Ok(Self {
            sctp,
            tasks,
            stop,
            watcher: Some(watcher),
        })
    }
}

impl Servers {
    /// Stops the SCTP observer: its packet socket gets a copy of every packet of the pod, a
    /// cost the dataplane benchmark's traffic must not pay. SCTP probes to the pod then time
    /// out.
    pub fn stop_sctp_observer(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.stop_sctp_observer();
    }
}

async fn serve_tcp(listener: TcpListener, identity: String) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let identity = identity.clone();
        tokio::spawn(async move {
            let _ = stream.write_all(identity.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn serve_udp(socket: UdpSocket, identity: String) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let mut reply = identity.as_bytes().to_vec();
        reply.push(b' ');
        reply.extend_from_slice(&buf[..n]);
        let _ = socket.send_to(&reply, peer).await;
    }
}

/// Reads the packet socket on a thread of its own (a blocking read with a timeout, so it
/// notices `stop`), recording the INITs addressed to the pod.
fn watch_sctp(packets: &Socket, pod_ip: Ipv4Addr, seen: &SctpSeen, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        // Errors are the read timeout (or a transient one): look at `stop` and read again.
        if let Ok(n) = { packets }.read(&mut buf)
            && let Some(init) = buf.get(..n).and_then(sctp::parse_init)
            && init.dst == pod_ip
        {
            seen.record(init);
        }
    }
}
