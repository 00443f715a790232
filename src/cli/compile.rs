//! `kube-nftpol compile`: loads manifests and prints the nftables ruleset one node would get,
//! as an `nft -f` script or as libnftables JSON. The ruleset goes to stdout, diagnostics to
//! stderr, so `kube-nftpol compile ... > ruleset.nft` captures only the ruleset.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use clap::builder::NonEmptyStringValueParser;

use super::ruleset_flags::RulesetFlags;
use super::{Outcome, load, write_stdout};
use crate::compile::{self, Options};

/// Arguments of `compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// Kubernetes manifests: a directory (YAML and JSON files, read recursively) or one file
    #[arg(long, value_name = "DIR")]
    pub manifests: PathBuf,
    /// The node to compile for; its pods are those with this spec.nodeName
    #[arg(long, value_name = "NODE", value_parser = NonEmptyStringValueParser::new())]
    pub node: String,
    /// Output format: an `nft -f` script, or libnftables JSON for `nft -j -f`
    #[arg(long, value_enum, default_value_t = Format::Nft)]
    pub format: Format,
    /// What shapes the ruleset: the log group, audit, observe, revocation.
    #[command(flatten)]
    pub ruleset: RulesetFlags,
}

/// How `compile` prints the ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// nft(8) syntax, for `nft -f`.
    Nft,
    /// libnftables JSON, for `nft -j -f`.
    Json,
}

impl CompileArgs {
    /// The compiler options these arguments select.
    pub fn options(&self) -> Options {
        self.ruleset.options()
    }
}

/// Runs `compile`.
pub fn run(args: &CompileArgs) -> anyhow::Result<Outcome> {
    let snapshot = load::load(&args.manifests)?;
    if !snapshot
        .pods()
        .any(|p| p.node.as_deref() == Some(args.node.as_str()))
    {
        // Not an error (a new node has no pods yet), but usually a typo.
        eprintln!(
            "warning: no pod in the manifests has spec.nodeName {:?}",
            args.node
        );
    }
    let ruleset = compile::compile(&snapshot, &args.node, &args.options());
    let mut text = match args.format {
        Format::Nft => compile::render_text::render(&ruleset),
        Format::Json => compile::render_json::render(&ruleset),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    write_stdout(&text).context("writing the ruleset to stdout")?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use clap::error::ErrorKind;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<CompileArgs, clap::Error> {
        let cli = Cli::try_parse_from(["kube-nftpol", "compile"].iter().chain(args))?;
        match cli.command {
            Command::Compile(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    const REQUIRED: [&str; 4] = ["--manifests", "deploy/examples", "--node", "node-1"];

    fn with_required<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        REQUIRED.iter().chain(extra).copied().collect()
    }

    #[test]
    fn manifests_and_node_are_taken_as_given() {
        let args = parse(&REQUIRED).unwrap();
        assert_eq!(args.manifests, PathBuf::from("deploy/examples"));
        assert_eq!(args.node, "node-1");
    }

    #[test]
    fn manifests_is_required() {
        let error = parse(&["--node", "node-1"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn node_is_required_and_not_empty() {
        let error = parse(&["--manifests", "m"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        let error = parse(&["--manifests", "m", "--node", ""]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn format_defaults_to_nft_and_takes_json() {
        assert_eq!(parse(&REQUIRED).unwrap().format, Format::Nft);
        assert_eq!(
            parse(&with_required(&["--format", "json"])).unwrap().format,
            Format::Json
        );
        assert_eq!(
            parse(&with_required(&["--format", "nft"])).unwrap().format,
            Format::Nft
        );
    }

    #[test]
    fn format_rejects_unknown_values() {
        let error = parse(&with_required(&["--format", "yaml"])).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn nflog_group_defaults_to_the_compiler_default() {
        let args = parse(&REQUIRED).unwrap();
        assert_eq!(args.options(), Options::default());
    }

    #[test]
    fn nflog_group_sets_the_log_group() {
        let args = parse(&with_required(&["--nflog-group", "7"])).unwrap();
        assert_eq!(args.options().nflog_group, 7);
    }

    #[test]
    fn audit_compiles_every_namespace_in_audit_mode() {
        assert!(
            parse(&with_required(&["--audit"]))
                .unwrap()
                .options()
                .audit_all
        );
    }

    #[test]
    fn nflog_group_rejects_values_outside_u16() {
        for bad in ["65536", "x"] {
            let error = parse(&with_required(&["--nflog-group", bad])).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::ValueValidation, "{bad}");
        }
        assert!(parse(&with_required(&["--nflog-group", "-1"])).is_err());
    }
}
