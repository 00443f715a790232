//! `kube-nftpol agent`: the node daemon. Argument parsing, and the wiring of the agent
//! ([`crate::agent`]) with the HTTP endpoints that read its state ([`crate::http`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tracing::error;

use super::Outcome;
use super::ruleset_flags::RulesetFlags;
use crate::access;
use crate::agent::{self, Config, DropLogOptions, PostureOptions, Source, State};
use crate::flow_line;
use crate::http;

/// Arguments of `kube-nftpol agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The node this agent runs on: it polices the pods scheduled there
    #[arg(long, env = "NODE_NAME", value_name = "NODE")]
    pub node_name: String,
    /// Read the cluster from this directory of manifests, reloaded when its files change,
    /// instead of the Kubernetes API
    #[arg(long, value_name = "DIR", conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// Kubeconfig for the Kubernetes API [default: in-cluster, then KUBECONFIG, then
    /// ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// What shapes the ruleset: the log group, audit, observe, revocation.
    #[command(flatten)]
    pub ruleset: RulesetFlags,
    /// Address for /healthz, /readyz, /metrics, /flows and /hints (read-only)
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9640")]
    pub metrics_addr: SocketAddr,
    /// Who may read /flows and /hints (pod names, labels, addresses): `kubernetes`, a bearer
    /// token the API server authenticates (TokenReview) and authorises (SubjectAccessReview:
    /// get flows.kube-nftpol.io), and nobody with --manifests; `none`, whoever reaches the port
    #[arg(long, value_name = "MODE", value_enum, default_value_t = FlowsAuth::Kubernetes)]
    pub flows_auth: FlowsAuth,
    /// Distinct recent flows kept for /flows and /hints (about 2.5 KiB each, at most 100,000),
    /// the least recently seen evicted first
    #[arg(long, value_name = "FLOWS", default_value_t = WINDOW_FLOWS, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub flow_window_flows: u32,
    /// Seconds between checks that the table is as the agent left it (repairs it otherwise)
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_interval_secs: u64,
    /// Milliseconds between checks of the manifest directory for changes
    #[arg(long, value_name = "MILLIS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    pub manifests_poll_interval_ms: u64,
    /// Seconds during which repeats of a denied flow are counted into one summary line after
    /// its first packet is logged (at most 3600); 0 logs every packet
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(..=3600))]
    pub drop_log_window_secs: u64,
    /// Drop log lines on stdout: JSON objects, or text for people
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = DropLogFormat::Json)]
    pub drop_log_format: DropLogFormat,
    /// The lint rules' parameters and severities for the posture metric (kube_nftpol_lint_*),
    /// as for `kube-nftpol lint --config`
    #[arg(long, value_name = "FILE")]
    pub lint_config: Option<PathBuf>,
    /// Least seconds between two runs of the linter for the posture metric (it runs when the
    /// cluster changes)
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub lint_interval_secs: u64,
}

/// `--flow-window-flows`' default.
const WINDOW_FLOWS: u32 = 4096;

/// Who may read `/flows` and `/hints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowsAuth {
    /// A Kubernetes bearer token, reviewed by the API server (nobody, with --manifests).
    Kubernetes,
    /// Nobody is checked.
    None,
}

/// How the agent writes drop log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DropLogFormat {
    /// One JSON object per line.
    Json,
    /// One line of text per drop.
    Text,
}

impl AgentArgs {
    /// The agent configuration these arguments describe.
    pub fn config(&self) -> Config {
        Config {
            node_name: self.node_name.clone(),
            source: match &self.manifests {
                Some(path) => Source::Manifests {
                    path: path.clone(),
                    poll_interval: Duration::from_millis(self.manifests_poll_interval_ms),
                },
                None => Source::Kubernetes {
                    kubeconfig: self.kubeconfig.clone(),
                },
            },
            compile: self.ruleset.options(),
            metrics_addr: self.metrics_addr,
            resync_interval: Duration::from_secs(self.resync_interval_secs),
            drop_log: DropLogOptions {
                window: Duration::from_secs(self.drop_log_window_secs),
                format: match self.drop_log_format {
                    DropLogFormat::Json => flow_line::Format::Json,
                    DropLogFormat::Text => flow_line::Format::Text,
                },
            },
            flows_auth: match self.flows_auth {
                FlowsAuth::Kubernetes => access::Mode::Kubernetes,
                FlowsAuth::None => access::Mode::Open,
            },
            posture: PostureOptions {
                interval: Duration::from_secs(self.lint_interval_secs),
                ..PostureOptions::default()
            },
        }
    }
}

/// Runs the agent on a multi-threaded runtime until SIGTERM or SIGINT.
pub fn run(args: &AgentArgs) -> anyhow::Result<Outcome> {
    if !super::malloc::keep_large_buffers_returnable() {
        tracing::debug!("the C library kept its own mmap threshold");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut config = args.config();
    if let Some(path) = &args.lint_config {
        config.posture.config = Arc::new(super::lint::read_config(path)?);
    }
    runtime.block_on(async {
        let state = Arc::new(State::with_recent_flows(
            &config.node_name,
            usize::try_from(args.flow_window_flows).unwrap_or(usize::MAX),
        ));
        let addr = config.metrics_addr;
        let endpoints = tokio::spawn(http::serve(addr, Arc::clone(&state)));
        let endpoints = tokio::spawn(async move {
            // Enforcement goes on without the endpoints: the failure is logged.
            if let Ok(Err(error)) = endpoints.await {
                error!(error = %format!("{error:#}"), "HTTP endpoints stopped");
            }
        });
        let result = agent::run(config, state).await;
        endpoints.abort();
        result
    })?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use std::path::PathBuf;

    use super::AgentArgs;
    use crate::access;
    use crate::agent::{Config, DropLogOptions, PostureOptions, Source};
    use crate::cli::{Cli, Command};
    use crate::flow_line::Format;

    /// `kube-nftpol agent --node-name n1 EXTRA...`
    fn parse(extra: &[&str]) -> Result<Cli, clap::Error> {
        let base = ["kube-nftpol", "agent", "--node-name", "n1"];
        Cli::try_parse_from(base.iter().chain(extra))
    }

    fn config(extra: &[&str]) -> Config {
        match parse(extra).map(|cli| cli.command) {
            Ok(Command::Agent(args)) => AgentArgs::config(&args),
            other => panic!("not an agent command: {other:?}"),
        }
    }

    #[test]
    fn agent_flags_parse_with_their_defaults() {
        let config = config(&[]);
        assert_eq!(config.node_name, "n1");
        assert!(matches!(
            config.source,
            Source::Kubernetes { kubeconfig: None }
        ));
        assert_eq!(config.compile.nflog_group, 100);
        assert!(!config.compile.audit_all);
        assert!(!config.compile.observe_all);
        assert!(config.compile.revoke_established);
        assert_eq!(config.metrics_addr.to_string(), "0.0.0.0:9640");
        assert_eq!(config.resync_interval.as_secs(), 10);
        assert_eq!(config.drop_log, DropLogOptions::default());
        assert_eq!(config.drop_log.window.as_secs(), 10);
        assert_eq!(config.drop_log.format, Format::Json);
        assert_eq!(config.posture, PostureOptions::default());
        assert_eq!(config.posture.interval.as_secs(), 60);
        assert_eq!(config.flows_auth, access::Mode::Kubernetes);
    }

    #[test]
    fn the_flow_window_flag_defaults_to_the_agents_window() {
        let Ok(Command::Agent(args)) = parse(&[]).map(|cli| cli.command) else {
            panic!("not an agent command")
        };
        assert_eq!(
            usize::try_from(args.flow_window_flows).unwrap(),
            crate::agent::MAX_RECENT_FLOWS
        );
        let Ok(Command::Agent(args)) = parse(&["--flow-window-flows", "100"]).map(|c| c.command)
        else {
            panic!("not an agent command")
        };
        assert_eq!(args.flow_window_flows, 100);
    }

    #[test]
    fn flows_auth_none_opens_the_flows_to_everyone() {
        assert_eq!(
            config(&["--flows-auth", "none"]).flows_auth,
            access::Mode::Open
        );
        assert_eq!(
            config(&["--flows-auth", "kubernetes"]).flows_auth,
            access::Mode::Kubernetes
        );
    }

    #[test]
    fn every_agent_flag_parses() {
        let config = config(&[
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
            "--drop-log-window-secs",
            "30",
            "--drop-log-format",
            "text",
            "--audit",
            "--observe",
            "--keep-established",
            "--lint-interval-secs",
            "300",
        ]);
        assert_eq!(config.posture.interval.as_secs(), 300);
        assert_eq!(config.compile.nflog_group, 7);
        assert_eq!(config.drop_log.window.as_secs(), 30);
        assert_eq!(config.drop_log.format, Format::Text);
        assert!(config.compile.audit_all);
        assert!(config.compile.observe_all);
        assert!(!config.compile.revoke_established);
        assert_eq!(config.metrics_addr.port(), 9999);
        assert_eq!(config.resync_interval.as_secs(), 3);
        let Source::Manifests {
            path,
            poll_interval,
        } = config.source
        else {
            panic!("not the manifest source")
        };
        assert_eq!(path.to_str(), Some("d"));
        assert_eq!(poll_interval.as_millis(), 50);
    }

    #[test]
    fn a_zero_drop_log_window_turns_deduplication_off() {
        assert!(
            config(&["--drop-log-window-secs", "0"])
                .drop_log
                .window
                .is_zero()
        );
    }

    #[test]
    fn the_lint_config_flag_takes_a_file_read_when_the_agent_starts() {
        let cli = parse(&["--lint-config", "/etc/lint.yaml"]).unwrap();
        let Command::Agent(args) = cli.command else {
            panic!("not an agent command")
        };
        assert_eq!(args.lint_config, Some(PathBuf::from("/etc/lint.yaml")));
    }

    #[test]
    fn the_kubeconfig_flag_selects_the_kubernetes_source() {
        let config = config(&["--kubeconfig", "/etc/kube.conf"]);
        let Source::Kubernetes {
            kubeconfig: Some(path),
        } = config.source
        else {
            panic!("not the Kubernetes source")
        };
        assert_eq!(path.to_str(), Some("/etc/kube.conf"));
    }

    #[test]
    fn agent_flags_reject_bad_values() {
        let no_node = Cli::try_parse_from(["kube-nftpol", "agent"]);
        assert!(no_node.is_err() || std::env::var_os("NODE_NAME").is_some());
        for bad in [
            ["--metrics-addr", "nope"],
            ["--resync-interval-secs", "0"],
            ["--nflog-group", "70000"],
            ["--drop-log-window-secs", "3601"],
            ["--drop-log-window-secs", "-1"],
            ["--drop-log-format", "yaml"],
            ["--flows-auth", "maybe"],
            ["--flow-window-flows", "0"],
            ["--flow-window-flows", "100001"],
            ["--lint-interval-secs", "5"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            parse(&["--manifests", "d", "--kubeconfig", "k"]).is_err(),
            "two sources accepted"
        );
    }
}
