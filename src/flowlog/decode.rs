//! Decoding one NFLOG record of the agent's rules: which pod and direction, and what the rule
//! logged (a default deny's drop or audit, or in observe mode an allowed or unisolated first
//! packet: [`LogKind`], from the log prefix), and what the packet was (addresses, protocol,
//! ports from its first bytes).
//!
//! Pure and total: the payload is whatever a peer put on the wire, cut at the rule's snaplen
//! (128 bytes), so every length is checked (by etherparse's lax slices, which accept packets cut
//! short of their IP length field) and anything else is a [`DecodeError`], never a panic. This
//! module does not read sockets ([`super::nflog`]) and does not look at the cluster
//! ([`super::enrich`]).

use std::net::IpAddr;

use etherparse::{Ipv6ExtensionSlice, LaxIpSlice, TcpHeaderSlice, UdpHeaderSlice};

use super::Record;
use crate::compile::LogKind;
use crate::model::{Direction, IpProtocol, ObjectKey};

/// A packet one of the agent's rules logged, as far as its first bytes tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPacket {
    /// What the rule logged: a default deny's drop (`knp:deny:`) or audit (`knp:audit:`), or
    /// in observe mode a first packet a policy rule allowed (`knp:allow:`) or of a pod no
    /// policy isolates (`knp:open:`).
    pub kind: LogKind,
    /// Whether the pod was receiving (ingress) or sending (egress) it.
    pub direction: Direction,
    /// The policed pod, from the log prefix. The compiler cuts prefixes at 127 bytes, so a very
    /// long pod name arrives cut short ([`super::enrich`] resolves that through the address).
    pub pod: ObjectKey,
    /// The packet's source address.
    pub source: IpAddr,
    /// The packet's destination address.
    pub destination: IpAddr,
    /// The transport protocol (after IPv6 extension headers).
    pub protocol: IpProtocol,
    /// The source port, for TCP, UDP and SCTP when the copied bytes contain it.
    pub source_port: Option<u16>,
    /// The destination port, for TCP, UDP and SCTP when the copied bytes contain it. Absent for
    /// non-first fragments, whose payload does not start with a transport header.
    pub destination_port: Option<u16>,
}

/// Why a record is not a decodable default-deny drop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The prefix starts with none of [`LogKind`]'s prefixes: another rule logs to the same
    /// group.
    #[error("log prefix {prefix:?} is not a kube-nftpol prefix")]
    ForeignPrefix {
        /// The prefix as received.
        prefix: String,
    },
    /// The prefix starts like ours but the rest is not `<direction>:<namespace>/<pod>`.
    #[error("log prefix {prefix:?}: {problem}")]
    BadPrefix {
        /// The prefix as received.
        prefix: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The record carries no packet bytes (copy mode `none` or `meta`, or snaplen 0).
    #[error("record carries no packet bytes")]
    NoPayload,
    /// The bytes do not start with a complete IPv4 or IPv6 header.
    #[error("packet header: {message}")]
    IpHeader {
        /// etherparse's description.
        message: String,
    },
}

/// Decodes one record. Only the prefix and the payload are read.
pub fn decode(record: &Record) -> Result<LoggedPacket, DecodeError> {
    let (kind, direction, pod) = parse_prefix(&record.prefix)?;
    if record.payload.is_empty() {
        return Err(DecodeError::NoPayload);
    }
    // `from_slice` here is etherparse's lax variant: it uses the slice length when the IP
    // length field claims more than was copied, and stops (keeping what it has) at an IPv6
    // extension header cut short. Only a broken fixed IP header is an error.
    let (ip, _stopped_in_extensions) =
        LaxIpSlice::from_slice(&record.payload).map_err(|e| DecodeError::IpHeader {
            message: e.to_string(),
        })?;
    let payload = ip.payload();
    let protocol = IpProtocol::from_number(payload.ip_number.0);
    let (source_port, destination_port) =
        if protocol.has_ports() && starts_with_transport_header(&ip) {
            ports(protocol, payload.payload)
        } else {
            (None, None)
        };
    Ok(LoggedPacket {
        kind,
        direction,
        pod,
        source: ip.source_addr(),
        destination: ip.destination_addr(),
        protocol,
        source_port,
        destination_port,
    })
}

/// Parses `knp:<kind>:<ingress|egress>:<namespace>/<pod>` ([`LogKind::log_prefix`]).
pub fn parse_prefix(prefix: &str) -> Result<(LogKind, Direction, ObjectKey), DecodeError> {
    let bad = |problem| DecodeError::BadPrefix {
        prefix: prefix.to_owned(),
        problem,
    };
    let Some((kind, rest)) = LogKind::split_prefix(prefix) else {
        return Err(DecodeError::ForeignPrefix {
            prefix: prefix.to_owned(),
        });
    };
    let (direction, key) = rest.split_once(':').ok_or_else(|| bad("no direction"))?;
    let direction = match direction {
        "ingress" => Direction::Ingress,
        "egress" => Direction::Egress,
        _ => return Err(bad("direction is neither ingress nor egress")),
    };
    // Namespace names are DNS labels and pod names DNS subdomains: neither contains '/'.
    let (namespace, name) = key.split_once('/').ok_or_else(|| bad("no namespace/pod"))?;
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return Err(bad("namespace or pod name empty or malformed"));
    }
    Ok((kind, direction, ObjectKey::new(namespace, name)))
}

/// Whether the IP payload begins with the transport header: the packet is not fragmented, or
/// this is the first fragment (offset 0). Later fragments carry the middle of the datagram.
fn starts_with_transport_header(ip: &LaxIpSlice<'_>) -> bool {
    if !ip.payload().fragmented {
        return true;
    }
    match ip {
        LaxIpSlice::Ipv4(v4) => v4.header().fragments_offset().value() == 0,
        LaxIpSlice::Ipv6(v6) => v6.extensions().clone().into_iter().all(|ext| match ext {
            Ipv6ExtensionSlice::Fragment(fragment) => fragment.fragment_offset().value() == 0,
            _ => true,
        }),
    }
}

/// Source and destination ports from the start of a transport header. TCP and UDP go through
/// etherparse when their whole header was copied; SCTP (which etherparse does not parse) and
/// headers cut short fall back to the first four bytes, where all three keep both ports.
fn ports(protocol: IpProtocol, transport: &[u8]) -> (Option<u16>, Option<u16>) {
    let parsed = match protocol {
        IpProtocol::Tcp => TcpHeaderSlice::from_slice(transport)
            .ok()
            .map(|tcp| (tcp.source_port(), tcp.destination_port())),
        IpProtocol::Udp => UdpHeaderSlice::from_slice(transport)
            .ok()
            .map(|udp| (udp.source_port(), udp.destination_port())),
        _ => None,
    };
    let raw = || match transport {
        [s0, s1, d0, d1, ..] => Some((
            u16::from_be_bytes([*s0, *s1]),
            u16::from_be_bytes([*d0, *d1]),
        )),
        _ => None,
    };
    match parsed.or_else(raw) {
        Some((source, destination)) => (Some(source), Some(destination)),
        None => (None, None),
    }
}

#[cfg(test)]
pub(crate) mod tests;
