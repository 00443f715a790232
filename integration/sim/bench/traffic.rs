//! The dataplane benchmark's traffic: servers in the server pod and the loads the client pods
//! run against them, all plain blocking sockets on threads inside the pods' namespaces.
//!
//! - [`BenchServer`]: port [`RR_PORT`] answers one [`MESSAGE`]-byte request with one
//!   [`MESSAGE`]-byte response and closes (the new-connection load); [`SINK_PORT`] reads and
//!   discards (bulk throughput); [`ECHO_PORT`] echoes [`MESSAGE`]-byte messages on a kept-open
//!   connection (request latency without connection setup).
//! - Loads, each run on a pod's own thread ([`InNetns::run`]) so sockets belong to that pod:
//!   [`requests`] (connect, send, receive, close, again until a deadline: the SYN of every
//!   connection walks the policy chains), [`bulk`] (one stream, 128 KiB writes), [`ping_pong`]
//!   (round trips on one connection) and [`flood`] (UDP datagrams round-robin over targets).
//!
//! Clients close with an RST (linger 0), so no TIME_WAIT socket holds a port and a long run
//! never runs out of ephemeral ports; the server's response has arrived by then. It measures;
//! it decides nothing (that is `dataplane.rs`).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Type};

use crate::Result;
use crate::setns::InNetns;

/// Request/response, one per connection.
pub const RR_PORT: u16 = 5201;
/// Bulk sink.
pub const SINK_PORT: u16 = 5202;
/// Echo on a kept-open connection.
pub const ECHO_PORT: u16 = 5203;
/// Request and response size, in bytes.
pub const MESSAGE: usize = 64;
/// Threads answering [`RR_PORT`], one per client pod of the connection load.
const RR_THREADS: usize = 4;
/// How long any socket operation may block before the load counts an error.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often idle server threads look whether they should stop (accept's receive timeout).
const ACCEPT_POLL: Duration = Duration::from_millis(200);
/// Bulk write size.
const BULK_WRITE: usize = 128 * 1024;

/// The servers of the server pod; they stop on drop.
#[derive(Debug)]
pub struct BenchServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl BenchServer {
    /// Listens on the three ports inside the pod.
    pub async fn start(inside: &InNetns) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let rr = listen(inside, RR_PORT).await?;
        for _ in 0..RR_THREADS {
            let (listener, stop) = (clone(&rr)?, Arc::clone(&stop));
            threads.push(spawn("bench-rr", move || {
                accept_loop(&listener, &stop, |s| {
                    let _ = answer(s);
                })
            })?);
        }
        for (port, serve) in [(SINK_PORT, sink as fn(TcpStream)), (ECHO_PORT, echo)] {
            let (listener, stop) = (listen(inside, port).await?, Arc::clone(&stop));
            threads.push(spawn("bench-accept", move || {
                accept_loop(&listener, &stop, |s| {
                    // Connections of these ports are few and long: a thread each.
                    let _ = std::thread::Builder::new().spawn(move || serve(s));
                })
            })?);
        }
        Ok(Self { stop, threads })
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

async fn listen(inside: &InNetns, port: u16) -> Result<TcpListener> {
    let context = |e: io::Error| format!("bench server port {port}: {e}");
    let socket = inside
        .socket(Domain::IPV4, Type::STREAM, None)
        .await
        .map_err(context)?;
    let any = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    socket
        .set_nonblocking(false)
        .and_then(|()| socket.set_reuse_address(true))
        .and_then(|()| socket.bind(&any.into()))
        .and_then(|()| socket.listen(4096))
        // accept(2) honours the receive timeout, so idle threads notice `stop`.
        .and_then(|()| socket.set_read_timeout(Some(ACCEPT_POLL)))
        .map_err(context)?;
    Ok(socket.into())
}

fn clone(listener: &TcpListener) -> Result<TcpListener> {
    listener
        .try_clone()
        .map_err(|e| format!("bench server: {e}"))
}

fn spawn(name: &str, job: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(job)
        .map_err(|e| format!("bench server thread: {e}"))
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, mut serve: impl FnMut(TcpStream)) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok((stream, _)) = listener.accept()
            && stream.set_read_timeout(Some(IO_TIMEOUT)).is_ok()
            && stream.set_nodelay(true).is_ok()
        {
            serve(stream);
        }
    }
}

fn answer(mut stream: TcpStream) -> io::Result<()> {
    let mut request = [0u8; MESSAGE];
    stream.read_exact(&mut request)?;
    stream.write_all(&request)
}

fn sink(mut stream: TcpStream) {
    let mut buf = vec![0u8; BULK_WRITE];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

fn echo(mut stream: TcpStream) {
    let mut message = [0u8; MESSAGE];
    while stream.read_exact(&mut message).is_ok() {
        if stream.write_all(&message).is_err() {
            break;
        }
    }
}

/// What a load did.
#[derive(Debug, Default, Clone)]
pub struct Run {
    /// Completed connections, round trips or datagrams sent.
    pub done: u64,
    /// Failed ones (a refused or timed-out connection, a short answer, a failed send).
    pub errors: u64,
    /// Bytes written (bulk).
    pub bytes: u64,
    /// How long it ran.
    pub took: Duration,
    /// Per-operation latencies, when asked for.
    pub latencies: Vec<Duration>,
}

/// New connections to `target`'s [`RR_PORT`] one after the other until `until`, or `limit`
/// of them: connect, send a request, read the response, close. Records each one's latency
/// (connect to response) with `record`.
pub fn requests(target: Ipv4Addr, until: Instant, limit: u64, record: bool) -> Run {
    let to = SocketAddr::V4(SocketAddrV4::new(target, RR_PORT));
    let mut run = Run::default();
    let started = Instant::now();
    while Instant::now() < until && run.done < limit {
        let began = Instant::now();
        match request(&to) {
            Ok(()) => {
                run.done += 1;
                if record {
                    run.latencies.push(began.elapsed());
                }
            }
            Err(_) => run.errors += 1,
        }
    }
    run.took = started.elapsed();
    run
}

fn request(to: &SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(to, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(&[7u8; MESSAGE])?;
    let mut response = [0u8; MESSAGE];
    stream.read_exact(&mut response)?;
    // An RST instead of a FIN: no TIME_WAIT socket keeps the port.
    SockRef::from(&stream).set_linger(Some(Duration::ZERO))
}

/// One stream to `target`'s [`SINK_PORT`] for `length`.
pub fn bulk(target: Ipv4Addr, length: Duration) -> Run {
    let to = SocketAddr::V4(SocketAddrV4::new(target, SINK_PORT));
    let mut run = Run::default();
    let mut stream = match TcpStream::connect_timeout(&to, IO_TIMEOUT) {
        Ok(stream) => stream,
        Err(_) => {
            run.errors = 1;
            return run;
        }
    };
    let buf = vec![1u8; BULK_WRITE];
    let started = Instant::now();
    while started.elapsed() < length {
        match stream.write_all(&buf) {
            Ok(()) => run.bytes += BULK_WRITE as u64,
            Err(_) => {
                run.errors += 1;
                break;
            }
        }
    }
    run.took = started.elapsed();
    run.done = 1;
    let _ = stream.shutdown(Shutdown::Write);
    run
}

/// `count` round trips of [`MESSAGE`] bytes on one connection to `target`'s [`ECHO_PORT`],
/// each one's latency recorded.
pub fn ping_pong(target: Ipv4Addr, count: u64) -> Run {
    let to = SocketAddr::V4(SocketAddrV4::new(target, ECHO_PORT));
    let mut run = Run::default();
    let connected = TcpStream::connect_timeout(&to, IO_TIMEOUT).and_then(|s| {
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_nodelay(true)?;
        Ok(s)
    });
    let Ok(mut stream) = connected else {
        run.errors = 1;
        return run;
    };
    let started = Instant::now();
    let mut message = [3u8; MESSAGE];
    for _ in 0..count {
        let began = Instant::now();
        match stream
            .write_all(&message)
            .and_then(|()| stream.read_exact(&mut message))
        {
            Ok(()) => {
                run.done += 1;
                run.latencies.push(began.elapsed());
            }
            Err(_) => {
                run.errors += 1;
                break;
            }
        }
    }
    run.took = started.elapsed();
    run
}

/// UDP datagrams to `targets` in turn (port `port`) as fast as one thread sends them, until
/// `until`. A failed send (ENOBUFS when the queue is full) counts as an error.
pub fn flood(targets: &[Ipv4Addr], port: u16, until: Instant) -> Run {
    let mut run = Run::default();
    let Ok(socket) = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)) else {
        run.errors = 1;
        return run;
    };
    let started = Instant::now();
    let mut i = 0usize;
    // The clock is read once per 64 datagrams.
    'sending: loop {
        for _ in 0..64 {
            let Some(target) = targets.get(i % targets.len().max(1)) else {
                break 'sending;
            };
            i += 1;
            match socket.send_to(&i.to_be_bytes(), SocketAddrV4::new(*target, port)) {
                Ok(_) => run.done += 1,
                Err(_) => run.errors += 1,
            }
        }
        if Instant::now() >= until {
            break;
        }
    }
    run.took = started.elapsed();
    run
}
