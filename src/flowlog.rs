//! Flow logs of default-deny drops: NFLOG records from the kernel to one log line per flow.
//!
//! Every isolated pod's chain ends with a rate-limited
//! `log prefix "knp:deny:<direction>:<ns>/<pod>" group G snaplen 128 queue-threshold 1` before
//! its counted drop (see [`compile`](mod@crate::compile)); an audited pod's chain logs with
//! `knp:audit:` and accepts instead. This module turns those records into
//! deduplicated drop log lines in four steps, each in its own file:
//!
//! ```text
//! kernel --NFLOG--> nflog::spawn_reader --Record--> decode::decode --LoggedPacket-->
//!     dedup::Dedup (first packet now, repeats per window) -->
//!     enrich::enrich(&Snapshot) --FlowLine--> stdout (JSON or text)
//! ```
//!
//! - [`nflog`] owns the netlink socket: binding the group in the current network namespace,
//!   the receive buffer, reading datagrams on a dedicated thread, splitting them into
//!   [`Record`]s, and counting what was lost (socket overruns, sequence gaps, a full channel).
//!   It knows nothing about prefixes or IP headers.
//! - [`decode`] is pure: one [`Record`] to a [`decode::LoggedPacket`] (which pod and direction
//!   from the prefix; addresses, protocol and ports from the first bytes of the packet). Packets
//!   are attacker-controlled: garbage is a typed error, never a panic.
//! - [`enrich`] is pure: a denied packet and the cluster [`Snapshot`](crate::model::Snapshot) to
//!   a [`FlowLine`](crate::flow_line::FlowLine) naming both ends and the isolating policies.
//! - [`dedup`] is pure: which packets to log at once and which to fold into one summary line
//!   per flow and window, in a table of bounded size.
//! - The line itself, a record and its count as JSON or text, is
//!   [`crate::flow_line::FlowLine`]: one type that `suggest` and `explain` read back.
//!
//! Wiring these into the agent (which group, where the lines go, metrics) is not done here.

pub mod decode;
pub mod dedup;
pub mod enrich;
pub mod nflog;

use std::time::SystemTime;

/// One NFLOG record as the kernel delivered it: the parts of `NFULNL_MSG_PACKET` the flow log
/// uses. Built by [`nflog`] from the wire, or by hand in tests; read by [`decode::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `nfgen_family` of the message: `NFPROTO_IPV4` (2) or `NFPROTO_IPV6` (10) for rules in an
    /// `inet` table.
    pub family: u8,
    /// The rule's log prefix (`NFULA_PREFIX`, without its NUL); empty when the rule has none.
    pub prefix: String,
    /// The packet from its network header on, cut at the copy length (`NFULA_PAYLOAD`).
    pub payload: Vec<u8>,
    /// The link-layer protocol (`NFULA_PACKET_HDR`: `0x0800` IPv4, `0x86dd` IPv6), when sent.
    pub hw_protocol: Option<u16>,
    /// The netfilter hook the packet was logged in (`NFULA_PACKET_HDR`), when sent.
    pub hook: Option<u8>,
    /// Input interface index (`NFULA_IFINDEX_INDEV`), for packets that arrived on one.
    pub indev: Option<u32>,
    /// Output interface index (`NFULA_IFINDEX_OUTDEV`), once routing chose one.
    pub outdev: Option<u32>,
    /// The packet's kernel timestamp (`NFULA_TIMESTAMP`); only packets that carry one (usually
    /// received ones) have it.
    pub timestamp: Option<SystemTime>,
    /// The group's sequence number (`NFULA_SEQ`), used to count records lost on the way.
    pub seq: Option<u32>,
    /// When the reader took the datagram off the socket.
    pub received_at: SystemTime,
}

impl Record {
    /// A record with only a prefix and a payload, as tests and tools build them.
    pub fn new(prefix: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            family: 0,
            prefix: prefix.into(),
            payload: payload.into(),
            hw_protocol: None,
            hook: None,
            indev: None,
            outdev: None,
            timestamp: None,
            seq: None,
            received_at: SystemTime::UNIX_EPOCH,
        }
    }
}
