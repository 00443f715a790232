//! Diagnostic logging for the command line: a tracing subscriber that writes to stderr.
//!
//! The level comes from `-v`/`--log-level` ([`super::GlobalArgs::log_level`]); `RUST_LOG` is
//! read too, so `RUST_LOG=kube_nftpol::source=trace` works, but a level given on the command
//! line replaces RUST_LOG's global level. With neither, warnings and errors are logged.
//!
//! Logs are for diagnosing the tool. What a command reports to its user (load warnings, invalid
//! policies, the result) is printed by the command itself, not logged, so it does not depend
//! on the log level.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// A log level, as `--log-level` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    /// Nothing.
    Off,
    /// Errors only.
    Error,
    /// Errors and warnings (the default).
    Warn,
    /// Also progress: what was loaded, what was compiled.
    Info,
    /// Also details useful when something looks wrong.
    Debug,
    /// Everything.
    Trace,
}

impl From<Level> for LevelFilter {
    fn from(level: Level) -> Self {
        match level {
            Level::Off => LevelFilter::OFF,
            Level::Error => LevelFilter::ERROR,
            Level::Warn => LevelFilter::WARN,
            Level::Info => LevelFilter::INFO,
            Level::Debug => LevelFilter::DEBUG,
            Level::Trace => LevelFilter::TRACE,
        }
    }
}

/// Installs the global subscriber, before anything logs. When one is already installed (a
/// second call) the first stays. `quiet` are per-module directives (`module=off`) for logs that
/// repeat what the command reports itself; they apply only when neither a flag nor `RUST_LOG`
/// chooses what to log.
pub fn init(level: Option<Level>, quiet: &[&str]) {
    let mut filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .from_env_lossy();
    if let Some(level) = level {
        // A bare level directive replaces RUST_LOG's bare level, if it had one, and keeps its
        // per-module directives.
        filter = filter.add_directive(LevelFilter::from(level).into());
    } else if std::env::var_os(EnvFilter::DEFAULT_ENV).is_none() {
        for directive in quiet {
            match directive.parse() {
                Ok(directive) => filter = filter.add_directive(directive),
                Err(error) => eprintln!("kube-nftpol: log directive {directive:?}: {error}"),
            }
        }
    }
    let _already_installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_tracing_filters() {
        assert_eq!(LevelFilter::from(Level::Off), LevelFilter::OFF);
        assert_eq!(LevelFilter::from(Level::Warn), LevelFilter::WARN);
        assert_eq!(LevelFilter::from(Level::Trace), LevelFilter::TRACE);
    }
}
