//! Steady traffic for suites that change things under it and judge every attempt afterwards
//! (tamper, churn): client loops that keep opening connections until told to stop, each
//! attempt recorded with the instants it started and ended.
//!
//! A denied attempt waits out the probe timeout ([`crate::probes::TIMEOUT`]). So that a short
//! window (a repair gap, a policy change) cannot fall between attempts, each probe gets
//! `loops` loops that start their attempts on a fixed grid (loop `n` at `n / loops` of
//! [`PERIOD`], every period: a new attempt of every flow starts every `PERIOD / loops`,
//! whatever came of the earlier ones), plus one loop that goes again at once after a denied
//! attempt and after `pause` after a connected one (many attempts while a flow is open).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::probes::{Outcome, Probe, TIMEOUT};

/// One connection attempt of probe number `flow`.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Index of the probe in the slice given to [`probe_until`].
    pub flow: usize,
    /// When the attempt began.
    pub started: Instant,
    /// When its outcome was known.
    pub ended: Instant,
    /// What the kernel did with it.
    pub outcome: Outcome,
}

impl Attempt {
    /// Whether the attempt was in flight at some instant of `[from, to]`.
    pub fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.started <= to && self.ended >= from
    }
}

/// The grid loops' period: the probe timeout and a little more, so an attempt has ended
/// before its loop's next one is due.
pub const PERIOD: Duration = TIMEOUT.saturating_add(Duration::from_millis(50));

/// Runs, for each probe, `loops` grid loops and one free loop (see the module doc) until
/// `stop`; every attempt, unordered.
pub async fn probe_until(
    probes: &[Probe<'_>],
    loops: u32,
    pause: Duration,
    stop: &AtomicBool,
) -> Vec<Attempt> {
    let origin = Instant::now();
    let stagger = PERIOD / loops.max(1);
    let mut clients = Vec::new();
    for (flow, probe) in probes.iter().enumerate() {
        for n in 0..loops {
            let grid = Some(origin + stagger * n);
            clients.push(client(flow, probe, grid, pause, stop));
        }
        clients.push(client(flow, probe, None, pause, stop));
    }
    futures::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// One loop: on the grid that starts at `grid` (every [`PERIOD`]), or free with `None`.
async fn client(
    flow: usize,
    probe: &Probe<'_>,
    grid: Option<Instant>,
    pause: Duration,
    stop: &AtomicBool,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut next = grid;
    while !stop.load(Ordering::SeqCst) {
        if let Some(due) = next {
            tokio::time::sleep_until(due.into()).await;
            // The next grid point still ahead (an attempt may overrun one on a busy machine).
            let mut following = due + PERIOD;
            while following <= Instant::now() {
                following += PERIOD;
            }
            next = Some(following);
            if stop.load(Ordering::SeqCst) {
                break;
            }
        }
        let started = Instant::now();
        let outcome = probe.run().await;
        let connected = outcome == Outcome::Connected;
        attempts.push(Attempt {
            flow,
            started,
            ended: Instant::now(),
            outcome,
        });
        if connected && grid.is_none() {
            tokio::time::sleep(pause).await;
        }
    }
    attempts
}
