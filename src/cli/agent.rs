//! `kube-nftpol agent`: the node daemon. Argument parsing only; the loop is
//! [`crate::agent`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::Outcome;
use crate::agent::{self, Config};
use crate::compile::Options;

/// Arguments of `kube-nftpol agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The node this agent runs on: it polices the pods scheduled there
    #[arg(long, env = "NODE_NAME", value_name = "NODE")]
    pub node_name: String,
    /// Read the cluster from this directory of manifests, reloaded when its files change
    #[arg(long, value_name = "DIR")]
    pub manifests: PathBuf,
    /// NFLOG group for default-deny drop logs
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub nflog_group: u16,
    /// Address for /healthz, /readyz and /metrics
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9640")]
    pub metrics_addr: SocketAddr,
    /// Seconds between checks that the table is as the agent left it (repairs it otherwise)
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_interval_secs: u64,
    /// Milliseconds between checks of the manifest directory for changes
    #[arg(long, value_name = "MILLIS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    pub manifests_poll_interval_ms: u64,
}

impl AgentArgs {
    /// The agent configuration these arguments describe.
    pub fn config(&self) -> Config {
        Config {
            node_name: self.node_name.clone(),
            manifests: self.manifests.clone(),
            compile: Options {
                nflog_group: self.nflog_group,
                ..Options::default()
            },
            metrics_addr: self.metrics_addr,
            resync_interval: Duration::from_secs(self.resync_interval_secs),
            manifests_poll_interval: Duration::from_millis(self.manifests_poll_interval_ms),
        }
    }
}

/// Runs the agent on a multi-threaded runtime until SIGTERM or SIGINT.
pub fn run(args: &AgentArgs) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(agent::run(args.config()))?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["kube-nftpol", "agent"].iter().chain(args))
    }

    #[test]
    fn agent_flags_parse_with_their_defaults() {
        let cli = parse(&["--node-name", "n1", "--manifests", "dir"]).unwrap();
        let Command::Agent(args) = cli.command else {
            panic!("not agent")
        };
        let config = args.config();
        assert_eq!(config.node_name, "n1");
        assert_eq!(config.compile.nflog_group, 100);
        assert_eq!(config.metrics_addr.to_string(), "0.0.0.0:9640");
        assert_eq!(config.resync_interval.as_secs(), 10);
        assert_eq!(config.manifests_poll_interval.as_millis(), 500);
    }

    #[test]
    fn every_agent_flag_parses() {
        let cli = parse(&[
            "--node-name",
            "n1",
            "--manifests",
            "d",
            "--nflog-group",
            "7",
            "--metrics-addr",
            "127.0.0.1:9999",
            "--resync-interval-secs",
            "3",
            "--manifests-poll-interval-ms",
            "50",
        ])
        .unwrap();
        let Command::Agent(args) = cli.command else {
            panic!("not agent")
        };
        let config = args.config();
        assert_eq!(config.compile.nflog_group, 7);
        assert_eq!(config.metrics_addr.port(), 9999);
        assert_eq!(config.resync_interval.as_secs(), 3);
        assert_eq!(config.manifests_poll_interval.as_millis(), 50);
    }

    #[test]
    fn agent_flags_reject_bad_values() {
        assert!(parse(&["--manifests", "d"]).is_err() || std::env::var_os("NODE_NAME").is_some());
        assert!(
            parse(&[
                "--node-name",
                "n",
                "--manifests",
                "d",
                "--metrics-addr",
                "nope"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "--node-name",
                "n",
                "--manifests",
                "d",
                "--resync-interval-secs",
                "0"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "--node-name",
                "n",
                "--manifests",
                "d",
                "--nflog-group",
                "70000"
            ])
            .is_err()
        );
    }
}
