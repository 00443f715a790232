//! The agent's drop log: NFLOG records of default-deny drops ([`crate::flowlog`]), decoded,
//! deduplicated per flow ([`crate::flowlog::dedup`]: a flow's first packet at once, its repeats
//! in one summary line per window), enriched with the latest snapshot and written to stdout as
//! JSON or text lines (what `kubectl logs` shows); the agent's own logs go to stderr.
//!
//! Everything on the way is bounded, so a flood of denied packets cannot slow the agent or
//! grow its memory: the kernel rate-limits logging per pod and direction (the rules' `limit`;
//! the drop counter still counts every packet), the reader's channel holds
//! [`CHANNEL_CAPACITY`] records, and the dedup table [`MAX_FLOWS`] flows. What does not make it
//! into a line is counted: records lost before the agent (sequence gaps) or behind it (a full
//! channel) in `kube_nftpol_flowlog_lost_records_total`, records left out for a full dedup
//! table in `kube_nftpol_flowlog_dedup_dropped_records_total`. So once a snapshot is loaded,
//! `records_total` = the lines' counts added up + `dedup_dropped` + `undecodable`.
//!
//! A summary is enriched with the snapshot of the moment its window closes (a pod deleted
//! meanwhile shows as unknown). Pending summaries are not written when the agent stops.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, warn};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{RecentFlows, State};
use crate::events::Events;
use crate::flow_line::{FlowLine, Format};
use crate::flowlog::dedup::{Dedup, FlowKey, Seen};
use crate::flowlog::nflog::{self, NflogEvent, ReaderStats};
use crate::flowlog::{Record, decode, enrich};
use crate::source::manifests::Loaded;

/// Records buffered between the reader thread and this task.
const CHANNEL_CAPACITY: usize = 4096;

/// Flows the dedup table tracks at most (a few hundred bytes each).
pub const MAX_FLOWS: usize = 10_000;

/// Least time between two warnings about a full dedup table.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The drop log's metrics (`kube_nftpol_flowlog_*`).
#[derive(Debug, Clone, Default)]
pub struct DropLogMetrics {
    /// NFLOG records received.
    pub records: Counter,
    /// Records the kernel logged that never reached the agent (socket overruns) or that the
    /// agent dropped because it was behind (a full channel).
    pub lost: Counter,
    /// Records that did not decode (not one of ours, or a malformed packet).
    pub undecodable: Counter,
    /// Records left out of the drop log because the dedup table was full.
    pub dedup_dropped: Counter,
    /// Flows in the dedup table.
    pub dedup_flows: Gauge,
}

impl DropLogMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("flowlog");
        let help = "NFLOG records received (default-deny drops and audits, observed flows)";
        sub.register("records", help, metrics.records.clone());
        let help = "NFLOG records the kernel logged that never reached the agent";
        sub.register("lost_records", help, metrics.lost.clone());
        let help = "NFLOG records that did not decode";
        sub.register("undecodable", help, metrics.undecodable.clone());
        let help = "Records left out of the drop log because the dedup table was full";
        sub.register("dedup_dropped_records", help, metrics.dedup_dropped.clone());
        let help = "Flows in the drop log's dedup table";
        sub.register("dedup_flows", help, metrics.dedup_flows.clone());
        metrics
    }
}

/// How the agent writes its drop log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropLogOptions {
    /// Repeats of a flow within this window after its first packet are folded into one summary
    /// line; zero logs every record on its own line.
    pub window: Duration,
    /// JSON or text lines.
    pub format: Format,
}

impl Default for DropLogOptions {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            format: Format::Json,
        }
    }
}

/// Reads NFLOG `group` in the agent's network namespace until the reader stops.
pub(super) async fn run(
    group: u16,
    options: DropLogOptions,
    snapshots: watch::Receiver<Option<Arc<Loaded>>>,
    metrics: DropLogMetrics,
    state: Arc<State>,
    events: Option<Events>,
) {
    let (mut records, stats) = match nflog::spawn_reader(group, CHANNEL_CAPACITY) {
        Ok(reader) => reader,
        Err(error) => {
            warn!(group, %error, "cannot read the drop log; enforcement is unaffected");
            return;
        }
    };
    let mut log = DropLog::new(options, snapshots, &metrics, std::io::stdout());
    log.recent_flows = Some(state.recent_flows());
    log.events = events.as_ref();
    loop {
        let deadline = log.dedup.next_deadline();
        tokio::select! {
            event = records.recv() => match event {
                Some(NflogEvent::Record(record)) => log.record(&record, Instant::now()),
                Some(NflogEvent::Overrun) => debug!("NFLOG socket overrun"),
                // Counted from the reader's statistics, with records dropped for a full channel.
                Some(NflogEvent::Missed { records }) => debug!(records, "NFLOG records missed"),
                None => break,
            },
            () = sleep_until(deadline) => log.expire(Instant::now()),
        }
        // The reader drops records only while the channel is full, so the event after a loss
        // is always there to bring it into the metric.
        log.count_lost(&stats);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// The drop log's state between records, writing lines to `out`.
struct DropLog<'a, W> {
    out: W,
    dedup: Dedup<FlowKey>,
    format: Format,
    snapshots: watch::Receiver<Option<Arc<Loaded>>>,
    metrics: &'a DropLogMetrics,
    /// Where `/hints` gathers denied flows: every first-packet line and summary goes there too.
    recent_flows: Option<&'a RecentFlows>,
    /// Where new denied flows become `PolicyDenied` Events (with the Kubernetes source).
    events: Option<&'a Events>,
    /// The reader's lost records already added to the metric.
    lost_counted: u64,
    /// Records dropped for a full table since the last warning, and when that was.
    full_since_warning: u64,
    warned_at: Option<Instant>,
}

impl<'a, W: Write> DropLog<'a, W> {
    fn new(
        options: DropLogOptions,
        snapshots: watch::Receiver<Option<Arc<Loaded>>>,
        metrics: &'a DropLogMetrics,
        out: W,
    ) -> Self {
        Self {
            out,
            dedup: Dedup::new(options.window, MAX_FLOWS),
            format: options.format,
            snapshots,
            metrics,
            recent_flows: None,
            events: None,
            lost_counted: 0,
            full_since_warning: 0,
            warned_at: None,
        }
    }

    /// One record, received at `now`.
    fn record(&mut self, record: &Record, now: Instant) {
        self.metrics.records.inc();
        let packet = match decode::decode(record) {
            Ok(packet) => packet,
            Err(error) => {
                self.metrics.undecodable.inc();
                debug!(%error, "undecodable NFLOG record");
                return;
            }
        };
        let Some(loaded) = self.snapshots.borrow().clone() else {
            return;
        };
        self.expire(now);
        match self
            .dedup
            .observe(&FlowKey::of(&packet), now, record.received_at)
        {
            Seen::New => {
                let record = enrich::enrich(&packet, &loaded.snapshot, record.received_at);
                if let Some(recent_flows) = self.recent_flows {
                    recent_flows.record(&record);
                }
                if let Some(events) = self.events {
                    events.denied(&record);
                }
                self.write(&record);
            }
            Seen::Repeat => {}
            Seen::TableFull => self.table_full(now),
        }
        self.metrics.dedup_flows.set(gauge(self.dedup.len()));
    }

    /// Writes the summaries of the windows that closed by `now`.
    fn expire(&mut self, now: Instant) {
        let summaries = self.dedup.expire(now);
        if !summaries.is_empty() {
            let Some(loaded) = self.snapshots.borrow().clone() else {
                return;
            };
            for summary in summaries {
                let packet = summary.key.packet();
                let record = enrich::enrich(&packet, &loaded.snapshot, summary.last);
                if let Some(recent_flows) = self.recent_flows {
                    recent_flows.record(&record);
                }
                let line = record.summary(summary.count, summary.first, summary.last);
                self.write(&line);
            }
        }
        self.metrics.dedup_flows.set(gauge(self.dedup.len()));
    }

    fn write(&mut self, line: &FlowLine) {
        match line.render(self.format) {
            // Nothing useful to do when stdout is gone.
            Ok(line) => drop(writeln!(self.out, "{line}")),
            Err(error) => debug!(%error, "cannot encode a drop record"),
        }
    }

    /// Counts a record left out for a full table, warning at most every [`WARN_INTERVAL`].
    fn table_full(&mut self, now: Instant) {
        self.metrics.dedup_dropped.inc();
        self.full_since_warning += 1;
        if self
            .warned_at
            .is_none_or(|at| now.duration_since(at) >= WARN_INTERVAL)
        {
            warn!(
                flows = MAX_FLOWS,
                records = self.full_since_warning,
                "drop log dedup table full: records of new flows are not logged until windows \
                 close (kube_nftpol_flowlog_dedup_dropped_records_total)"
            );
            self.warned_at = Some(now);
            self.full_since_warning = 0;
        }
    }

    /// Adds the reader's newly lost records (sequence gaps and a full channel) to the metric.
    fn count_lost(&mut self, stats: &ReaderStats) {
        let lost = stats.snapshot().lost_records();
        self.metrics
            .lost
            .inc_by(lost.saturating_sub(self.lost_counted));
        self.lost_counted = self.lost_counted.max(lost);
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
