//! A process's CPU time and memory from `/proc` (Linux), for the benchmarks' footprint figures.
//!
//! CPU is `utime + stime` of the process itself and, separately, of its waited-for children
//! (`cutime + cstime`: the agent's `nft` runs), in `/proc/PID/stat`'s clock ticks; memory is
//! `VmRSS` (resident now) and `VmHWM` (the peak) from `/proc/PID/status`.

use std::fmt;
use std::time::Duration;

use crate::Result;

/// CPU time used by a process and its reaped children, or used over a span of wall time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// The process's own user and system time.
    pub own: Duration,
    /// Its children's (reaped) user and system time.
    pub children: Duration,
    /// The wall time this usage was spent in (zero for a reading since start).
    pub wall: Duration,
}

impl Usage {
    /// The totals of process `pid` so far.
    pub fn of(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        // The command name (field 2) may hold spaces: count fields after its closing paren.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .ok_or_else(|| format!("{path}: no command field"))?;
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // After the state (field 3): utime, stime, cutime, cstime are fields 14 to 17.
        let field = |n: usize| fields.get(n - 4).copied().unwrap_or(0);
        let tick = |ticks: u64| Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64);
        Ok(Self {
            own: tick(field(14) + field(15)),
            children: tick(field(16) + field(17)),
            wall: Duration::ZERO,
        })
    }

    /// What was used between `before` and this reading, over `wall`.
    pub fn since(&self, before: &Self, wall: Duration) -> Self {
        Self {
            own: self.own.saturating_sub(before.own),
            children: self.children.saturating_sub(before.children),
            wall,
        }
    }

    /// CPU time of the process and its children together.
    pub fn total(&self) -> Duration {
        self.own + self.children
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let share = self.total().as_secs_f64() / self.wall.as_secs_f64().max(1e-9);
        write!(
            f,
            "{:.2} s CPU ({:.1} % of a core; nft {:.2} s)",
            self.total().as_secs_f64(),
            share * 100.0,
            self.children.as_secs_f64()
        )
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when that fails).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// `VmRSS` and `VmHWM` of process `pid`, in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{path}: no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
