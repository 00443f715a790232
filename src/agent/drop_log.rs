//! The agent's drop log: NFLOG records of default-deny drops ([`crate::flowlog`]), decoded and
//! enriched with the latest snapshot, written to stdout as one JSON line each (what `kubectl
//! logs` shows); the agent's own logs go to stderr.
//!
//! The kernel rate-limits logging per pod and direction (the rules' `limit`), the reader's
//! channel is bounded and counts what it drops, so a flood of denied packets cannot slow the
//! agent or grow its memory. Losses the kernel reports (NFLOG sequence gaps) are counted in
//! `kube_nftpol_flowlog_lost_records_total`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::flowlog::nflog::{self, NflogEvent};
use crate::flowlog::{decode, enrich};
use crate::http::Shared;
use crate::source::manifests::Loaded;

/// Records buffered between the reader thread and this task.
const CHANNEL_CAPACITY: usize = 4096;

/// Reads NFLOG `group` in the agent's network namespace until the reader stops.
pub(super) async fn run(
    group: u16,
    snapshots: watch::Receiver<Option<Arc<Loaded>>>,
    shared: Arc<Shared>,
) {
    let (mut events, _stats) = match nflog::spawn_reader(group, CHANNEL_CAPACITY) {
        Ok(reader) => reader,
        Err(error) => {
            warn!(group, %error, "cannot read the drop log; enforcement is unaffected");
            return;
        }
    };
    let metrics = &shared.metrics.flowlog;
    while let Some(event) = events.recv().await {
        match event {
            NflogEvent::Record(record) => {
                metrics.records.inc();
                let packet = match decode::decode(&record) {
                    Ok(packet) => packet,
                    Err(error) => {
                        metrics.undecodable.inc();
                        debug!(%error, "undecodable NFLOG record");
                        continue;
                    }
                };
                let Some(loaded) = snapshots.borrow().clone() else {
                    continue;
                };
                let record = enrich::enrich(&packet, &loaded.snapshot, SystemTime::now());
                shared.hints.record(&record);
                match record.to_json_line() {
                    // Nothing useful to do when stdout is gone.
                    Ok(line) => drop(writeln!(std::io::stdout().lock(), "{line}")),
                    Err(error) => debug!(%error, "cannot encode a drop record"),
                }
            }
            NflogEvent::Overrun => debug!("NFLOG socket overrun"),
            NflogEvent::Missed { records } => {
                metrics.lost.inc_by(records);
            }
        }
    }
}
