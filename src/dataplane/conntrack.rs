//! The connection tracking table of the current network namespace, over netlink (ctnetlink,
//! through netlink-packet-netfilter): [`list`] its TCP, UDP and SCTP entries as the core's
//! [`Connection`]s (but TCP connections already over, in `TIME_WAIT` or `CLOSE`), [`delete`]
//! one.
//!
//! Blocking socket calls, each bounded by a receive timeout: the agent runs them on the
//! blocking pool. Only the messages ctnetlink answers with (entries, errors, the end of a dump)
//! reach the netfilter message parser, which decodes every subsystem (see
//! `flowlog::nflog::is_read`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla as _,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple,
    Tuple as CtTuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{Socket, constants::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::{TimeVal, TimeValLike};

use crate::model::{IpProtocol, Protocol};
use crate::revoke::{Connection, Tuple};

/// `NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW`: an entry of a dump.
const CT_NEW: u16 = 1 << 8;
/// `CTA_ZONE`: the entry's zone, a big-endian u16.
const CTA_ZONE: u16 = 18;
/// `TCP_CONNTRACK_TIME_WAIT` and `TCP_CONNTRACK_CLOSE`: a TCP connection that is over.
const TCP_OVER: [u8; 2] = [7, 8];
/// How long one `recv` waits for the kernel.
const RECV_TIMEOUT_MS: i64 = 1000;
/// How long a whole dump may take.
const DUMP_DEADLINE: Duration = Duration::from_secs(30);
/// One `recv` buffer: ctnetlink fills dump datagrams up to a page or so.
const DATAGRAM_BYTES: usize = 64 << 10;

/// Why the table could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The netlink socket could not be opened or set up.
    #[error("cannot open a ctnetlink socket")]
    Open(#[source] io::Error),
    /// Sending or receiving failed, or the kernel answered with an error.
    #[error("ctnetlink {what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The entries of a dump.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The TCP, UDP and SCTP connections.
    pub connections: Vec<Connection>,
    /// Entries of other protocols (ICMP, GRE, ...), which NetworkPolicy cannot name.
    pub other_protocols: usize,
    /// TCP entries of connections that are over (`TIME_WAIT`, `CLOSE`): nothing to end.
    pub closed: usize,
    /// Entries that did not read as a connection (missing tuples, unparsable messages).
    pub malformed: usize,
}

/// Lists every entry of the current network namespace (both families).
pub fn list() -> Result<Listing, Error> {
    let socket = open()?;
    let request = message(
        NLM_F_REQUEST | NLM_F_DUMP,
        NetfilterProtoFamily::Unspec,
        ConntrackMessage::Get(Vec::new()),
    );
    send(&socket, &request, "dump request")?;
    let mut listing = Listing::default();
    let mut buf = vec![0; DATAGRAM_BYTES];
    let deadline = Instant::now() + DUMP_DEADLINE;
    loop {
        if Instant::now() > deadline {
            return Err(Error::Io {
                what: "dump",
                source: io::Error::new(io::ErrorKind::TimedOut, "the dump did not end"),
            });
        }
        let len = recv(&socket, &mut buf, "dump")?;
        let datagram = buf.get(..len).unwrap_or_default();
        if read_dump_datagram(datagram, &mut listing)? {
            return Ok(listing);
        }
    }
}

/// Deletes the entry of `connection` (by its original tuple and zone). `Ok(false)` when it was
/// gone already.
pub fn delete(connection: &Connection) -> Result<bool, Error> {
    let socket = open()?;
    let mut attributes = vec![ConntrackAttribute::CtaTupleOrig(tuple(
        connection.original,
        connection.protocol,
    ))];
    if connection.zone != 0 {
        attributes.push(ConntrackAttribute::Other(DefaultNla::new(
            CTA_ZONE,
            connection.zone.to_be_bytes().to_vec(),
        )));
    }
    let family = match connection.original.source.ip() {
        IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
        IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
    };
    let request = message(
        NLM_F_REQUEST | NLM_F_ACK,
        family,
        ConntrackMessage::Delete(attributes),
    );
    send(&socket, &request, "delete request")?;
    let mut buf = vec![0; DATAGRAM_BYTES];
    loop {
        let len = recv(&socket, &mut buf, "delete")?;
        let datagram = buf.get(..len).unwrap_or_default();
        match acknowledgement(datagram) {
            Some(0) => return Ok(true),
            Some(code) if code.saturating_abs() == nix::errno::Errno::ENOENT as i32 => {
                return Ok(false);
            }
            Some(code) => {
                return Err(Error::Io {
                    what: "delete",
                    source: io::Error::from_raw_os_error(code.saturating_abs()),
                });
            }
            None => continue,
        }
    }
}

fn open() -> Result<Socket, Error> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(Error::Open)?;
    socket.bind_auto().map_err(Error::Open)?;
    setsockopt(
        &socket,
        sockopt::ReceiveTimeout,
        &TimeVal::milliseconds(RECV_TIMEOUT_MS),
    )
    .map_err(|e| Error::Open(e.into()))?;
    Ok(socket)
}

fn message(
    flags: u16,
    family: NetfilterProtoFamily,
    inner: ConntrackMessage,
) -> NetlinkMessage<NetfilterMessage> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            inner,
        )),
    );
    message.finalize();
    message
}

fn send(
    socket: &Socket,
    message: &NetlinkMessage<NetfilterMessage>,
    what: &'static str,
) -> Result<(), Error> {
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    socket
        .send(&bytes, 0)
        .map(drop)
        .map_err(|source| Error::Io { what, source })
}

fn recv(socket: &Socket, buf: &mut [u8], what: &'static str) -> Result<usize, Error> {
    loop {
        match socket.recv(&mut &mut buf[..], 0) {
            Ok(len) => return Ok(len),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(Error::Io { what, source }),
        }
    }
}

/// Each message of one datagram: its type and bytes. A header whose length does not fit ends
/// the walk (counted by the caller as malformed).
fn messages(datagram: &[u8]) -> impl Iterator<Item = Option<(u16, &[u8])>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Ok(buffer) = NetlinkBuffer::new_checked(rest) else {
            rest = &[];
            return Some(None);
        };
        let length = buffer.length() as usize;
        let message_type = buffer.message_type();
        let message = rest.get(..length);
        // Messages are 4-byte aligned (NLMSG_ALIGN).
        rest = rest
            .get(length.saturating_add(3) & !3..)
            .unwrap_or_default();
        Some(message.map(|m| (message_type, m)))
    })
}

/// Adds a dump datagram's entries to `listing`; true at the end of the dump.
fn read_dump_datagram(datagram: &[u8], listing: &mut Listing) -> Result<bool, Error> {
    for message in messages(datagram) {
        let Some((message_type, bytes)) = message else {
            listing.malformed += 1;
            break;
        };
        match message_type {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                if let Some(code) = acknowledgement(bytes)
                    && code != 0
                {
                    return Err(Error::Io {
                        what: "dump",
                        source: io::Error::from_raw_os_error(code.saturating_abs()),
                    });
                }
            }
            CT_NEW => match NetlinkMessage::<NetfilterMessage>::deserialize(bytes) {
                Ok(NetlinkMessage {
                    payload:
                        NetlinkPayload::InnerMessage(NetfilterMessage {
                            inner:
                                NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)),
                            ..
                        }),
                    ..
                }) => match entry(&attributes) {
                    Entry::Connection(connection) => listing.connections.push(connection),
                    Entry::OtherProtocol => listing.other_protocols += 1,
                    Entry::Closed => listing.closed += 1,
                    Entry::Malformed => listing.malformed += 1,
                },
                _ => listing.malformed += 1,
            },
            _ => {}
        }
    }
    Ok(false)
}

/// The error code of the first acknowledgement in a datagram (0 for success).
fn acknowledgement(datagram: &[u8]) -> Option<i32> {
    messages(datagram)
        .flatten()
        .find_map(|(message_type, bytes)| {
            if message_type != NLMSG_ERROR {
                return None;
            }
            match NetlinkMessage::<NetfilterMessage>::deserialize(bytes) {
                Ok(NetlinkMessage {
                    payload: NetlinkPayload::Error(error),
                    ..
                }) => Some(error.code.map_or(0, |code| code.get())),
                _ => None,
            }
        })
}

/// What one dumped entry is.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Connection(Connection),
    OtherProtocol,
    Closed,
    Malformed,
}

fn entry(attributes: &[ConntrackAttribute]) -> Entry {
    let mut original = None;
    let mut reply = None;
    let mut zone = 0;
    let mut over = false;
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaProtoInfo(infos) => {
                over |= infos.iter().any(|info| {
                    matches!(info, ProtoInfo::TCP(fields) if fields.iter().any(|f| {
                        matches!(f, ProtoInfoTCP::State(state) if TCP_OVER.contains(state))
                    }))
                });
            }
            ConntrackAttribute::CtaTupleOrig(tuples) => original = Some(read_tuple(tuples)),
            ConntrackAttribute::CtaTupleReply(tuples) => reply = Some(read_tuple(tuples)),
            ConntrackAttribute::Other(nla) if nla.kind() == CTA_ZONE && nla.value_len() == 2 => {
                let mut bytes = [0; 2];
                nla.emit_value(&mut bytes);
                zone = u16::from_be_bytes(bytes);
            }
            _ => {}
        }
    }
    let (Some(Some(original)), Some(Some(reply))) = (original, reply) else {
        return Entry::Malformed;
    };
    let (original, protocol) = original;
    let (reply, _) = reply;
    match IpProtocol::from_number(protocol).policy_protocol() {
        Some(_) if over => Entry::Closed,
        Some(protocol) => Entry::Connection(Connection {
            protocol,
            original,
            reply,
            zone,
        }),
        None => Entry::OtherProtocol,
    }
}

/// A tuple's addresses and ports (zero for protocols without ports), and its protocol number.
fn read_tuple(tuples: &[CtTuple]) -> Option<(Tuple, u8)> {
    let (mut source, mut destination, mut protocol) = (None, None, None);
    let (mut source_port, mut destination_port) = (0, 0);
    for tuple in tuples {
        match tuple {
            CtTuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => source = Some(*a),
                        IPTuple::DestinationAddress(a) => destination = Some(*a),
                        _ => {}
                    }
                }
            }
            CtTuple::Proto(fields) => {
                for field in fields {
                    match field {
                        ProtoTuple::Protocol(p) => protocol = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(port) => source_port = *port,
                        ProtoTuple::DestinationPort(port) => destination_port = *port,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        Tuple {
            source: SocketAddr::new(source?, source_port),
            destination: SocketAddr::new(destination?, destination_port),
        },
        protocol?,
    ))
}

/// The netlink form of an original tuple.
fn tuple(tuple: Tuple, protocol: Protocol) -> Vec<CtTuple> {
    let number = match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    };
    vec![
        CtTuple::Ip(vec![
            IPTuple::SourceAddress(tuple.source.ip()),
            IPTuple::DestinationAddress(tuple.destination.ip()),
        ]),
        CtTuple::Proto(vec![
            ProtoTuple::Protocol(number.into()),
            ProtoTuple::SourcePort(tuple.source.port()),
            ProtoTuple::DestinationPort(tuple.destination.port()),
        ]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> Connection {
        Connection {
            protocol: Protocol::Tcp,
            original: Tuple {
                source: "10.0.1.1:40000".parse().unwrap(),
                destination: "10.96.0.5:80".parse().unwrap(),
            },
            reply: Tuple {
                source: "10.0.1.2:8080".parse().unwrap(),
                destination: "10.0.1.1:40000".parse().unwrap(),
            },
            zone: 7,
        }
    }

    /// A dump datagram as ctnetlink sends it: the entry, then the end of the dump.
    fn dump_datagram(connection: &Connection) -> Vec<u8> {
        let mut entry = message(
            NLM_F_REQUEST,
            NetfilterProtoFamily::IPv4,
            ConntrackMessage::New(vec![
                ConntrackAttribute::CtaTupleOrig(tuple(connection.original, connection.protocol)),
                ConntrackAttribute::CtaTupleReply(tuple(connection.reply, connection.protocol)),
                ConntrackAttribute::Other(DefaultNla::new(
                    CTA_ZONE,
                    connection.zone.to_be_bytes().to_vec(),
                )),
            ]),
        );
        entry.finalize();
        let mut bytes = vec![0; entry.buffer_len()];
        entry.serialize(&mut bytes);
        // NLMSG_DONE: a header and a 4-byte status.
        let done_len: u32 = 20;
        bytes.extend_from_slice(&done_len.to_ne_bytes());
        bytes.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        bytes.extend_from_slice(&[0; 14]);
        bytes
    }

    #[test]
    fn a_dumped_entry_reads_as_the_connection_with_its_zone_and_the_dump_ends() {
        let mut listing = Listing::default();
        let done = read_dump_datagram(&dump_datagram(&connection()), &mut listing).unwrap();
        assert!(done);
        assert_eq!(listing.connections, [connection()]);
        assert_eq!((listing.malformed, listing.other_protocols), (0, 0));
    }

    #[test]
    fn garbage_is_counted_never_a_panic() {
        let mut listing = Listing::default();
        let mut bytes = dump_datagram(&connection());
        // Cut inside the entry: the header's length no longer fits.
        bytes.truncate(30);
        assert!(!read_dump_datagram(&bytes, &mut listing).unwrap());
        assert_eq!(listing.malformed, 1);
        assert!(listing.connections.is_empty());
        for len in 0..64 {
            let noise: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = read_dump_datagram(&noise, &mut Listing::default());
        }
    }

    #[test]
    fn an_entry_without_ports_is_another_protocol() {
        let attributes = vec![
            ConntrackAttribute::CtaTupleOrig(vec![
                CtTuple::Ip(vec![
                    IPTuple::SourceAddress("10.0.0.1".parse().unwrap()),
                    IPTuple::DestinationAddress("10.0.0.2".parse().unwrap()),
                ]),
                CtTuple::Proto(vec![ProtoTuple::Protocol(1.into())]),
            ]),
            ConntrackAttribute::CtaTupleReply(vec![
                CtTuple::Ip(vec![
                    IPTuple::SourceAddress("10.0.0.2".parse().unwrap()),
                    IPTuple::DestinationAddress("10.0.0.1".parse().unwrap()),
                ]),
                CtTuple::Proto(vec![ProtoTuple::Protocol(1.into())]),
            ]),
        ];
        assert_eq!(entry(&attributes), Entry::OtherProtocol);
        assert_eq!(entry(&attributes[..1]), Entry::Malformed);
    }

    #[test]
    fn a_tcp_connection_in_time_wait_or_close_is_over() {
        let c = connection();
        let with_state = |state: u8| {
            vec![
                ConntrackAttribute::CtaTupleOrig(tuple(c.original, c.protocol)),
                ConntrackAttribute::CtaTupleReply(tuple(c.reply, c.protocol)),
                ConntrackAttribute::CtaProtoInfo(vec![ProtoInfo::TCP(vec![ProtoInfoTCP::State(
                    state,
                )])]),
            ]
        };
        assert_eq!(entry(&with_state(7)), Entry::Closed);
        assert_eq!(entry(&with_state(8)), Entry::Closed);
        let established = Connection { zone: 0, ..c };
        assert_eq!(entry(&with_state(3)), Entry::Connection(established));
    }
}
