//! Fixtures: payloads captured from the kernel (see each constant), and packets built with
//! etherparse's header types for cases the capture does not produce (SCTP, fragments, IPv6
//! extension headers, cut headers).

use std::net::IpAddr;

use etherparse::{
    IpFragOffset, IpNumber, Ipv4Header, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader,
    TcpHeader, UdpHeader,
};

use kube_nftpol_test_support::rng::Rng;

use super::*;
use crate::model::Tier;

pub(crate) fn hex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

// Captured on kernel 6.18 with `examples/nflog_dump.rs 100 5` in network namespace B, the
// rule `ip saddr 10.99.0.1 log prefix "knp:deny:ingress:shop/backend-0" group 100 snaplen 128
// queue-threshold 1 drop` (and its ip6 twin) in B's input hook, traffic sent from namespace A
// (10.99.0.1, fd00:99::1) over a veth pair with Python sockets. These are the NFULA_PAYLOAD
// attributes of the datagrams in `nflog/tests.rs`.

/// `socket.connect(("10.99.0.2", 9090))` from 10.99.0.1: a TCP SYN with options, 60 bytes.
const TCP4_SYN: &str = "4500003c237f4000400602750a6300010a630002e7942382980249e900000000\
    a002faf014f70000020405b40402080a7ec614d9000000000103030a";

/// `sendto(b"x" * 200, ("10.99.0.2", 5353))` from port 40000: 228 bytes on the wire, cut to
/// 128 by the rule's snaplen (the IP total length still says 228).
const UDP4_CUT: &str = "450000e471a140004011b39f0a6300010a6300029c4014e900d015aa\
    78787878787878787878787878787878787878787878787878787878787878787878787878787878\
    78787878787878787878787878787878787878787878787878787878787878787878787878787878\
    7878787878787878787878787878787878787878";

/// `socket.connect(("fd00:99::2", 443))` from fd00:99::1: an IPv6 TCP SYN, 80 bytes.
const TCP6_SYN: &str = "6006603d00280640fd000099000000000000000000000001fd00009900000000\
    0000000000000002b50201bbb6a2524c00000000a002fd20fb640000020405a00402080af7e497f2\
    000000000103030a";

/// `ping -6 -c1 fd00:99::2`: an ICMPv6 echo request.
const ICMP6_ECHO: &str = "600d0ed400403a40fd000099000000000000000000000001fd000099000000\
    00000000000000000280006c4b3c2e00017934046b000000009961060000000000101112131415161718\
    191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637";

/// `ping -c1 10.99.0.2`: an ICMP echo request (same setup, an earlier capture).
const ICMP4_ECHO: &str = "450000549cad4000400189330a6300010a630002080012b1391600015334046b\
    0000000091c5040000000000101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d\
    2e2f3031323334353637";

/// Egress: `sendto(b"q", ("fd00:99::1", 53))` from [fd00:99::2]:40001, logged by
/// `ip6 daddr fd00:99::1 udp dport 53 log prefix "knp:deny:egress:shop/backend-0" ...` in
/// B's output hook.
const UDP6_EGRESS: &str = "600895f800091140fd000099000000000000000000000002fd00009900000000\
    00000000000000019c4100350009fb5071";

const INGRESS: &str = "knp:deny:ingress:shop/backend-0";

fn decode_hex(prefix: &str, payload: &str) -> Result<LoggedPacket, DecodeError> {
    decode(&Record::new(prefix, hex(payload)))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn a_captured_ipv4_tcp_syn_decodes_to_pod_direction_addresses_and_ports() {
    let packet = decode_hex(INGRESS, TCP4_SYN).unwrap();
    assert_eq!(
        packet,
        LoggedPacket {
            kind: LogKind::Denied,
            direction: Direction::Ingress,
            pod: ObjectKey::new("shop", "backend-0"),
            source: ip("10.99.0.1"),
            destination: ip("10.99.0.2"),
            protocol: IpProtocol::Tcp,
            source_port: Some(59284),
            destination_port: Some(9090),
        }
    );
}

#[test]
fn a_record_with_the_audit_prefix_decodes_as_audited() {
    let packet = decode_hex("knp:audit:ingress:shop/backend-0", TCP4_SYN).unwrap();
    assert_eq!(packet.kind, LogKind::Audited);
    assert_eq!(
        packet,
        LoggedPacket {
            kind: LogKind::Audited,
            ..decode_hex(INGRESS, TCP4_SYN).unwrap()
        }
    );
}

#[test]
fn a_udp_packet_cut_at_the_snaplen_still_decodes_its_headers() {
    let payload = hex(UDP4_CUT);
    assert_eq!(payload.len(), 128);
    let packet = decode(&Record::new(INGRESS, payload)).unwrap();
    assert_eq!(packet.protocol, IpProtocol::Udp);
    assert_eq!(packet.source_port, Some(40000));
    assert_eq!(packet.destination_port, Some(5353));
    assert_eq!(packet.destination, ip("10.99.0.2"));
}

#[test]
fn a_captured_ipv6_tcp_syn_decodes() {
    let packet = decode_hex(INGRESS, TCP6_SYN).unwrap();
    assert_eq!(packet.source, ip("fd00:99::1"));
    assert_eq!(packet.destination, ip("fd00:99::2"));
    assert_eq!(packet.protocol, IpProtocol::Tcp);
    assert_eq!(
        (packet.source_port, packet.destination_port),
        (Some(46338), Some(443))
    );
}

#[test]
fn icmp_echo_requests_decode_without_ports() {
    for (payload, protocol) in [
        (ICMP4_ECHO, IpProtocol::Icmp),
        (ICMP6_ECHO, IpProtocol::Icmpv6),
    ] {
        let packet = decode_hex(INGRESS, payload).unwrap();
        assert_eq!(packet.protocol, protocol);
        assert_eq!((packet.source_port, packet.destination_port), (None, None));
    }
}

#[test]
fn an_egress_record_names_the_sending_pod() {
    let packet = decode_hex("knp:deny:egress:shop/backend-0", UDP6_EGRESS).unwrap();
    assert_eq!(packet.direction, Direction::Egress);
    assert_eq!(packet.pod, ObjectKey::new("shop", "backend-0"));
    assert_eq!(packet.source, ip("fd00:99::2"));
    assert_eq!(packet.destination_port, Some(53));
}

/// Built: IPv4 header (protocol 132) + SCTP common header (ports 5000 -> 36412, verification
/// tag 0) + the start of an INIT chunk. The test kernel is built without SCTP sockets (CONFIG_IP_SCTP), so no
/// capture.
#[test]
fn sctp_ports_come_from_the_common_header() {
    let sctp = hex("1388 8e3c 00000000 00000000 01 00 0014");
    let header = Ipv4Header::new(
        sctp.len() as u16,
        64,
        IpNumber::SCTP,
        [10, 0, 0, 1],
        [10, 0, 0, 2],
    )
    .unwrap();
    let mut payload = header.to_bytes().to_vec();
    payload.extend(&sctp);
    let packet = decode(&Record::new(INGRESS, payload)).unwrap();
    assert_eq!(packet.protocol, IpProtocol::Sctp);
    assert_eq!(
        (packet.source_port, packet.destination_port),
        (Some(5000), Some(36412))
    );
}

fn ipv6(next_header: IpNumber, payload_length: u16) -> Vec<u8> {
    Ipv6Header {
        payload_length,
        next_header,
        hop_limit: 64,
        source: ip6_octets("fd00::1"),
        destination: ip6_octets("fd00::2"),
        ..Default::default()
    }
    .to_bytes()
    .to_vec()
}

fn ip6_octets(text: &str) -> [u8; 16] {
    text.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// Built: IPv6 + hop-by-hop options + fragment header (offset 0, more fragments) + UDP.
#[test]
fn ipv6_extension_headers_are_walked_and_a_first_fragment_has_ports() {
    let hop_by_hop = Ipv6RawExtHeader::new_raw(IpNumber::IPV6_FRAGMENTATION_HEADER, &[0; 6])
        .unwrap()
        .to_bytes();
    let fragment = Ipv6FragmentHeader::new(IpNumber::UDP, IpFragOffset::ZERO, true, 7).to_bytes();
    let udp = UdpHeader {
        source_port: 1234,
        destination_port: 53,
        length: 8,
        checksum: 0,
    }
    .to_bytes();
    let mut payload = ipv6(IpNumber::IPV6_HEADER_HOP_BY_HOP, 24);
    payload.extend(hop_by_hop.iter().chain(&fragment).chain(&udp));
    let packet = decode(&Record::new(INGRESS, payload)).unwrap();
    assert_eq!(packet.protocol, IpProtocol::Udp);
    assert_eq!(packet.destination_port, Some(53));
}

/// Built: IPv4 UDP fragment at offset 1480 bytes: its payload is the middle of the datagram.
#[test]
fn a_later_fragment_has_no_ports() {
    let mut header = Ipv4Header::new(8, 64, IpNumber::UDP, [10, 0, 0, 1], [10, 0, 0, 2]).unwrap();
    header.fragment_offset = IpFragOffset::try_new(185).unwrap();
    let mut payload = header.to_bytes().to_vec();
    payload.extend([0xab; 8]);
    let packet = decode(&Record::new(INGRESS, payload)).unwrap();
    assert_eq!(packet.protocol, IpProtocol::Udp);
    assert_eq!((packet.source_port, packet.destination_port), (None, None));
}

/// Built: IPv6 TCP whose header (with options) is cut after 10 bytes: the ports are there.
#[test]
fn a_tcp_header_cut_inside_still_gives_ports() {
    let mut tcp = TcpHeader::new(40000, 8080, 1, 65535);
    tcp.syn = true;
    tcp.set_options_raw(&[1; 20]).unwrap();
    let mut payload = ipv6(IpNumber::TCP, 40);
    payload.extend(&tcp.to_bytes()[..10]);
    let packet = decode(&Record::new(INGRESS, payload)).unwrap();
    assert_eq!(
        (packet.source_port, packet.destination_port),
        (Some(40000), Some(8080))
    );
}

/// Built: IPv6 whose hop-by-hop header is cut off: the protocol is that header's number.
#[test]
fn an_extension_header_cut_short_leaves_the_protocol_unknown() {
    let mut payload = ipv6(IpNumber::IPV6_HEADER_HOP_BY_HOP, 64);
    payload.extend([17, 5, 0, 0]);
    let packet = decode(&Record::new(INGRESS, payload)).unwrap();
    assert_eq!(packet.protocol, IpProtocol::Other(0));
    assert_eq!(packet.destination_port, None);
}

#[test]
fn records_without_an_ip_header_are_errors() {
    let empty = decode(&Record::new(INGRESS, Vec::new()));
    assert_eq!(empty, Err(DecodeError::NoPayload));
    let cases = [
        &hex(TCP4_SYN)[..19], // cut inside the IPv4 header
        &hex(TCP6_SYN)[..39], // cut inside the IPv6 header
        &hex("0001 0800 0604 0001 0200 0000 000a 0a63")[..], // an ARP request
        &hex("4100 0014 0000 0000 4006 0000")[..], // IHL 1 < 5
    ];
    for payload in cases {
        let result = decode(&Record::new(INGRESS, payload.to_vec()));
        assert!(
            matches!(result, Err(DecodeError::IpHeader { .. })),
            "{payload:02x?}: {result:?}"
        );
    }
}

#[test]
fn prefixes_are_checked() {
    let key = || ObjectKey::new("shop", "backend-0");
    assert_eq!(
        parse_prefix("knp:deny:egress:shop/backend-0"),
        Ok((LogKind::Denied, Direction::Egress, key()))
    );
    assert_eq!(
        parse_prefix("knp:audit:ingress:shop/backend-0"),
        Ok((LogKind::Audited, Direction::Ingress, key()))
    );
    assert_eq!(
        parse_prefix("knp:allow:egress:shop/backend-0"),
        Ok((LogKind::Allowed, Direction::Egress, key()))
    );
    assert_eq!(
        parse_prefix("knp:open:ingress:shop/backend-0"),
        Ok((LogKind::NotIsolated, Direction::Ingress, key()))
    );
    for (prefix, kind) in [
        (
            "knp:adeny:egress:shop/backend-0",
            LogKind::TierDenied(Tier::Admin),
        ),
        (
            "knp:bdeny:egress:shop/backend-0",
            LogKind::TierDenied(Tier::Baseline),
        ),
        (
            "knp:aaudit:egress:shop/backend-0",
            LogKind::TierAudited(Tier::Admin),
        ),
        (
            "knp:baudit:egress:shop/backend-0",
            LogKind::TierAudited(Tier::Baseline),
        ),
    ] {
        assert_eq!(
            parse_prefix(prefix),
            Ok((kind, Direction::Egress, key())),
            "{prefix}"
        );
    }
    assert!(matches!(
        parse_prefix("knp:accept:ingress:shop/backend-0"),
        Err(DecodeError::ForeignPrefix { .. })
    ));
    // Pod names are DNS subdomains: dots stay in the name.
    assert_eq!(
        parse_prefix("knp:deny:ingress:shop/web.v2-0").unwrap().2,
        ObjectKey::new("shop", "web.v2-0")
    );
    assert!(matches!(
        parse_prefix("FORWARD DROP: "),
        Err(DecodeError::ForeignPrefix { .. })
    ));
    assert!(matches!(
        parse_prefix(""),
        Err(DecodeError::ForeignPrefix { .. })
    ));
    assert!(matches!(
        parse_prefix("knp:auditor:ingress:shop/a"),
        Err(DecodeError::ForeignPrefix { .. })
    ));
    for bad in [
        "knp:audit:",
        "knp:audit:sideways:shop/a",
        "knp:audit:egress:shop",
        "knp:deny:",
        "knp:deny:sideways:shop/a",
        "knp:deny:ingress",
        "knp:deny:ingress:shop",
        "knp:deny:ingress:/a",
        "knp:deny:ingress:shop/",
        "knp:deny:ingress:shop/a/b",
    ] {
        assert!(
            matches!(parse_prefix(bad), Err(DecodeError::BadPrefix { .. })),
            "{bad}"
        );
    }
}

#[test]
fn protocols_print_as_nft_names_or_numbers() {
    let names: Vec<String> = [1, 6, 17, 58, 132, 47]
        .map(|n| IpProtocol::from_number(n).to_string())
        .into();
    assert_eq!(names, ["icmp", "tcp", "udp", "icmpv6", "sctp", "47"]);
    for n in 0..=255 {
        assert_eq!(IpProtocol::from_number(n).number(), n);
    }
    assert_eq!(
        serde_json::to_string(&IpProtocol::Other(47)).unwrap(),
        "\"47\""
    );
}

/// Whatever the bytes, decode returns, and the addresses it returns are the header's.
fn check_total(payload: &[u8]) {
    let Ok(packet) = decode(&Record::new(INGRESS, payload.to_vec())) else {
        return;
    };
    let (source, destination): (IpAddr, IpAddr) = match packet.source {
        IpAddr::V4(_) => (
            <[u8; 4]>::try_from(&payload[12..16]).unwrap().into(),
            <[u8; 4]>::try_from(&payload[16..20]).unwrap().into(),
        ),
        IpAddr::V6(_) => (
            <[u8; 16]>::try_from(&payload[8..24]).unwrap().into(),
            <[u8; 16]>::try_from(&payload[24..40]).unwrap().into(),
        ),
    };
    assert_eq!((packet.source, packet.destination), (source, destination));
    assert_eq!(
        packet.source_port.is_some(),
        packet.destination_port.is_some()
    );
}

#[test]
fn random_cut_and_mutated_bytes_never_panic() {
    let fixtures: Vec<Vec<u8>> = [
        TCP4_SYN,
        UDP4_CUT,
        TCP6_SYN,
        ICMP6_ECHO,
        ICMP4_ECHO,
        UDP6_EGRESS,
    ]
    .map(hex)
    .into();
    for fixture in &fixtures {
        for len in 0..=fixture.len() {
            check_total(&fixture[..len]);
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = rng.below(160);
        let mut bytes = rng.bytes(len);
        // Bias half the inputs towards valid-looking IPv4 and IPv6 first bytes.
        if let Some(first) = bytes.first_mut()
            && rng.below(2) == 0
        {
            *first = if rng.below(2) == 0 { 0x45 } else { 0x60 };
        }
        check_total(&bytes);
    }
    for _ in 0..20_000 {
        let mut bytes = fixtures[rng.below(fixtures.len())].clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next_u64().to_le_bytes()[0];
        }
        bytes.truncate(rng.below(bytes.len() + 1));
        check_total(&bytes);
    }
}
