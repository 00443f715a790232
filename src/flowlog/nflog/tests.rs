//! Fixtures: whole datagrams as `recv` returned them, captured on kernel 6.18 with
//! `examples/nflog_dump.rs` bound to group 100 in network namespace B, nftables rules in B
//! logging traffic from namespace A (10.99.0.1, fd00:99::1) over a veth pair (A's MAC
//! 02:00:00:00:00:0a, B's 02:00:00:00:00:0b, interface index 2 in both). The payloads are the
//! fixtures of `decode/tests.rs`.

use super::*;
use kube_nftpol_test_support::rng::Rng;

use crate::flowlog::decode::tests::hex;

/// `nflog_dump 100 5` (queue threshold 1), rule `ip saddr 10.99.0.1 log prefix
/// "knp:deny:ingress:shop/backend-0" group 100 snaplen 128 queue-threshold 1 drop` in B's
/// input hook, `socket.connect(("10.99.0.2", 9090))` in A: one record, the first of the
/// instance (seq 0).
const INGRESS_TCP: &str = "d8000000000400000000000000000000020000640800010008000100\
    24000a006b6e703a64656e793a696e67726573733a73686f702f6261636b656e642d3000\
    0800040000000002100008000006000002000000000a000006000f000001000006001100000e0000\
    1200100002000000000b02000000000a0800000014000300000000006b04347800000000000f33db\
    08000c000000000040000900\
    4500003c237f4000400602750a6300010a630002e7942382980249e900000000a002faf014f700000204\
    05b40402080a7ec614d9000000000103030a";

/// Same capture, fifth datagram: B's own `sendto(b"q", ("fd00:99::1", 53))` dropped by
/// `ip6 daddr fd00:99::1 udp dport 53 log prefix "knp:deny:egress:shop/backend-0" ...` in
/// its output hook (seq 4). Output-hook records carry the sender's uid and gid and no
/// timestamp.
const EGRESS_UDP6: &str = "980000000004000000000000000000000a0000640800010086dd0300\
    23000a006b6e703a64656e793a6567726573733a73686f702f6261636b656e642d3000000800050000\
    00000208000b000000000008000e000000000008000c0000000004350009006008\
    95f800091140fd000099000000000000000000000002fd0000990000000000000000000000019c410035\
    0009fb5071000000";

/// `nflog_dump 100 1 3` (queue threshold 3, 1 s timeout), rule `ip saddr 10.99.0.1 udp dport
/// 7000 log prefix "knp:deny:ingress:shop/batch-0" group 100 snaplen 128 queue-threshold 3
/// drop`, three one-byte datagrams (0, 1, 2) from A: one datagram with three records and
/// NLMSG_DONE.
const BATCH: &str = "bc00000000040000000000000000000002000064080001000800010022000a006b6e70\
    3a64656e793a696e67726573733a73686f702f62617463682d30000000080004000000000210000800\
    0006000002000000000a000006000f000001000006001100000e00001200100002000000000b020000\
    00000a0800000014000300000000006b04347b000000000000e70f08000c0000000000210009004500\
    001deb4f400040113ab80a6300010a6300029c421b58000914e300000000\
    bc00000000040000000000000000000002000064080001000800010022000a006b6e703a64656e793a\
    696e67726573733a73686f702f62617463682d300000000800040000000002100008000006000002000\
    000000a000006000f000001000006001100000e00001200100002000000000b02000000000a08000000\
    14000300000000006b04347b000000000000e72308000c0000000001210009004500001deb50400040\
    113ab70a6300010a6300029c421b58000914e301000000\
    bc00000000040000000000000000000002000064080001000800010022000a006b6e703a64656e793a\
    696e67726573733a73686f702f62617463682d300000000800040000000002100008000006000002000\
    000000a000006000f000001000006001100000e00001200100002000000000b02000000000a08000000\
    14000300000000006b04347b000000000000e72a08000c0000000002210009004500001deb51400040\
    113ab60a6300010a6300029c421b58000914e302000000\
    1400000003000000000000000000000000000064";

/// The length of each record message in [`BATCH`].
const BATCH_MESSAGE: usize = 0xbc;

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

#[test]
fn a_captured_ingress_datagram_becomes_one_record_with_its_metadata() {
    let datagram = parse_datagram(&hex(INGRESS_TCP), at(7));
    assert_eq!(datagram.malformed, 0);
    assert!(datagram.acks.is_empty());
    let [record] = datagram.records.as_slice() else {
        panic!("{datagram:?}");
    };
    assert_eq!(record.family, 2); // NFPROTO_IPV4
    assert_eq!(record.prefix, "knp:deny:ingress:shop/backend-0");
    assert_eq!(record.hw_protocol, Some(0x0800));
    assert_eq!(record.hook, Some(1)); // NF_INET_LOCAL_IN
    assert_eq!((record.indev, record.outdev), (Some(2), None));
    assert_eq!(record.seq, Some(0));
    assert_eq!(
        record.timestamp,
        Some(at(0x6b04_3478) + Duration::from_micros(0x0f_33db))
    );
    assert_eq!(record.received_at, at(7));
    assert_eq!(record.payload.len(), 60);
    assert_eq!(record.payload[..2], [0x45, 0x00]);
}

#[test]
fn an_egress_record_has_an_output_interface_and_no_timestamp() {
    let datagram = parse_datagram(&hex(EGRESS_UDP6), at(0));
    let [record] = datagram.records.as_slice() else {
        panic!("{datagram:?}");
    };
    assert_eq!(record.family, 10); // NFPROTO_IPV6
    assert_eq!(record.prefix, "knp:deny:egress:shop/backend-0");
    assert_eq!(record.hw_protocol, Some(0x86dd));
    assert_eq!(record.hook, Some(3)); // NF_INET_LOCAL_OUT
    assert_eq!((record.indev, record.outdev), (None, Some(2)));
    assert_eq!(record.timestamp, None);
    assert_eq!(record.seq, Some(4));
    assert_eq!(record.payload.len(), 49);
}

#[test]
fn every_record_of_a_batched_datagram_is_parsed() {
    let datagram = parse_datagram(&hex(BATCH), at(0));
    assert_eq!(datagram.malformed, 0);
    let seqs: Vec<_> = datagram.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [Some(0), Some(1), Some(2)]);
    let last_bytes: Vec<_> = datagram
        .records
        .iter()
        .map(|r| r.payload.last().copied())
        .collect();
    assert_eq!(last_bytes, [Some(0), Some(1), Some(2)]);
    assert!(
        datagram
            .records
            .iter()
            .all(|r| r.prefix == "knp:deny:ingress:shop/batch-0")
    );
}

#[test]
fn a_datagram_cut_inside_a_message_keeps_the_records_before_it() {
    let bytes = hex(BATCH);
    let datagram = parse_datagram(&bytes[..BATCH_MESSAGE + 100], at(0));
    assert_eq!(datagram.records.len(), 1);
    assert_eq!(datagram.malformed, 1);
}

#[test]
fn a_message_that_does_not_parse_is_skipped_and_the_next_ones_are_read() {
    let mut bytes = hex(BATCH);
    // The first record's prefix attribute starts at 28 (netlink header 16, nfgenmsg 4,
    // NFULA_PACKET_HDR 8); its 29 characters end with a NUL at 28 + 4 + 29. Without it the
    // prefix is not a C string and the message does not parse.
    assert_eq!(bytes[61], 0);
    bytes[61] = b'x';
    let datagram = parse_datagram(&bytes, at(0));
    assert_eq!(datagram.malformed, 1);
    let seqs: Vec<_> = datagram.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [Some(1), Some(2)]);
}

/// Found by the `nflog_decode` fuzz target (`fuzz/seeds/nflog_decode/
/// crash-nftables-set-short-attribute`): an nftables set message (subsystem 10, type 0x0a0a)
/// whose nested attribute is shorter than its own header made netlink-packet-netfilter panic
/// (an overflowing subtraction in netlink-packet-core 0.9.0), which would end the reader
/// thread. Messages of types an NFLOG socket never gets are now skipped unparsed and counted.
const NFTABLES_SET_SHORT_ATTRIBUTE: &str = "450000000a0a00980000000000062b00000000000a0011000000000000ffffff\
    ffffffffffffffffffffffffffffff004a00000000006300003a040b3a000996\
    9100000108";

#[test]
fn a_message_of_another_netfilter_subsystem_is_skipped_unparsed() {
    let mut bytes = hex(NFTABLES_SET_SHORT_ATTRIBUTE);
    let datagram = parse_datagram(&bytes, at(0));
    assert_eq!(datagram.records, []);
    assert_eq!(datagram.malformed, 1);
    // A record after it (at the next 4-byte boundary) is still read.
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    bytes.extend(hex(INGRESS_TCP));
    let datagram = parse_datagram(&bytes, at(0));
    assert_eq!(datagram.records.len(), 1);
    assert_eq!(
        datagram.records[0].prefix,
        "knp:deny:ingress:shop/backend-0"
    );
    assert_eq!(datagram.malformed, 1);
}

#[test]
fn acknowledgements_are_reported_with_their_sequence_and_errno() {
    // Built: NLMSG_ERROR (type 2) with sequence 7 and error -1 (EPERM, what a second binder
    // gets), then an ACK (error 0) for sequence 8; each echoes the 16-byte request header.
    let bytes = hex("24000000 0200 0000 07000000 00000000 ffffffff \
                     14000000 0001 0500 07000000 00000000 \
                     24000000 0200 0000 08000000 00000000 00000000 \
                     14000000 0001 0500 08000000 00000000");
    let datagram = parse_datagram(&bytes, at(0));
    assert_eq!(datagram.malformed, 0);
    assert_eq!(
        datagram.acks,
        [
            Ack {
                sequence: 7,
                error: NonZeroI32::new(-1)
            },
            Ack {
                sequence: 8,
                error: None
            }
        ]
    );
}

#[test]
fn sequence_gaps_count_the_missing_records() {
    let mut tracker = SeqTracker::default();
    assert_eq!(tracker.observe(0), 0);
    assert_eq!(tracker.observe(1), 0);
    assert_eq!(tracker.observe(5), 3);
    assert_eq!(tracker.observe(6), 0);
    // Going backwards resynchronises without counting.
    assert_eq!(tracker.observe(2), 0);
    assert_eq!(tracker.observe(3), 0);
    // Wrapping around u32 is a gap like any other.
    let mut tracker = SeqTracker {
        expected: u32::MAX - 1,
    };
    assert_eq!(tracker.observe(1), 3);
}

#[test]
fn random_and_mutated_datagrams_never_panic() {
    let fixtures: Vec<Vec<u8>> = [INGRESS_TCP, EGRESS_UDP6, BATCH].map(hex).into();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for fixture in &fixtures {
        for len in 0..=fixture.len() {
            let datagram = parse_datagram(&fixture[..len], at(0));
            assert!(datagram.records.len() <= 3);
        }
    }
    for _ in 0..20_000 {
        let mut bytes = fixtures[rng.below(fixtures.len())].clone();
        for _ in 0..=rng.below(6) {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next_u64().to_le_bytes()[0];
        }
        parse_datagram(&bytes, at(0));
    }
    for _ in 0..20_000 {
        let len = rng.below(400);
        parse_datagram(&rng.bytes(len), at(0));
    }
}

#[test]
fn a_zero_capacity_channel_is_refused_before_touching_the_kernel() {
    assert!(matches!(spawn_reader(100, 0), Err(Error::ZeroCapacity)));
}
