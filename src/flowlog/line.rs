//! One line of the drop log: an enriched drop and how many packets it stands for, rendered as
//! JSON (the default, for log pipelines) or as text (for people reading `kubectl logs`).
//!
//! Pure. A line is either a flow's first packet (`count` 1, logged at once) or the summary of
//! its repeats in one window ([`super::dedup`]): `count` repeats, `first_ts` and `last_ts` the
//! first and last of them, and `ts` the last. JSON adds `count` (always) and `first_ts` and
//! `last_ts` (summaries) after [`DropRecord`]'s keys:
//!
//! ```text
//! {"ts":"...","action":"deny",...,"policies":[...],"count":1}
//! {"ts":"T2","action":"deny",...,"policies":[...],"count":3,"first_ts":"T1","last_ts":"T2"}
//! ```
//!
//! Text, with the arrow in the packet's direction (source -> destination):
//!
//! ```text
//! 2026-11-23T13:47:44.351Z DENY egress payments/payments-api-0 -> shop/backend-5c8b6-qx2lp tcp/9090 (policies: payments/allow-dns, payments/default-deny-all)
//! 2026-11-23T13:47:53.120Z DENY egress payments/payments-api-0 -> shop/backend-5c8b6-qx2lp tcp/9090 (policies: payments/allow-dns, payments/default-deny-all) x3 since 2026-11-23T13:47:45.351Z
//! ```
//!
//! The text form leaves out labels, owners, addresses of pods and the source port; the JSON
//! form has them. ([`DropRecord::to_text`] is a longer text form with addresses and ports.)
//! Writing lines anywhere is the agent's drop log's job.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Serialize;

use super::enrich::{DropRecord, Peer, PodInfo, rfc3339_millis};
use crate::policy::Direction;

/// How drop log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One JSON object per line (see the module docs).
    #[default]
    Json,
    /// One line of text per drop, for people.
    Text,
}

/// One line of the drop log. Field order is the JSON key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropLine {
    /// The drop: the flow's first packet, or for a summary the flow as of its last repeat
    /// (no source port: repeats may come from many).
    #[serde(flatten)]
    pub record: DropRecord,
    /// How many packets this line stands for.
    pub count: u64,
    /// Summaries only: when the first packet they count arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_ts: Option<String>,
    /// Summaries only: when the last packet they count arrived (the same as `ts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ts: Option<String>,
}

impl DropLine {
    /// The line for a flow's first packet, logged as it arrives.
    pub fn first(record: DropRecord) -> Self {
        Self {
            record,
            count: 1,
            first_ts: None,
            last_ts: None,
        }
    }

    /// The line summarizing `count` repeats of a flow between `first` and `last`; `record`'s
    /// `ts` becomes `last`.
    pub fn summary(
        mut record: DropRecord,
        count: u64,
        first: SystemTime,
        last: SystemTime,
    ) -> Self {
        let last = rfc3339_millis(last);
        record.ts = last.clone();
        record.source_port = None;
        Self {
            record,
            count,
            first_ts: Some(rfc3339_millis(first)),
            last_ts: Some(last),
        }
    }

    /// The line in `format`, without a trailing newline.
    pub fn render(&self, format: Format) -> serde_json::Result<String> {
        match format {
            Format::Json => serde_json::to_string(self),
            Format::Text => Ok(self.to_text()),
        }
    }

    /// `TS DENY|AUDIT DIRECTION SOURCE -> DESTINATION PROTO/PORT (policies: ...)`, then for summaries
    /// `xCOUNT since FIRST_TS`. Pods are `namespace/name`, anything else its address.
    pub fn to_text(&self) -> String {
        let r = &self.record;
        let pod = pod_text(&r.pod);
        let peer = match &r.peer {
            Peer::Pod(peer) => pod_text(peer),
            Peer::External { ip } => ip.to_string(),
        };
        let (source, destination) = match r.direction {
            Direction::Egress => (pod, peer),
            Direction::Ingress => (peer, pod),
        };
        let action = match r.action {
            crate::flowlog::enrich::Action::Deny => "DENY",
            crate::flowlog::enrich::Action::Audit => "AUDIT",
        };
        let mut line = format!(
            "{} {action} {} {source} -> {destination} {}",
            r.ts, r.direction, r.protocol
        );
        // Writing to a String cannot fail.
        if let Some(port) = r.port {
            let _ = write!(line, "/{port}");
        }
        if r.policies.is_empty() {
            line.push_str(" (no isolating policy in the snapshot)");
        } else {
            let _ = write!(line, " (policies: {})", r.policies.join(", "));
        }
        if let Some(first) = &self.first_ts {
            let _ = write!(line, " x{} since {first}", self.count);
        }
        line
    }
}

fn pod_text(pod: &PodInfo) -> String {
    let unknown = if pod.unknown { " (unknown)" } else { "" };
    format!("{}/{}{unknown}", pod.namespace, pod.name)
}

#[cfg(test)]
mod tests;
