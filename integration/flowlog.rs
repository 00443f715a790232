//! Root suite: NFLOG records from real nftables rules to [`flowlog`] events, inside network
//! namespaces it creates (never in the host's).
//!
//! Each test makes a client and a server namespace joined by a veth pair (10.98.0.1/fd00:98::1
//! and 10.98.0.2/fd00:98::2, static neighbours so the first packet is not held up by ARP or
//! neighbour discovery), loads a rule shaped like the compiler's default-deny log rule into the
//! server's input hook, binds the reader inside the server namespace (a thread that `setns`es
//! first) and sends from a thread inside the client namespace. It proves: records arrive within
//! a second with the right prefix, addresses, ports and protocol; delivery latency; a second
//! binder gets a clear error; and in bursts every logged packet is received or counted lost.
//! Run with `cargo test --test flowlog` as root (`-- --nocapture` prints the figures); it
//! fails loudly otherwise.

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, mpsc as std_mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube_nftpol::flow_line::Format;
use kube_nftpol::flowlog::Record;
use kube_nftpol::flowlog::decode;
use kube_nftpol::flowlog::enrich;
use kube_nftpol::flowlog::nflog::{self, Config, Error, NflogEvent, ReaderStats};
use kube_nftpol::model::{Direction, IpProtocol, ObjectKey, Pod, PodPhase, Snapshot};
use nix::sched::{CloneFlags, setns};
use serde_json::json;
use tokio::sync::mpsc::Receiver;

const GROUP: u16 = 100;
const PREFIX: &str = "knp:deny:ingress:ns/pod";
const CLIENT4: &str = "10.98.0.1";
const SERVER4: &str = "10.98.0.2";
const CLIENT6: &str = "fd00:98::1";
const SERVER6: &str = "fd00:98::2";

/// Tests run one at a time so the latency and burst figures are not skewed by each other.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A scratch network namespace, deleted on drop (also when a test fails).
struct Netns(String);

impl Netns {
    fn new(role: &str) -> Self {
        assert!(
            Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"0\n")),
            "*** the flowlog suite needs root (network namespaces, nftables, NFLOG): run it \
             with sudo"
        );
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "knp-fl-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        Self(name)
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.0];
        all.extend(args);
        run("ip", &all);
    }

    fn nft_script(&self, script: &str) {
        let path = std::env::temp_dir().join(format!("{}.nft", self.0));
        std::fs::write(&path, script).unwrap();
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.0,
                "nft",
                "-f",
                path.to_str().unwrap(),
            ],
        );
        let _ = std::fs::remove_file(path);
    }

    /// Packets counted by the rule commented `comment`.
    fn counter(&self, comment: &str) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.0,
                "nft",
                "list",
                "table",
                "inet",
                "kube-nftpol",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains(&format!("comment \"{comment}\"")))
            .unwrap_or_else(|| panic!("no rule {comment:?} in {text}"));
        let (_, rest) = line.split_once("counter packets ").unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// A thread inside this namespace that runs jobs in order.
    fn thread(&self) -> NetnsThread {
        let path = format!("/run/netns/{}", self.0);
        let (jobs, queue) = std_mpsc::channel::<Job>();
        let handle = thread::spawn(move || {
            let netns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(&netns, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
            for job in queue {
                job();
            }
        });
        NetnsThread {
            jobs: Some(jobs),
            handle: Some(handle),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread that has `setns`ed into a namespace: sockets it creates live there.
struct NetnsThread {
    jobs: Option<std_mpsc::Sender<Job>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl NetnsThread {
    /// Starts `job` on the thread; the receiver yields its result.
    fn spawn<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> std_mpsc::Receiver<T> {
        let (tx, rx) = std_mpsc::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(job());
        });
        self.jobs.as_ref().unwrap().send(job).unwrap();
        rx
    }

    /// Runs `job` on the thread and waits for it.
    fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(job)
            .recv()
            .expect("the namespace thread panicked")
    }
}

impl Drop for NetnsThread {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Client and server namespaces joined by a veth pair.
struct Pair {
    client: Netns,
    server: Netns,
}

impl Pair {
    fn new() -> Self {
        let client = Netns::new("client");
        let server = Netns::new("server");
        run(
            "ip",
            &[
                "link",
                "add",
                "veth-c",
                "netns",
                &client.0,
                "address",
                "02:00:00:00:98:01",
                "type",
                "veth",
                "peer",
                "name",
                "veth-s",
                "netns",
                &server.0,
                "address",
                "02:00:00:00:98:02",
            ],
        );
        for (ns, dev, v4, v6, peer4, peer6, peer_mac) in [
            (
                &client,
                "veth-c",
                CLIENT4,
                CLIENT6,
                SERVER4,
                SERVER6,
                "02:00:00:00:98:02",
            ),
            (
                &server,
                "veth-s",
                SERVER4,
                SERVER6,
                CLIENT4,
                CLIENT6,
                "02:00:00:00:98:01",
            ),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
            ns.ip(&["link", "set", "lo", "up"]);
            for peer in [peer4, peer6] {
                ns.ip(&[
                    "neigh",
                    "replace",
                    peer,
                    "lladdr",
                    peer_mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ]);
            }
        }
        Self { client, server }
    }

    /// The server's input chain: `rules`, each a full nft rule line.
    fn server_rules(&self, rules: &str) {
        self.server.nft_script(&format!(
            "table inet kube-nftpol {{
                chain input {{
                    type filter hook input priority filter; policy accept;
                    {rules}
                }}
            }}"
        ));
    }
}

/// The compiler's default-deny tail (rate-limited log, then counted drop) for everything from
/// the client.
fn compiled_style_rules() -> String {
    let log = format!(
        "limit rate 10/second burst 20 packets log prefix \"{PREFIX}\" group {GROUP} \
         snaplen 128 queue-threshold 1"
    );
    format!(
        "ip saddr {CLIENT4} {log}
         ip6 saddr {CLIENT6} {log}
         ip saddr {CLIENT4} counter drop
         ip6 saddr {CLIENT6} counter drop"
    )
}

/// A log rule without the limit, counted (before the log, so the counter is what was logged),
/// for UDP to `port`.
fn unlimited_rule(port: u16, comment: &str) -> String {
    format!(
        "ip saddr {CLIENT4} udp dport {port} counter log prefix \"{PREFIX}\" group {GROUP} \
         snaplen 128 queue-threshold 1 drop comment \"{comment}\""
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn spawn_reader(
    server: &NetnsThread,
    config: Config,
) -> Result<(Receiver<NflogEvent>, ReaderStats), Error> {
    server.run(move || nflog::spawn_reader_with(&config))
}

/// The next record, skipping loss events; `None` after `wait` without one.
fn next_record(
    rt: &tokio::runtime::Runtime,
    rx: &mut Receiver<NflogEvent>,
    wait: Duration,
) -> Option<Record> {
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(NflogEvent::Record(record))) => return Some(record),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    })
}

/// Drops the receiver and waits for the reader thread to end (releasing the group).
fn stop(rx: Receiver<NflogEvent>, stats: &ReaderStats) {
    drop(rx);
    let deadline = Instant::now() + Duration::from_secs(2);
    while stats.snapshot().running {
        assert!(Instant::now() < deadline, "the reader did not stop");
        thread::sleep(Duration::from_millis(10));
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// A TCP SYN from the client (connect times out: the server drops it).
fn syn(client: &NetnsThread, to: SocketAddr) {
    client.spawn(move || {
        let _ = TcpStream::connect_timeout(&to, Duration::from_millis(300));
    });
}

/// One UDP datagram of `len` bytes from `from`.
fn udp(client: &NetnsThread, from: SocketAddr, to: SocketAddr, len: usize) {
    client.run(move || {
        let socket = UdpSocket::bind(from).unwrap();
        socket.send_to(&vec![b'x'; len], to).unwrap();
    });
}

/// Sends one packet from the client.
type SendPacket<'a> = Box<dyn Fn() + 'a>;

struct Expected {
    source: &'static str,
    destination: &'static str,
    protocol: IpProtocol,
    source_port: Option<u16>,
    destination_port: u16,
}

#[test]
fn denied_tcp_and_udp_arrive_within_a_second_with_prefix_addresses_ports_and_protocol() {
    let _serial = serial();
    let pair = Pair::new();
    pair.server_rules(&compiled_style_rules());
    let server = pair.server.thread();
    let client = pair.client.thread();
    let rt = runtime();
    let (mut rx, stats) = spawn_reader(&server, Config::new(GROUP, 1024)).unwrap();

    let cases: [(&str, SendPacket<'_>, Expected); 4] = [
        (
            "tcp4 syn",
            Box::new(|| syn(&client, addr(SERVER4, 9090))),
            Expected {
                source: CLIENT4,
                destination: SERVER4,
                protocol: IpProtocol::Tcp,
                source_port: None, // ephemeral
                destination_port: 9090,
            },
        ),
        (
            "udp4, 300 bytes (cut at 128)",
            Box::new(|| udp(&client, addr(CLIENT4, 40000), addr(SERVER4, 5353), 300)),
            Expected {
                source: CLIENT4,
                destination: SERVER4,
                protocol: IpProtocol::Udp,
                source_port: Some(40000),
                destination_port: 5353,
            },
        ),
        (
            "tcp6 syn",
            Box::new(|| syn(&client, addr(SERVER6, 443))),
            Expected {
                source: CLIENT6,
                destination: SERVER6,
                protocol: IpProtocol::Tcp,
                source_port: None,
                destination_port: 443,
            },
        ),
        (
            "udp6",
            Box::new(|| udp(&client, addr(CLIENT6, 40001), addr(SERVER6, 53), 20)),
            Expected {
                source: CLIENT6,
                destination: SERVER6,
                protocol: IpProtocol::Udp,
                source_port: Some(40001),
                destination_port: 53,
            },
        ),
    ];
    let snapshot = snapshot();
    for (name, send, expected) in cases {
        let sent = Instant::now();
        send();
        let record = next_record(&rt, &mut rx, Duration::from_secs(1))
            .unwrap_or_else(|| panic!("{name}: no record within 1 s ({:?})", stats.snapshot()));
        let latency = sent.elapsed();
        assert_eq!(record.prefix, PREFIX, "{name}");
        assert!(
            record.payload.len() <= 128,
            "{name}: {}",
            record.payload.len()
        );
        let packet = decode::decode(&record).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(packet.direction, Direction::Ingress);
        assert_eq!(packet.pod, ObjectKey::new("ns", "pod"));
        assert_eq!(
            packet.source,
            expected.source.parse::<IpAddr>().unwrap(),
            "{name}"
        );
        assert_eq!(
            packet.destination,
            expected.destination.parse::<IpAddr>().unwrap()
        );
        assert_eq!(packet.protocol, expected.protocol, "{name}");
        assert_eq!(
            packet.destination_port,
            Some(expected.destination_port),
            "{name}"
        );
        match expected.source_port {
            Some(port) => assert_eq!(packet.source_port, Some(port), "{name}"),
            None => assert!(packet.source_port.is_some_and(|p| p >= 1024), "{name}"),
        }
        let record = enrich::enrich(&packet, &snapshot, record.received_at);
        let line = record.render(Format::Json).unwrap();
        assert!(line.contains(r#""policies":["ns/deny"]"#), "{name}: {line}");
        eprintln!("{name}: record after {latency:?}: {line}");
        // Let a SYN's connect time out before the next case, so the next send is not queued
        // behind it on the client thread.
        client.run(|| ());
    }
    let counts = stats.snapshot();
    assert_eq!(counts.lost_records(), 0, "{counts:?}");
    assert_eq!(counts.malformed, 0, "{counts:?}");
    stop(rx, &stats);
}

/// The server pod (10.98.0.2 and fd00:98::2) isolated by `ns/deny`, so enrich names it.
fn snapshot() -> Snapshot {
    let mut s = Snapshot::new();
    s.upsert_pod(Pod {
        key: ObjectKey::new("ns", "pod"),
        labels: [("app".to_string(), "server".to_string())].into(),
        node: Some("node-1".into()),
        ips: vec![SERVER4.parse().unwrap(), SERVER6.parse().unwrap()],
        phase: PodPhase::Active,
        host_network: false,
        terminating: false,
        ports: Vec::new(),
        owner: None,
    });
    let deny: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "deny", "namespace": "ns"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
    }))
    .unwrap();
    s.upsert_network_policy(&deny).unwrap();
    s
}

#[test]
fn delivery_takes_milliseconds() {
    let _serial = serial();
    let pair = Pair::new();
    pair.server_rules(&unlimited_rule(7777, "latency"));
    let server = pair.server.thread();
    let client = pair.client.thread();
    let rt = runtime();
    let (mut rx, stats) = spawn_reader(&server, Config::new(GROUP, 1024)).unwrap();
    let socket = client.run(|| UdpSocket::bind(addr(CLIENT4, 0)).unwrap());
    let to = addr(SERVER4, 7777);

    let mut latencies = Vec::new();
    let mut kernel_to_reader = Vec::new();
    for _ in 0..200 {
        let sent = Instant::now();
        socket.send_to(b"ping", to).unwrap();
        let record = next_record(&rt, &mut rx, Duration::from_secs(1)).expect("no record in 1 s");
        latencies.push(sent.elapsed());
        // The packet's receive timestamp to the reader's recv, both wall clock.
        if let Some(ts) = record.timestamp
            && let Ok(d) = record.received_at.duration_since(ts)
        {
            kernel_to_reader.push(d);
        }
        thread::sleep(Duration::from_millis(2));
    }
    latencies.sort();
    kernel_to_reader.sort();
    let pct = |v: &[Duration], p: usize| v.get(v.len().saturating_sub(1) * p / 100).copied();
    eprintln!(
        "send -> consumer over 200 packets: p50 {:?}, p99 {:?}, max {:?}; \
         kernel timestamp -> reader recv: p50 {:?}, p99 {:?} ({} samples)",
        pct(&latencies, 50),
        pct(&latencies, 99),
        latencies.last(),
        pct(&kernel_to_reader, 50),
        pct(&kernel_to_reader, 99),
        kernel_to_reader.len(),
    );
    assert!(pct(&latencies, 99).unwrap() < Duration::from_millis(100));
    assert_eq!(stats.snapshot().lost_records(), 0);
    assert_eq!(pair.server.counter("latency"), 200);
    stop(rx, &stats);
}

#[test]
fn a_second_binder_gets_a_clear_error_and_the_group_is_free_once_the_reader_stops() {
    let _serial = serial();
    let pair = Pair::new();
    let server = pair.server.thread();
    let (rx, stats) = spawn_reader(&server, Config::new(GROUP, 16)).unwrap();
    assert!(stats.snapshot().running);

    let second = spawn_reader(&server, Config::new(GROUP, 16));
    let Err(error) = second else {
        panic!("a second bind of group {GROUP} succeeded");
    };
    assert!(
        matches!(error, Error::GroupBusy { group: GROUP }),
        "{error:?}"
    );
    eprintln!("second binder: {error}");

    // Exclusive per namespace only: the client namespace binds the same group meanwhile.
    let client = pair.client.thread();
    let (other_rx, other_stats) = spawn_reader(&client, Config::new(GROUP, 16)).unwrap();
    stop(other_rx, &other_stats);

    stop(rx, &stats);
    let (rx, stats) = spawn_reader(&server, Config::new(GROUP, 16))
        .expect("the group is released when the reader stops");
    stop(rx, &stats);
}

/// Sends `count` UDP datagrams to `port` as fast as the client can, then drains the reader
/// until it has been quiet for half a second. Returns (received records, seconds sending).
fn burst(
    pair: &Pair,
    rt: &tokio::runtime::Runtime,
    rx: &mut Receiver<NflogEvent>,
    port: u16,
    count: usize,
) -> (u64, f64) {
    let client = pair.client.thread();
    let started = Instant::now();
    let sending = client.spawn(move || {
        let socket = UdpSocket::bind(addr(CLIENT4, 0)).unwrap();
        let to = addr(SERVER4, port);
        let mut failed = 0;
        for i in 0..count {
            // ENOBUFS from a full device queue is possible; such a packet never reaches the
            // rule, and the rule's counter (not `count`) is the reference.
            if socket.send_to(&(i as u32).to_be_bytes(), to).is_err() {
                failed += 1;
            }
        }
        (failed, started.elapsed())
    });
    let mut received = 0;
    while next_record(rt, rx, Duration::from_millis(500)).is_some() {
        received += 1;
    }
    let (failed, took) = sending.recv().unwrap();
    // Records lost at the very end of a burst show up as a sequence gap only when a later
    // record arrives: send one more once the burst is over.
    udp(&client, addr(CLIENT4, 0), addr(SERVER4, port), 4);
    while next_record(rt, rx, Duration::from_millis(500)).is_some() {
        received += 1;
    }
    eprintln!("burst of {count} (+1 marker): {failed} sends failed, sent in {took:?}");
    (received, took.as_secs_f64())
}

#[test]
fn a_burst_of_20000_is_received_or_counted_lost_with_the_default_buffer() {
    let _serial = serial();
    let pair = Pair::new();
    pair.server_rules(&unlimited_rule(6000, "burst"));
    let server = pair.server.thread();
    let rt = runtime();
    let (mut rx, stats) = spawn_reader(&server, Config::new(GROUP, 65_536)).unwrap();

    let (received, _) = burst(&pair, &rt, &mut rx, 6000, 20_000);
    let logged = pair.server.counter("burst");
    let counts = stats.snapshot();
    eprintln!(
        "default buffer ({} bytes granted): logged {logged}, received {received}, {counts:?}",
        counts.rx_buffer_bytes
    );
    assert!(counts.running, "the reader stopped");
    assert!(logged > 19_000, "only {logged} of 20001 reached the rule");
    assert!(counts.rx_buffer_bytes >= 8 << 20, "{counts:?}");
    assert_eq!(received + counts.lost_records(), logged, "{counts:?}");
    stop(rx, &stats);
}

#[test]
fn a_small_buffer_overruns_and_every_lost_record_is_counted() {
    let _serial = serial();
    let pair = Pair::new();
    pair.server_rules(&unlimited_rule(6001, "overrun"));
    let server = pair.server.thread();
    let rt = runtime();
    let config = Config {
        rx_buffer_bytes: 4096,
        ..Config::new(GROUP, 65_536)
    };
    let (mut rx, stats) = spawn_reader(&server, config).unwrap();

    let (received, _) = burst(&pair, &rt, &mut rx, 6001, 20_000);
    let logged = pair.server.counter("overrun");
    let counts = stats.snapshot();
    eprintln!("4 KiB buffer: logged {logged}, received {received}, {counts:?}");
    assert!(counts.running, "the reader stopped");
    assert!(
        counts.overruns > 0,
        "no overrun with a 4 KiB buffer: {counts:?}"
    );
    assert!(counts.missed_records > 0, "{counts:?}");
    assert_eq!(received + counts.lost_records(), logged, "{counts:?}");
    stop(rx, &stats);
}

#[test]
fn a_full_channel_drops_and_counts_without_blocking_the_reader() {
    let _serial = serial();
    let pair = Pair::new();
    pair.server_rules(&unlimited_rule(6002, "full"));
    let server = pair.server.thread();
    let rt = runtime();
    let (mut rx, stats) = spawn_reader(&server, Config::new(GROUP, 16)).unwrap();

    // Nobody reads while the burst is sent: the channel fills after 16 events.
    let client = pair.client.thread();
    client.run(|| {
        let socket = UdpSocket::bind(addr(CLIENT4, 0)).unwrap();
        for i in 0..2_000u32 {
            let _ = socket.send_to(&i.to_be_bytes(), addr(SERVER4, 6002));
        }
    });
    let logged = pair.server.counter("full");
    let deadline = Instant::now() + Duration::from_secs(2);
    while stats.snapshot().records < logged && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let mut received = 0;
    while next_record(&rt, &mut rx, Duration::from_millis(200)).is_some() {
        received += 1;
    }
    let counts = stats.snapshot();
    eprintln!("channel of 16: logged {logged}, received {received}, {counts:?}");
    assert!(received <= 16);
    assert!(counts.dropped_channel_full > 0, "{counts:?}");
    assert_eq!(received + counts.lost_records(), logged, "{counts:?}");

    // The reader kept going: a later packet still arrives.
    udp(&client, addr(CLIENT4, 40000), addr(SERVER4, 6002), 8);
    assert!(next_record(&rt, &mut rx, Duration::from_secs(1)).is_some());
    stop(rx, &stats);
}

#[test]
fn the_kernel_timestamp_and_interfaces_are_reported() {
    let _serial = serial();
    let pair = Pair::new();
    pair.server_rules(&unlimited_rule(6003, "meta"));
    let server = pair.server.thread();
    let client = pair.client.thread();
    let rt = runtime();
    let (mut rx, stats) = spawn_reader(&server, Config::new(GROUP, 16)).unwrap();
    let before = SystemTime::now();
    udp(&client, addr(CLIENT4, 40000), addr(SERVER4, 6003), 8);
    let record = next_record(&rt, &mut rx, Duration::from_secs(1)).expect("no record");
    assert_eq!(record.family, 2);
    assert_eq!(record.hook, Some(1)); // NF_INET_LOCAL_IN
    assert!(record.indev.is_some());
    assert_eq!(record.seq, Some(0));
    assert!(record.received_at >= before);
    eprintln!("record metadata: {record:?}");
    stop(rx, &stats);
}
