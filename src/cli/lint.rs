//! `kube-nftpol lint`: finds NetworkPolicy mistakes and gaps in the isolation of a directory of
//! manifests or of the live cluster ([`crate::lint`]), and prints them as text for people,
//! a JSON report for scripts, or SARIF for code hosts. Findings point at the file and the line
//! of the field when the input is manifests.
//!
//! Exit status: 0 no finding at or above `--severity`, 1 some, 2 bad input (a manifest that
//! does not parse, an unknown rule id, a config that is not valid). Only findings at or above
//! `--severity` are printed. Loader warnings (skipped kinds) go to stderr; invalid policies are
//! findings (`invalid-policy`), not stderr lines.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser as _};

use super::{Outcome, load, write_stdout};
use crate::lint::{self, Config, Counts, Level, RuleId, Severity, report, sarif};
use crate::source::manifests::{self, Loaded};

/// Arguments of `lint`.
#[derive(Debug, Args)]
pub struct LintArgs {
    /// Kubernetes manifests: a directory (YAML and JSON files, read recursively) or one file.
    /// Without it, the live cluster is read through the Kubernetes API
    #[arg(long, value_name = "DIR", conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// Kubeconfig for the live cluster [default: in-cluster, then KUBECONFIG, then
    /// ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Output format: text for people, a JSON report, or SARIF 2.1.0 for code hosts
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Report findings of this severity and above; the exit status is 1 when there are any
    #[arg(long, value_name = "LEVEL", default_value = "info",
          value_parser = PossibleValuesParser::new(["error", "warning", "info"])
              .map(|name| Severity::parse(&name).unwrap_or(Severity::Info)))]
    pub severity: Severity,
    /// Run only these rules (ids, repeated or comma-separated; `docs/lint.md` lists them)
    #[arg(long = "rule", value_name = "ID", num_args = 1.., value_delimiter = ',',
          value_parser = parse_rule_id)]
    pub rules: Vec<RuleId>,
    /// Do not run these rules (ids, repeated or comma-separated)
    #[arg(long = "skip", value_name = "ID", num_args = 1.., value_delimiter = ',',
          value_parser = parse_rule_id)]
    pub skip: Vec<RuleId>,
    /// The rules' parameters and severities, as YAML (see docs/lint.md)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How `lint` prints the findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Two lines per finding: where, severity, rule, object, field and what is wrong; the fix.
    Text,
    /// One JSON object: `findings` (with `location`) and `counts`.
    Json,
    /// A SARIF 2.1.0 log.
    Sarif,
}

/// A rule id, for `--rule` and `--skip`: an unknown id is a usage error.
fn parse_rule_id(id: &str) -> Result<RuleId, String> {
    RuleId::parse(id).ok_or_else(|| format!("unknown rule id (known: {})", RuleId::known_ids()))
}

impl LintArgs {
    /// The config file's settings (or the defaults), with `--rule` and `--skip` applied.
    fn lint_config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => read_config(path)?,
            None => Config::default(),
        };
        for rule in RuleId::ALL {
            let chosen = self.rules.is_empty() || self.rules.contains(&rule);
            if !chosen || self.skip.contains(&rule) {
                config.rules.insert(rule, Level::Off);
            }
        }
        Ok(config)
    }
}

/// Reads a lint config file: a YAML text ([`Config::from_yaml`]).
pub fn read_config(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading lint config {}", path.display()))?;
    Config::from_yaml(&text).with_context(|| path.display().to_string())
}

/// Runs `lint`.
pub fn run(args: &LintArgs) -> anyhow::Result<Outcome> {
    let config = args.lint_config()?;
    let loaded = match &args.manifests {
        Some(path) => located(path)?,
        None => load::live(args.kubeconfig.as_deref())?,
    };
    let mut findings = lint::lint(&loaded.snapshot, &config);
    findings.retain(|finding| finding.severity >= args.severity);
    let counts = Counts::of(&findings);
    let located = report::locate(findings, &loaded.locations);
    let text = match args.format {
        Format::Text => report::to_text(&located),
        Format::Json => report::to_json(&located).context("encoding the findings")?,
        Format::Sarif => {
            let log = sarif::to_sarif(&located, env!("CARGO_PKG_VERSION"));
            let mut text = serde_json::to_string_pretty(&log).context("encoding the findings")?;
            text.push('\n');
            text
        }
    };
    write_stdout(&text).context("writing the findings to stdout")?;
    let snapshot = &loaded.snapshot;
    // Nothing useful to do when stderr is gone.
    let _ = writeln!(
        io::stderr().lock(),
        "kube-nftpol lint: {counts} ({} namespaces, {} pods, {} policies)",
        snapshot.namespaces().count(),
        snapshot.pods().count(),
        snapshot.policies().count()
    );
    Ok(if located.is_empty() {
        Outcome::Success
    } else {
        Outcome::Findings
    })
}

/// Loads manifests with the lines of their fields; prints the loader's warnings (not the
/// invalid policies: those are findings).
fn located(path: &Path) -> anyhow::Result<Loaded> {
    let loaded = manifests::load_dir_locating(path).context("loading manifests")?;
    let mut stderr = io::stderr().lock();
    for warning in &loaded.warnings {
        let _ = writeln!(stderr, "warning: {warning}");
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use clap::error::ErrorKind;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<LintArgs, clap::Error> {
        let cli = Cli::try_parse_from(["kube-nftpol", "lint"].iter().chain(args))?;
        match cli.command {
            Command::Lint(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn lint_defaults_to_the_live_cluster_text_and_every_severity() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.manifests, None);
        assert_eq!(args.format, Format::Text);
        assert_eq!(args.severity, Severity::Info);
        assert!(args.rules.is_empty() && args.skip.is_empty() && args.config.is_none());
        assert_eq!(args.lint_config().unwrap(), Config::default());
    }

    #[test]
    fn manifests_and_kubeconfig_conflict() {
        let args = parse(&["--kubeconfig", "k"]).unwrap();
        assert_eq!(args.kubeconfig, Some(PathBuf::from("k")));
        let args = parse(&["--manifests", "m"]).unwrap();
        assert_eq!(args.manifests, Some(PathBuf::from("m")));
        let error = parse(&["--manifests", "m", "--kubeconfig", "k"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    }

    #[test]
    fn format_takes_text_json_or_sarif() {
        for (name, format) in [
            ("text", Format::Text),
            ("json", Format::Json),
            ("sarif", Format::Sarif),
        ] {
            assert_eq!(parse(&["--format", name]).unwrap().format, format);
        }
        let error = parse(&["--format", "xml"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn severity_takes_a_level_name() {
        let args = parse(&["--severity", "warning"]).unwrap();
        assert_eq!(args.severity, Severity::Warning);
        assert_eq!(
            parse(&["--severity", "error"]).unwrap().severity,
            Severity::Error
        );
        let error = parse(&["--severity", "fatal"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn rule_and_skip_take_ids_repeated_or_comma_separated() {
        let args = parse(&[
            "--rule",
            "shadowed-rule,all-ports-open",
            "--rule",
            "dns-udp-only",
            "--skip",
            "all-ports-open",
        ])
        .unwrap();
        assert_eq!(
            args.rules,
            [
                RuleId::ShadowedRule,
                RuleId::AllPortsOpen,
                RuleId::DnsUdpOnly
            ]
        );
        let config = args.lint_config().unwrap();
        assert_eq!(config.severity(RuleId::ShadowedRule), Some(Severity::Info));
        assert_eq!(config.severity(RuleId::AllPortsOpen), None);
        assert_eq!(config.severity(RuleId::InvalidPolicy), None);
        let args = parse(&["--skip", "unprotected-pod"]).unwrap();
        let config = args.lint_config().unwrap();
        assert_eq!(config.severity(RuleId::UnprotectedPod), None);
        assert!(config.severity(RuleId::InvalidPolicy).is_some());
    }

    #[test]
    fn an_unknown_rule_id_is_a_usage_error_listing_the_known_ones() {
        for flag in ["--rule", "--skip"] {
            let error = parse(&[flag, "no-such-rule"]).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{flag}");
            assert!(error.to_string().contains("invalid-policy"), "{error}");
        }
    }

    #[test]
    fn config_takes_a_file() {
        let args = parse(&["--config", "lint.yaml"]).unwrap();
        assert_eq!(args.config, Some(PathBuf::from("lint.yaml")));
    }
}
