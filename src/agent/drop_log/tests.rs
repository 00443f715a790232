//! The drop log from NFLOG records to written lines and metrics, on the example cluster, with
//! an injected clock: first lines at once, summaries when windows close, both formats, and the
//! records metric accounted for by the lines' counts.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

use super::*;
use crate::metrics;
use crate::source::manifests;

/// The example cluster (payments-api-0 is 10.244.1.20, shop's backend 10.244.1.11).
fn snapshots() -> watch::Receiver<Option<Arc<Loaded>>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    let loaded = manifests::load_dir(&dir).unwrap();
    watch::channel(Some(Arc::new(loaded))).1
}

/// An NFLOG record of a TCP SYN from `source:source_port` to `destination:port`, logged by
/// `prefix`: an IPv4 header (no options) and the first 8 bytes of TCP, as the kernel copies.
fn record(prefix: &str, source: Ipv4Addr, source_port: u16, destination: Ipv4Addr) -> Record {
    let mut payload = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    payload.extend(source.octets());
    payload.extend(destination.octets());
    payload.extend(source_port.to_be_bytes());
    payload.extend(9090u16.to_be_bytes());
    payload.extend([0, 0, 0, 1]);
    let mut record = Record::new(prefix, payload);
    record.received_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_441_664);
    record
}

const EGRESS: &str = "knp:deny:egress:payments/payments-api-0";
const API: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 20);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);

fn lines(out: &[u8]) -> Vec<String> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_retried_connection_is_one_line_at_once_and_one_summary_when_the_window_closes() {
    let metrics = DropLogMetrics::default();
    let start = Instant::now();
    let mut log = DropLog::new(DropLogOptions::default(), snapshots(), &metrics, Vec::new());
    // Five SYNs from five client ports within 4 s.
    for (i, port) in [40000u16, 40001, 40002, 40003, 40004]
        .into_iter()
        .enumerate()
    {
        let at = start + Duration::from_secs(i as u64);
        log.record(&record(EGRESS, API, port, BACKEND), at);
    }
    let written = lines(&log.out);
    assert_eq!(written.len(), 1, "{written:?}");
    let first: Value = serde_json::from_str(&written[0]).unwrap();
    assert_eq!(first["count"], 1);
    assert_eq!(first["source_port"], 40000);
    assert_eq!(first["peer"]["name"], "backend-5c8b6-qx2lp");
    assert_eq!(metrics.dedup_flows.get(), 1);

    log.expire(start + Duration::from_secs(10));
    let written = lines(&log.out);
    assert_eq!(written.len(), 2, "{written:?}");
    let summary: Value = serde_json::from_str(&written[1]).unwrap();
    assert_eq!(summary["count"], 4);
    assert_eq!(summary["direction"], "egress");
    assert_eq!(summary["port"], 9090);
    assert!(summary.get("source_port").is_none(), "{summary}");
    assert!(summary["first_ts"].is_string() && summary["last_ts"].is_string());
    assert_eq!(metrics.records.get(), 5);
}

#[test]
fn the_text_format_writes_the_same_lines_for_people() {
    let metrics = DropLogMetrics::default();
    let start = Instant::now();
    let options = DropLogOptions {
        format: Format::Text,
        ..DropLogOptions::default()
    };
    let mut log = DropLog::new(options, snapshots(), &metrics, Vec::new());
    for i in 0..3 {
        log.record(
            &record(EGRESS, API, 40000 + i, BACKEND),
            start + Duration::from_millis(u64::from(i)),
        );
    }
    log.expire(start + Duration::from_secs(10));
    let written = lines(&log.out);
    assert_eq!(written.len(), 2, "{written:?}");
    let expected = "DENY egress payments/payments-api-0 -> shop/backend-5c8b6-qx2lp tcp/9090 \
                    (policies: payments/allow-dns, payments/default-deny-all)";
    assert!(written[0].ends_with(expected), "{}", written[0]);
    assert!(
        written[1].contains(&format!("{expected} x2 since ")),
        "{}",
        written[1]
    );
}

#[test]
fn records_are_accounted_for_by_line_counts_dedup_drops_and_undecodable_ones() {
    let metrics = DropLogMetrics::default();
    let start = Instant::now();
    let mut log = DropLog::new(DropLogOptions::default(), snapshots(), &metrics, Vec::new());
    // 12,000 distinct destinations (more than the table holds), each twice, and garbage.
    for round in 0..2u64 {
        for i in 0..12_000u32 {
            let destination = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 250, 0, 0)) + i);
            let at = start + Duration::from_millis(round * 100 + u64::from(i) / 1000);
            log.record(&record(EGRESS, API, 40000, destination), at);
        }
    }
    log.record(&Record::new("knp:deny:egress:x/y", vec![1, 2, 3]), start);
    log.record(&Record::new("someone else", vec![0x45]), start);
    assert_eq!(metrics.dedup_flows.get(), 10_000);
    log.expire(start + Duration::from_secs(60));
    assert_eq!(metrics.dedup_flows.get(), 0);

    let counts: u64 = lines(&log.out)
        .iter()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            line["count"].as_u64().unwrap()
        })
        .sum();
    let flowlog = &metrics;
    assert_eq!(flowlog.records.get(), 24_002);
    assert_eq!(flowlog.undecodable.get(), 2);
    assert_eq!(flowlog.dedup_dropped.get(), 2 * 2_000);
    assert_eq!(
        counts + flowlog.dedup_dropped.get() + flowlog.undecodable.get(),
        flowlog.records.get()
    );
    // One first line and one summary per tracked flow.
    assert_eq!(lines(&log.out).len(), 20_000);
}

#[test]
fn with_a_zero_window_every_record_is_a_line() {
    let metrics = DropLogMetrics::default();
    let start = Instant::now();
    let options = DropLogOptions {
        window: Duration::ZERO,
        ..DropLogOptions::default()
    };
    let mut log = DropLog::new(options, snapshots(), &metrics, Vec::new());
    for i in 0..5 {
        log.record(
            &record(EGRESS, API, 40000, BACKEND),
            start + Duration::from_millis(i),
        );
    }
    assert_eq!(lines(&log.out).len(), 5);
    assert_eq!(metrics.dedup_flows.get(), 0);
}

#[test]
fn drop_log_dedup_metrics_are_encoded() {
    let mut registry = metrics::registry();
    let drop_log = DropLogMetrics::register(&mut registry);
    drop_log.dedup_dropped.inc_by(3);
    drop_log.dedup_flows.set(42);
    let text = metrics::encode(&registry);
    assert!(
        text.contains("kube_nftpol_flowlog_dedup_dropped_records_total 3\n"),
        "{text}"
    );
    assert!(
        text.contains("kube_nftpol_flowlog_dedup_flows 42\n"),
        "{text}"
    );
}
