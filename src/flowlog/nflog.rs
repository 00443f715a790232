//! The NFLOG socket: binds one NFLOG group in the current network namespace and reads it on a
//! dedicated thread into a bounded channel.
//!
//! Owns the netlink side only: the `NFULNL_MSG_CONFIG` requests (bind, copy mode, queue
//! threshold, flush timeout, sequence numbers), the receive buffer, splitting datagrams into
//! [`Record`]s ([`parse_datagram`], pure), and counting every way a record can be lost. It does
//! not interpret prefixes or packets ([`super::decode`]).
//!
//! Logging is best effort and must never slow the datapath (`docs/observability.md`, "Losses"): the kernel drops records
//! when the socket buffer is full, and the reader never blocks on its consumer. Losses are
//! counted three ways, all visible in [`ReaderStats`] and, where possible, as events:
//!
//! - `ENOBUFS` from `recv`: the socket buffer overflowed ([`NflogEvent::Overrun`]); reading
//!   goes on.
//! - Gaps in `NFULA_SEQ`: exactly how many records never reached the socket
//!   ([`NflogEvent::Missed`]).
//! - A full channel: records received but dropped because the consumer is behind.
//!
//! Binding is exclusive per group and network namespace: a second binder gets `EPERM`
//! ([`Error::GroupBusy`]). The group is released when the reader stops (the kernel destroys the
//! instance when its socket closes).

use std::io;
use std::num::NonZeroI32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload, Nla};
use netlink_packet_netfilter::nflog::{
    ConfigCmd, ConfigFlags, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage, config_request,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{Socket, constants::NETLINK_NETFILTER};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::time::{TimeVal, TimeValLike};
use tokio::sync::mpsc;

use super::Record;
use crate::compile::ruleset::LOG_SNAPLEN;

/// The receive buffer the reader asks for. With it a release build received all of a
/// 200,000-packet burst (sent in 1.4 s); a 4 KiB buffer lost over a third of 20,000 (see
/// `integration/flowlog.rs`).
pub const DEFAULT_RX_BUFFER_BYTES: usize = 8 << 20;

/// How often a blocked reader wakes up to see whether its consumer went away.
const POLL_INTERVAL_MS: i64 = 100;

/// How long binding waits for the kernel's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// One `recv` buffer. The kernel batches at most `nlbufsiz` bytes per datagram, which it caps at
/// 128 KiB (`nfnetlink_log.c`), so a datagram always fits.
const DATAGRAM_BYTES: usize = 128 << 10;

/// `CAP_NET_ADMIN`'s bit in `CapEff` (`linux/capability.h`).
const CAP_NET_ADMIN_BIT: u32 = 12;

/// How to bind and read a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The NFLOG group (`log group N` in the rules).
    pub group: u16,
    /// Events the channel holds before the reader starts dropping (and counting) records.
    pub channel_capacity: usize,
    /// Receive buffer to ask for, in bytes; set with `SO_RCVBUFFORCE` (which ignores
    /// `net.core.rmem_max`), falling back to `SO_RCVBUF` (capped by it) without CAP_NET_ADMIN.
    pub rx_buffer_bytes: usize,
    /// Bytes of each packet to copy (`NFULA_CFG_MODE` copy range). A rule's own `snaplen` can
    /// only lower it.
    pub copy_bytes: u32,
    /// Records the kernel queues before sending a datagram (`NFULA_CFG_QTHRESH`). 1 delivers
    /// every record at once (well under a millisecond here) instead of batching up to
    /// `flush_timeout`. A rule's `queue-threshold` can only lower it: the kernel uses the
    /// smaller of the two (`nfulnl_log_packet`).
    pub queue_threshold: u32,
    /// Longest the kernel holds a partial batch (`NFULA_CFG_TIMEOUT`, 10 ms steps).
    pub flush_timeout: Duration,
}

impl Config {
    /// The defaults for `group`: 8 MiB buffer, 128-byte copies, threshold 1, 10 ms timeout.
    pub fn new(group: u16, channel_capacity: usize) -> Self {
        Self {
            group,
            channel_capacity,
            rx_buffer_bytes: DEFAULT_RX_BUFFER_BYTES,
            copy_bytes: LOG_SNAPLEN,
            queue_threshold: 1,
            flush_timeout: Duration::from_millis(10),
        }
    }
}

/// What the reader sends to its consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NflogEvent {
    /// One logged packet; decode it with [`super::decode::decode`].
    Record(Record),
    /// `recv` returned `ENOBUFS`: the socket buffer overflowed and the kernel dropped at least
    /// one datagram. The next [`NflogEvent::Missed`] says how many records that was.
    Overrun,
    /// The group's sequence numbers jumped: this many records were logged by the kernel but
    /// never reached the socket (an overrun). Sent just before the first record after the gap,
    /// so records lost at the very end of a burst are counted when the next one arrives.
    Missed {
        /// Records lost.
        records: u64,
    },
}

/// Why the group could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A channel needs room for at least one event.
    #[error("nflog channel capacity must be at least 1")]
    ZeroCapacity,
    /// The netlink socket could not be created or bound.
    #[error("opening a netfilter netlink socket")]
    Open(#[source] io::Error),
    /// Another socket holds the group in this network namespace.
    #[error(
        "nflog group {group} is already bound by another socket in this network namespace \
         (groups are exclusive: is another agent or ulogd running?)"
    )]
    GroupBusy {
        /// The group.
        group: u16,
    },
    /// The process lacks CAP_NET_ADMIN.
    #[error("binding nflog group {group} needs CAP_NET_ADMIN in this network namespace")]
    PermissionDenied {
        /// The group.
        group: u16,
    },
    /// The kernel refused a configuration request, or did not answer.
    #[error("configuring nflog group {group}: {step}")]
    Configure {
        /// The group.
        group: u16,
        /// Which request.
        step: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The reader thread could not be started.
    #[error("starting the nflog reader thread")]
    Spawn(#[source] io::Error),
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Counters of one reader, shared with its thread. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ReaderStats {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    datagrams: AtomicU64,
    records: AtomicU64,
    dropped_channel_full: AtomicU64,
    overruns: AtomicU64,
    missed_records: AtomicU64,
    malformed: AtomicU64,
    receive_errors: AtomicU64,
    rx_buffer_bytes: AtomicU64,
    running: AtomicBool,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Datagrams read from the socket.
    pub datagrams: u64,
    /// Records parsed from them (delivered or dropped for a full channel).
    pub records: u64,
    /// Records dropped because the channel was full (the consumer is behind).
    pub dropped_channel_full: u64,
    /// `ENOBUFS` errors: times the socket buffer overflowed.
    pub overruns: u64,
    /// Records the kernel logged that never reached the socket (sequence gaps).
    pub missed_records: u64,
    /// Netlink messages that could not be parsed and were skipped.
    pub malformed: u64,
    /// Other `recv` errors.
    pub receive_errors: u64,
    /// The socket's receive buffer as the kernel reports it (twice the size asked for, for its
    /// bookkeeping; see socket(7)).
    pub rx_buffer_bytes: u64,
    /// Whether the reader thread is still running.
    pub running: bool,
}

impl StatsSnapshot {
    /// Records logged by the kernel that the consumer will never see.
    pub fn lost_records(&self) -> u64 {
        self.missed_records + self.dropped_channel_full
    }
}

impl ReaderStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            datagrams: get(&c.datagrams),
            records: get(&c.records),
            dropped_channel_full: get(&c.dropped_channel_full),
            overruns: get(&c.overruns),
            missed_records: get(&c.missed_records),
            malformed: get(&c.malformed),
            receive_errors: get(&c.receive_errors),
            rx_buffer_bytes: get(&c.rx_buffer_bytes),
            running: c.running.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Binds `group` in the calling thread's network namespace and starts a reader thread that
/// sends [`NflogEvent`]s into a channel of `capacity` events. The thread stops (and releases
/// the group) within 100 ms of the receiver being dropped.
pub fn spawn_reader(
    group: u16,
    capacity: usize,
) -> Result<(mpsc::Receiver<NflogEvent>, ReaderStats)> {
    spawn_reader_with(&Config::new(group, capacity))
}

/// [`spawn_reader`] with every setting.
pub fn spawn_reader_with(config: &Config) -> Result<(mpsc::Receiver<NflogEvent>, ReaderStats)> {
    if config.channel_capacity == 0 {
        return Err(Error::ZeroCapacity);
    }
    let socket = NflogSocket::bind(config)?;
    let stats = ReaderStats::default();
    stats
        .counters
        .rx_buffer_bytes
        .store(socket.rx_buffer_bytes as u64, Ordering::Relaxed);
    stats.counters.running.store(true, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(config.channel_capacity);
    let thread_stats = stats.clone();
    thread::Builder::new()
        .name(format!("nflog-{}", config.group))
        .spawn(move || Reader::new(socket, tx, thread_stats).run())
        .map_err(|e| {
            stats.counters.running.store(false, Ordering::Relaxed);
            Error::Spawn(e)
        })?;
    Ok((rx, stats))
}

/// A bound NFLOG socket, for callers that read it themselves (tools, fixtures capture).
#[derive(Debug)]
pub struct NflogSocket {
    socket: Socket,
    group: u16,
    rx_buffer_bytes: usize,
    /// Records that arrived while binding waited for acknowledgements.
    pending: Vec<Record>,
    next_sequence: u32,
}

impl NflogSocket {
    /// Opens a netfilter netlink socket in the current network namespace and binds the group.
    ///
    /// No `NFULNL_CFG_CMD_PF_BIND`: rules that name a group (`log group N`) select
    /// nfnetlink_log themselves, and PF_BIND would make it the namespace's default logger,
    /// taking plain `log` rules (nf_log_syslog) away from the kernel log.
    pub fn bind(config: &Config) -> Result<Self> {
        let group = config.group;
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(Error::Open)?;
        socket.bind_auto().map_err(Error::Open)?;
        let configure = |step, source| Error::Configure {
            group,
            step,
            source,
        };
        let rx_buffer_bytes = set_receive_buffer(&socket, config.rx_buffer_bytes)
            .map_err(|e| configure("setting the receive buffer", e))?;
        setsockopt(
            &socket,
            sockopt::ReceiveTimeout,
            &TimeVal::milliseconds(POLL_INTERVAL_MS),
        )
        .map_err(|e| configure("setting the receive timeout", e.into()))?;
        let mut this = Self {
            socket,
            group,
            rx_buffer_bytes,
            pending: Vec::new(),
            next_sequence: 1,
        };

        match this.request(vec![ConfigCmd::Bind.into()]) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EPERM as i32) => {
                return Err(match has_cap_net_admin() {
                    Some(false) => Error::PermissionDenied { group },
                    _ => Error::GroupBusy { group },
                });
            }
            Err(e) => return Err(configure("binding the group", e)),
        }
        this.request(vec![
            ConfigMode::new_packet(config.copy_bytes).into(),
            ConfigNla::QThresh(config.queue_threshold),
            Timeout::from(config.flush_timeout).into(),
            // Per-group sequence numbers count records lost before the socket.
            ConfigFlags::SEQ.into(),
        ])
        .map_err(|e| configure("setting copy mode, threshold, timeout and flags", e))?;
        Ok(this)
    }

    /// Records that arrived while binding waited for the kernel's acknowledgements; read them
    /// before the first [`NflogSocket::recv`].
    pub fn take_pending(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.pending)
    }

    /// The receive buffer the kernel granted (see [`StatsSnapshot::rx_buffer_bytes`]).
    pub fn rx_buffer_bytes(&self) -> usize {
        self.rx_buffer_bytes
    }

    /// Reads one datagram into `buf`; `ENOBUFS` after an overflow, `EAGAIN` after 100 ms of
    /// silence. Returns the datagram's length.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.recv(&mut &mut buf[..], 0)
    }

    /// Sends one config request and waits for its acknowledgement.
    fn request(&mut self, nlas: Vec<ConfigNla>) -> io::Result<()> {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        // config_request asks for an acknowledgement (NLM_F_REQUEST | NLM_F_ACK).
        let mut message = config_request(NetfilterProtoFamily::Unspec, self.group, nlas);
        message.header.sequence_number = sequence;
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;

        let deadline = Instant::now() + ACK_TIMEOUT;
        let mut buf = vec![0; DATAGRAM_BYTES];
        while Instant::now() < deadline {
            let len = match self.recv(&mut buf) {
                Ok(len) => len,
                // Records may already flow (and overflow) while we wait: keep waiting.
                Err(e) if is_timeout(&e) || is_overrun(&e) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let datagram = parse_datagram(&buf[..len.min(buf.len())], SystemTime::now());
            self.pending.extend(datagram.records);
            if let Some(ack) = datagram.acks.iter().find(|a| a.sequence == sequence) {
                return match ack.error {
                    None => Ok(()),
                    Some(code) => Err(io::Error::from_raw_os_error(code.get().saturating_abs())),
                };
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no acknowledgement from nfnetlink_log",
        ))
    }
}

/// `ENOBUFS`: the socket buffer overflowed and the kernel dropped datagrams.
fn is_overrun(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Asks for `bytes` with SO_RCVBUFFORCE, then SO_RCVBUF; returns what the kernel granted.
fn set_receive_buffer(socket: &Socket, bytes: usize) -> io::Result<usize> {
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
        // Without CAP_NET_ADMIN: the kernel caps this at net.core.rmem_max.
        setsockopt(socket, sockopt::RcvBuf, &bytes)?;
    }
    Ok(getsockopt(socket, sockopt::RcvBuf)?)
}

/// Whether this thread has CAP_NET_ADMIN, from `/proc/thread-self/status`; `None` when that
/// cannot be read. Only used to word the error after `EPERM`, which the kernel returns both for
/// a group held by another socket and for a missing capability.
fn has_cap_net_admin() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << CAP_NET_ADMIN_BIT) != 0)
}

/// The netlink messages of one datagram.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Datagram {
    /// Packet records, in the order the kernel queued them.
    pub records: Vec<Record>,
    /// Acknowledgements (`NLMSG_ERROR`) of our own requests.
    pub acks: Vec<Ack>,
    /// Messages that could not be parsed (skipped), counting a broken tail as one.
    pub malformed: u64,
}

/// The kernel's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The request's sequence number.
    pub sequence: u32,
    /// `None` for success, else the negative errno.
    pub error: Option<NonZeroI32>,
}

/// `NLMSG_ERROR`: the kernel's answer to a request (an error or, with 0, an acknowledgement).
const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a multipart batch.
const NLMSG_DONE: u16 = 3;
/// `NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET`: one logged packet.
const NFULNL_PACKET: u16 = 4 << 8;

/// Whether a message of this type is one an NFLOG socket gets and this module reads. Only
/// those reach netlink-packet-netfilter's parser: it decodes every netfilter subsystem, and
/// its nftables set parser panics on a nested attribute shorter than its header
/// (netlink-packet-core 0.9.0 `NlaBuffer::value_length`, found by the `nflog_decode` fuzz
/// target; regression seed `fuzz/seeds/nflog_decode/crash-nftables-set-short-attribute`).
fn is_read(message_type: u16) -> bool {
    matches!(message_type, NLMSG_ERROR | NLMSG_DONE | NFULNL_PACKET)
}

/// Splits one datagram into its messages and keeps the NFLOG packets and acknowledgements.
/// Messages are walked by their headers' lengths; one that does not parse is counted and
/// skipped, as is one of a type an NFLOG socket never gets, and a header whose length does not
/// fit ends the walk.
pub fn parse_datagram(datagram: &[u8], received_at: SystemTime) -> Datagram {
    let mut out = Datagram::default();
    let mut rest = datagram;
    while !rest.is_empty() {
        let Ok(buffer) = NetlinkBuffer::new_checked(rest) else {
            out.malformed += 1;
            break;
        };
        // new_checked guarantees 16 <= length <= rest.len().
        let length = buffer.length() as usize;
        let Some(message) = rest.get(..length) else {
            out.malformed += 1;
            break;
        };
        let parsed = if is_read(buffer.message_type()) {
            NetlinkMessage::<NetfilterMessage>::deserialize(message).map_err(drop)
        } else {
            Err(())
        };
        match parsed {
            Ok(message) => match message.payload {
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    header,
                    inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
                    ..
                }) => out
                    .records
                    .push(record_from(u8::from(header.family), nlas, received_at)),
                NetlinkPayload::Error(error) => out.acks.push(Ack {
                    sequence: message.header.sequence_number,
                    error: error.code,
                }),
                // NLMSG_DONE ends a multipart batch; nothing else is sent to an NFLOG socket.
                _ => {}
            },
            Err(_) => out.malformed += 1,
        }
        // Messages are 4-byte aligned (NLMSG_ALIGN); the kernel pads all but the last.
        let advance = length.saturating_add(3) & !3;
        rest = rest.get(advance..).unwrap_or_default();
    }
    out
}

fn record_from(family: u8, nlas: Vec<PacketNla>, received_at: SystemTime) -> Record {
    let mut record = Record::new(String::new(), Vec::new());
    record.family = family;
    record.received_at = received_at;
    for nla in nlas {
        match nla {
            PacketNla::Prefix(prefix) => record.prefix = prefix.to_string_lossy().into_owned(),
            PacketNla::Payload(payload) => record.payload = payload,
            PacketNla::PacketHdr(hdr) => {
                // netlink-packet-netfilter keeps the fields private; re-emit the 4 wire bytes
                // (hw_protocol be16, hook u8, pad).
                if let Some([p0, p1, hook, _]) = emit::<4>(&hdr) {
                    record.hw_protocol = Some(u16::from_be_bytes([p0, p1]));
                    record.hook = Some(hook);
                }
            }
            PacketNla::Timestamp(ts) => {
                // be64 seconds, be64 microseconds.
                record.timestamp = emit::<16>(&ts).and_then(|bytes| {
                    let sec = u64::from_be_bytes(*bytes.first_chunk::<8>()?);
                    let usec = u64::from_be_bytes(*bytes.last_chunk::<8>()?);
                    let since_epoch =
                        Duration::from_secs(sec).checked_add(Duration::from_micros(usec))?;
                    SystemTime::UNIX_EPOCH.checked_add(since_epoch)
                });
            }
            PacketNla::IfIndexInDev(index) => record.indev = Some(index),
            PacketNla::IfIndexOutDev(index) => record.outdev = Some(index),
            PacketNla::Seq(seq) => record.seq = Some(seq),
            _ => {}
        }
    }
    record
}

/// An attribute's value as `N` wire bytes, when it is exactly that long.
fn emit<const N: usize>(nla: &impl Nla) -> Option<[u8; N]> {
    let mut bytes = [0; N];
    (nla.value_len() == N).then(|| {
        nla.emit_value(&mut bytes);
        bytes
    })
}

/// The reader thread's state.
struct Reader {
    socket: NflogSocket,
    tx: mpsc::Sender<NflogEvent>,
    stats: ReaderStats,
    sequence: SeqTracker,
}

/// Counts records lost before the socket from gaps in `NFULA_SEQ`.
#[derive(Debug, Default)]
struct SeqTracker {
    /// The next sequence number expected. The kernel numbers a new instance from 0.
    expected: u32,
}

impl SeqTracker {
    /// Records missing before the record numbered `seq`.
    fn observe(&mut self, seq: u32) -> u32 {
        let gap = seq.wrapping_sub(self.expected);
        self.expected = seq.wrapping_add(1);
        // A jump of more than half the space is the counter going backwards (never seen: it
        // would take another instance); resynchronise without counting.
        if gap < u32::MAX / 2 { gap } else { 0 }
    }
}

impl Reader {
    fn new(socket: NflogSocket, tx: mpsc::Sender<NflogEvent>, stats: ReaderStats) -> Self {
        Self {
            socket,
            tx,
            stats,
            sequence: SeqTracker::default(),
        }
    }

    fn run(mut self) {
        // Cleared when the thread ends, however it ends.
        struct Running(ReaderStats);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.counters.running.store(false, Ordering::Relaxed);
            }
        }
        let _running = Running(self.stats.clone());
        let counters = Arc::clone(&self.stats.counters);

        for record in self.socket.take_pending() {
            ReaderStats::add(&counters.records, 1);
            self.deliver(record);
        }
        let mut buf = vec![0; DATAGRAM_BYTES];
        while !self.tx.is_closed() {
            match self.socket.recv(&mut buf) {
                Ok(len) => {
                    ReaderStats::add(&counters.datagrams, 1);
                    let datagram = parse_datagram(&buf[..len.min(buf.len())], SystemTime::now());
                    ReaderStats::add(&counters.malformed, datagram.malformed);
                    ReaderStats::add(&counters.records, datagram.records.len() as u64);
                    for record in datagram.records {
                        self.deliver(record);
                    }
                }
                Err(e) if is_overrun(&e) => {
                    ReaderStats::add(&counters.overruns, 1);
                    tracing::debug!(group = self.socket.group, "nflog socket buffer overflowed");
                    self.send(NflogEvent::Overrun);
                }
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    ReaderStats::add(&counters.receive_errors, 1);
                    tracing::warn!(group = self.socket.group, %error, "nflog receive failed");
                    // Not expected on a bound socket; do not spin if it repeats.
                    thread::sleep(Duration::from_millis(POLL_INTERVAL_MS as u64));
                }
            }
        }
        tracing::debug!(
            group = self.socket.group,
            "nflog reader stopped: channel closed"
        );
    }

    /// Checks the record's sequence number, then sends it.
    fn deliver(&mut self, record: Record) {
        let missed = record.seq.map_or(0, |seq| self.sequence.observe(seq));
        if missed > 0 {
            ReaderStats::add(&self.stats.counters.missed_records, u64::from(missed));
            self.send(NflogEvent::Missed {
                records: u64::from(missed),
            });
        }
        if !self.send(NflogEvent::Record(record)) {
            ReaderStats::add(&self.stats.counters.dropped_channel_full, 1);
        }
    }

    /// Sends without waiting; false when the channel was full or closed.
    fn send(&self, event: NflogEvent) -> bool {
        self.tx.try_send(event).is_ok()
    }
}

#[cfg(test)]
mod tests;
