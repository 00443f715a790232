//! SCTP on the wire, for a kernel without SCTP sockets (CONFIG_IP_SCTP off):
//! the INIT chunk a client would send first, and reading it back out of an IPv4 packet.
//!
//! Conntrack and nftables understand SCTP without the SCTP module, so a raw INIT (IP protocol
//! 132) from a pod namespace is judged like the first packet of a real association. The
//! checksum is CRC32c over the SCTP packet (RFC 9260 appendix A), stored as Linux stores it
//! (`sctp_compute_cksum`: the CRC in little-endian byte order); conntrack drops INITs with a
//! bad one as invalid. No I/O here.

use std::net::Ipv4Addr;

/// The IP protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// The SCTP INIT chunk type.
const CHUNK_INIT: u8 = 1;

/// An SCTP packet carrying one INIT chunk, `initiate_tag` naming the probe (non-zero).
pub fn init_packet(src_port: u16, dst_port: u16, initiate_tag: u32) -> [u8; 32] {
    let mut p = [0u8; 32];
    // Common header: ports, verification tag 0 (required for INIT), checksum (below).
    p[0..2].copy_from_slice(&src_port.to_be_bytes());
    p[2..4].copy_from_slice(&dst_port.to_be_bytes());
    // INIT chunk: type, flags, length 20, initiate tag, a_rwnd, outbound and inbound
    // streams, initial TSN.
    p[12] = CHUNK_INIT;
    p[14..16].copy_from_slice(&20u16.to_be_bytes());
    p[16..20].copy_from_slice(&initiate_tag.to_be_bytes());
    p[20..24].copy_from_slice(&65_535u32.to_be_bytes());
    p[24..26].copy_from_slice(&1u16.to_be_bytes());
    p[26..28].copy_from_slice(&1u16.to_be_bytes());
    p[28..32].copy_from_slice(&initiate_tag.to_be_bytes());
    let checksum = crc32c(&p);
    p[8..12].copy_from_slice(&checksum.to_le_bytes());
    p
}

/// An SCTP INIT seen in an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Init {
    /// IPv4 source address.
    pub src: Ipv4Addr,
    /// IPv4 destination address.
    pub dst: Ipv4Addr,
    /// SCTP source port.
    pub src_port: u16,
    /// SCTP destination port.
    pub dst_port: u16,
    /// The INIT chunk's initiate tag (the probe's id).
    pub initiate_tag: u32,
}

/// Reads an INIT out of an IPv4 packet (from the IP header on); `None` for anything else.
pub fn parse_init(packet: &[u8]) -> Option<Init> {
    let first = *packet.first()?;
    if first >> 4 != 4 || *packet.get(9)? != IPPROTO_SCTP {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let addr = |at: usize| -> Option<Ipv4Addr> {
        let b: [u8; 4] = packet.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    };
    let sctp = packet.get(header_len..)?;
    let u16_at = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(sctp.get(at..at + 2)?.try_into().ok()?))
    };
    if *sctp.get(12)? != CHUNK_INIT {
        return None;
    }
    Some(Init {
        src: addr(12)?,
        dst: addr(16)?,
        src_port: u16_at(0)?,
        dst_port: u16_at(2)?,
        initiate_tag: u32::from_be_bytes(sctp.get(16..20)?.try_into().ok()?),
    })
}

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78), bitwise: the packets are tiny.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC catalogue's check value for CRC-32/ISCSI over "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn init_packet_checksum_verifies_like_the_kernel_does() {
        let packet = init_packet(40_000, 80, 0x1234_5678);
        let stored = u32::from_le_bytes(packet[8..12].try_into().unwrap());
        let mut zeroed = packet;
        zeroed[8..12].fill(0);
        assert_eq!(stored, crc32c(&zeroed));
    }

    #[test]
    fn init_is_read_back_from_an_ipv4_packet() {
        let mut ip = vec![0x45, 0, 0, 52, 0, 0, 0x40, 0, 64, IPPROTO_SCTP, 0, 0];
        ip.extend([10, 244, 1, 11, 10, 244, 1, 12]);
        ip.extend(init_packet(40_000, 81, 77));
        let init = parse_init(&ip).unwrap();
        assert_eq!(
            init,
            Init {
                src: Ipv4Addr::new(10, 244, 1, 11),
                dst: Ipv4Addr::new(10, 244, 1, 12),
                src_port: 40_000,
                dst_port: 81,
                initiate_tag: 77,
            }
        );
        ip[9] = 6;
        assert_eq!(parse_init(&ip), None, "TCP is not SCTP");
        assert_eq!(parse_init(&ip[..10]), None, "truncated");
    }
}
