//! `perf record` around a benchmark phase, when `KNP_BENCH_PERF` names a directory: the
//! profiles that say what limits a figure (where a target is missed, the profile is what explains the gap).
//! Without the variable every call is a no-op. Read a recording with `perf report -i FILE`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{Result, say};

/// What to record.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// One process (the agent) and its threads.
    Process(u32),
    /// Every CPU, kernel included: where packets spend their time.
    System,
}

/// A recording in progress; [`Profile::stop`] writes it.
pub struct Profile(Option<(Child, PathBuf)>);

impl Profile {
    /// The directory recordings go to, when asked for.
    fn dir() -> Option<PathBuf> {
        std::env::var_os("KNP_BENCH_PERF").map(PathBuf::from)
    }

    /// Starts recording `target` into `DIR/NAME.data` (call graphs, 999 samples/s).
    pub fn start(target: Target, name: &str) -> Result<Self> {
        let Some(dir) = Self::dir() else {
            return Ok(Self(None));
        };
        let output = dir.join(format!("{name}.data"));
        let mut command = Command::new("perf");
        command.args(["record", "-q", "-F", "999", "-g"]);
        match target {
            Target::Process(pid) => command.args(["-p", &pid.to_string()]),
            Target::System => command.arg("-a"),
        };
        let child = command
            .arg("-o")
            .arg(&output)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("perf record: {e}"))?;
        say(&format!("bench: perf records into {}", output.display()));
        Ok(Self(Some((child, output))))
    }

    /// Copies the agent's log next to the recordings.
    pub fn keep_log(log: &Path) {
        if let Some(dir) = Self::dir() {
            let _ = std::fs::copy(log, dir.join("agent.log"));
        }
    }

    /// Ends the recording (perf writes its file on SIGINT); returns the file, if recording.
    pub fn stop(self) -> Option<PathBuf> {
        let (mut child, output) = self.0?;
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let _ = child.wait();
        Some(output)
    }
}
