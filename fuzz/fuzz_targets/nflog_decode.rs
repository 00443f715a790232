//! Fuzz target: NFLOG input, which a packet's sender controls (its bytes) and the kernel frames
//! (netlink), through everything the agent does with it: the datagram parser
//! (`flowlog::nflog::parse_datagram`), the packet decoder (`flowlog::decode`), enrichment
//! against a cluster snapshot, the dedup key and both drop-log line formats.
//!
//! Input: the first byte picks the mode. Even: the rest is one datagram as `recv` returns it.
//! Odd: the rest is one record: a length byte, that many bytes of log prefix, then the packet
//! (so the decoder is reached without having to build valid netlink framing).

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use kube_nftpol::Snapshot;
use kube_nftpol::flow_line::{FlowLine, Format};
use kube_nftpol::flowlog::Record;
use kube_nftpol::flowlog::decode::decode;
use kube_nftpol::flowlog::dedup::FlowKey;
use kube_nftpol::flowlog::enrich::enrich;
use kube_nftpol::flowlog::nflog::parse_datagram;
use kube_nftpol::source::manifests::load_str;
use libfuzzer_sys::fuzz_target;

/// The demo cluster with the example policies: pods, labels and isolating policies for the
/// enrichment to find.
fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let text = [
            include_str!("../../deploy/examples/demo-cluster.yaml"),
            include_str!("../../deploy/examples/default-deny-all.yaml"),
            include_str!("../../deploy/examples/default-deny-ingress.yaml"),
            include_str!("../../deploy/examples/frontend-to-backend.yaml"),
            include_str!("../../deploy/examples/allow-dns.yaml"),
        ]
        .join("\n---\n");
        load_str(&text, "demo.yaml")
            .expect("the demo cluster loads")
            .snapshot
    })
}

fn handle(record: &Record) {
    let Ok(packet) = decode(record) else {
        return;
    };
    let _ = FlowKey::of(&packet).packet();
    let line = enrich(&packet, snapshot(), record.received_at);
    let json = line.render(Format::Json).expect("a drop line renders");
    let _ = line.render(Format::Text).expect("a drop line renders as text");
    // What the agent writes, `suggest` and `explain` read back as the same line.
    assert_eq!(FlowLine::parse(&json), Ok(Some(line.clone())), "{json}");
    let later = record.received_at + Duration::from_secs(5);
    let summary = line.summary(3, record.received_at, later);
    let json = summary.render(Format::Json).expect("a summary renders");
    assert_eq!(FlowLine::parse(&json), Ok(Some(summary)), "{json}");
}

fuzz_target!(|data: &[u8]| {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => {
            let datagram = parse_datagram(rest, now);
            for record in &datagram.records {
                handle(record);
            }
        }
        Some((_, [len, rest @ ..])) => {
            let (prefix, payload) = rest.split_at(usize::from(*len).min(rest.len()));
            let mut record = Record::new(String::from_utf8_lossy(prefix), payload);
            record.received_at = now;
            handle(&record);
        }
        _ => {}
    }
});
