//! Long-lived connections between pods for the revocation suite: both ends keep sending
//! numbered messages and check what they receive, so the test knows when (and whether) either
//! end saw the connection fail, and whether a single byte went missing.
//!
//! - TCP: a listener in the server pod accepts one connection; both ends write a big-endian
//!   `u32` counter every [`INTERVAL`] and read the other's, which must count up from 0 without
//!   a gap.
//! - UDP: the server binds the port and, on the first datagram, connects its socket to the
//!   client (so ICMP errors reach it, as they reach the client's connected socket); then the
//!   same counters, one per datagram.
//!
//! An end fails at the first error (a reset, a refusal, an end of stream) or a gap in the
//! counter, and records when. Sockets are made inside the pods' namespaces ([`InNetns`]) and
//! driven by tasks of the test's runtime; dropping a [`Stream`] stops them.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use socket2::{Domain, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::Result;
use crate::setns::InNetns;

/// How often each end sends.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// How long setting a stream up may take.
const SETUP: Duration = Duration::from_secs(3);

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
}

/// What one end saw.
#[derive(Debug, Default, Clone)]
pub struct End {
    /// Messages received in order.
    pub received: u32,
    /// The first failure, and when.
    pub failed: Option<(Instant, String)>,
}

/// One long-lived connection, its two ends running.
pub struct Stream {
    /// `client -> server:port (tcp)`, for reports.
    pub name: String,
    pub client: Arc<Mutex<End>>,
    pub server: Arc<Mutex<End>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock(end: &Mutex<End>) -> std::sync::MutexGuard<'_, End> {
    end.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stream {
    /// Opens a stream from the `client` pod to `target:port` (a pod or Service address), served
    /// by the `server` pod on `port`; returns once both ends have received a message.
    pub async fn open(
        name: String,
        kind: Kind,
        client: &InNetns,
        server: &InNetns,
        target: Ipv4Addr,
        port: u16,
    ) -> Result<Self> {
        let (client_end, server_end) = (Arc::default(), Arc::default());
        let tasks = match kind {
            Kind::Tcp => open_tcp(client, server, target, port, &client_end, &server_end).await,
            Kind::Udp => open_udp(client, server, target, port, &client_end, &server_end).await,
        }
        .map_err(|e| format!("{name}: {e}"))?;
        let stream = Self {
            name,
            client: client_end,
            server: server_end,
            tasks,
        };
        let deadline = Instant::now() + SETUP;
        while stream.received().0 == 0 || stream.received().1 == 0 {
            if let Some(failure) = stream.failure() {
                return Err(format!("{}: failed while starting: {failure}", stream.name));
            }
            if Instant::now() > deadline {
                return Err(format!("{}: no message within {SETUP:?}", stream.name));
            }
            tokio::time::sleep(INTERVAL).await;
        }
        Ok(stream)
    }

    /// Messages received by the client and by the server.
    pub fn received(&self) -> (u32, u32) {
        (lock(&self.client).received, lock(&self.server).received)
    }

    /// The first failure of either end, described.
    pub fn failure(&self) -> Option<String> {
        [("client", &self.client), ("server", &self.server)]
            .into_iter()
            .find_map(|(which, end)| {
                lock(end)
                    .failed
                    .as_ref()
                    .map(|(_, why)| format!("{which}: {why}"))
            })
    }

    /// When both ends had failed (the later of the two), if they have.
    pub fn both_failed(&self) -> Option<Instant> {
        let client = lock(&self.client).failed.as_ref().map(|(at, _)| *at)?;
        let server = lock(&self.server).failed.as_ref().map(|(at, _)| *at)?;
        Some(client.max(server))
    }
}

fn fail(end: &Mutex<End>, why: String) {
    let mut end = lock(end);
    if end.failed.is_none() {
        end.failed = Some((Instant::now(), why));
    }
}

/// Counts a received number; false (and the end failed) on a gap.
fn receive(end: &Mutex<End>, number: u32) -> bool {
    let mut state = lock(end);
    if number != state.received {
        let expected = state.received;
        drop(state);
        fail(end, format!("received {number}, expected {expected}: lost"));
        return false;
    }
    state.received += 1;
    true
}

async fn open_tcp(
    client: &InNetns,
    server: &InNetns,
    target: Ipv4Addr,
    port: u16,
    client_end: &Arc<Mutex<End>>,
    server_end: &Arc<Mutex<End>>,
) -> Result<Vec<JoinHandle<()>>> {
    let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    let listener = server
        .socket(Domain::IPV4, Type::STREAM, None)
        .await
        .map_err(|e| format!("listen socket: {e}"))?;
    listener
        .set_reuse_address(true)
        .and_then(|()| listener.bind(&any.into()))
        .and_then(|()| listener.listen(8))
        .map_err(|e| format!("listen: {e}"))?;
    let listener = TcpListener::from_std(listener.into()).map_err(|e| format!("listen: {e}"))?;
    let socket = client
        .socket(Domain::IPV4, Type::STREAM, None)
        .await
        .map_err(|e| format!("client socket: {e}"))?;
    let socket = TcpSocket::from_std_stream(socket.into());
    let target = SocketAddr::V4(SocketAddrV4::new(target, port));
    let (connected, accepted) = tokio::join!(
        timeout(SETUP, socket.connect(target)),
        timeout(SETUP, listener.accept())
    );
    let client_stream = connected
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let (server_stream, _) = accepted
        .map_err(|_| "accept timed out".to_owned())?
        .map_err(|e| format!("accept: {e}"))?;
    let mut tasks = Vec::new();
    for (stream, end) in [(client_stream, client_end), (server_stream, server_end)] {
        let (reader, writer) = stream.into_split();
        tasks.push(tokio::spawn(tcp_reader(reader, Arc::clone(end))));
        tasks.push(tokio::spawn(tcp_writer(writer, Arc::clone(end))));
    }
    Ok(tasks)
}

async fn tcp_reader(mut reader: tokio::net::tcp::OwnedReadHalf, end: Arc<Mutex<End>>) {
    let mut buf = [0u8; 4];
    loop {
        match reader.read_exact(&mut buf).await {
            Ok(_) => {
                if !receive(&end, u32::from_be_bytes(buf)) {
                    return;
                }
            }
            Err(e) => return fail(&end, format!("read: {e}")),
        }
    }
}

async fn tcp_writer(mut writer: tokio::net::tcp::OwnedWriteHalf, end: Arc<Mutex<End>>) {
    let mut number: u32 = 0;
    loop {
        if lock(&end).failed.is_some() {
            return;
        }
        if let Err(e) = writer.write_all(&number.to_be_bytes()).await {
            return fail(&end, format!("write: {e}"));
        }
        number += 1;
        tokio::time::sleep(INTERVAL).await;
    }
}

async fn open_udp(
    client: &InNetns,
    server: &InNetns,
    target: Ipv4Addr,
    port: u16,
    client_end: &Arc<Mutex<End>>,
    server_end: &Arc<Mutex<End>>,
) -> Result<Vec<JoinHandle<()>>> {
    let any = |port| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    let server_socket = server
        .socket(Domain::IPV4, Type::DGRAM, None)
        .await
        .map_err(|e| format!("server socket: {e}"))?;
    server_socket
        .set_reuse_address(true)
        .and_then(|()| server_socket.bind(&any(port).into()))
        .map_err(|e| format!("server bind: {e}"))?;
    let server_socket =
        UdpSocket::from_std(server_socket.into()).map_err(|e| format!("server: {e}"))?;
    let client_socket = client
        .socket(Domain::IPV4, Type::DGRAM, None)
        .await
        .map_err(|e| format!("client socket: {e}"))?;
    client_socket
        .bind(&any(0).into())
        .map_err(|e| format!("client bind: {e}"))?;
    let client_socket =
        UdpSocket::from_std(client_socket.into()).map_err(|e| format!("client: {e}"))?;
    client_socket
        .connect(SocketAddr::V4(SocketAddrV4::new(target, port)))
        .await
        .map_err(|e| format!("client connect: {e}"))?;
    // The first datagram tells the server who the client is (numbered 0 like every first).
    client_socket
        .send(&0u32.to_be_bytes())
        .await
        .map_err(|e| format!("first send: {e}"))?;
    let mut buf = [0u8; 64];
    let (n, peer) = timeout(SETUP, server_socket.recv_from(&mut buf))
        .await
        .map_err(|_| "the first datagram did not arrive".to_owned())?
        .map_err(|e| format!("first receive: {e}"))?;
    if n != 4 || buf[..4] != [0; 4] {
        return Err("a strange first datagram".into());
    }
    lock(server_end).received = 1;
    server_socket
        .connect(peer)
        .await
        .map_err(|e| format!("server connect: {e}"))?;
    let client_socket = Arc::new(client_socket);
    let server_socket = Arc::new(server_socket);
    let mut tasks = Vec::new();
    for (socket, end, first) in [
        (client_socket, client_end, 1u32),
        (server_socket, server_end, 0u32),
    ] {
        tasks.push(tokio::spawn(udp_reader(
            Arc::clone(&socket),
            Arc::clone(end),
        )));
        tasks.push(tokio::spawn(udp_writer(socket, Arc::clone(end), first)));
    }
    Ok(tasks)
}

async fn udp_reader(socket: Arc<UdpSocket>, end: Arc<Mutex<End>>) {
    let mut buf = [0u8; 64];
    loop {
        match socket.recv(&mut buf).await {
            Ok(4) => {
                let number = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if !receive(&end, number) {
                    return;
                }
            }
            Ok(n) => return fail(&end, format!("a datagram of {n} bytes")),
            Err(e) => return fail(&end, format!("receive: {e}")),
        }
    }
}

async fn udp_writer(socket: Arc<UdpSocket>, end: Arc<Mutex<End>>, first: u32) {
    let mut number = first;
    loop {
        if lock(&end).failed.is_some() {
            return;
        }
        if let Err(e) = socket.send(&number.to_be_bytes()).await {
            return fail(&end, format!("send: {e}"));
        }
        number += 1;
        tokio::time::sleep(INTERVAL).await;
    }
}
