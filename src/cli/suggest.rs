//! `kube-nftpol suggest`: reads drop-log lines on stdin (what `kubectl logs` prints for the
//! agents), and prints the NetworkPolicies that would allow the denied flows
//! ([`crate::hints::suggest`]): multi-document YAML for `kubectl apply -f -`, or a JSON report.
//!
//! Lines that are not drop records (other logs, other containers) are skipped; drop records
//! that do not parse are reported on stderr and skipped. With `--manifests` the suggestions are
//! checked against that cluster state. What could not be suggested is listed on stderr (and in
//! the output). Exit status: 0 when something is suggested, 1 when nothing is (no denied flows,
//! or none a policy can allow), 2 for bad input.

use std::io::{self, BufRead, IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::{Outcome, load, write_stdout};
use crate::hints::{self, Aggregate, Options, render};

/// Distinct flows kept from stdin; beyond this the least recently seen are dropped (and the
/// user told). A flow takes a few hundred bytes.
const MAX_FLOWS: usize = 1_000_000;

/// Malformed drop records reported one by one before only counting them.
const MAX_REPORTED_LINES: usize = 10;

/// Arguments of `suggest`.
#[derive(Debug, Args)]
pub struct SuggestArgs {
    /// Check the suggestions against the cluster in these manifests (a directory or one file,
    /// e.g. `kubectl get ns,pods,netpol -A -o yaml`): current labels, selectors that select
    /// only the workload, flows already allowed left out
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Only suggest policies for pods of this namespace
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// Output format: YAML for `kubectl apply -f -`, or a JSON report for scripts
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    pub format: Format,
}

/// How `suggest` prints the suggestions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// NetworkPolicies as multi-document YAML, with comments.
    Yaml,
    /// `{"denied_flows", "no_longer_denied", "suggestions": [{..., "policy"}], "issues"}`.
    Json,
}

/// What was read from stdin.
struct Input {
    flows: Aggregate,
    lines: usize,
    malformed: usize,
}

/// Runs `suggest`.
pub fn run(args: &SuggestArgs) -> anyhow::Result<Outcome> {
    let snapshot = args.manifests.as_deref().map(load::load).transpose()?;
    let stdin = io::stdin();
    if stdin.is_terminal() {
        eprintln!("reading drop-log lines from stdin (end with Ctrl-D)");
    }
    let input = read_flows(stdin.lock()).context("reading drop-log lines from stdin")?;
    let options = Options {
        snapshot: snapshot.as_ref(),
        namespace: args.namespace.as_deref(),
    };
    let suggestions = hints::suggest(input.flows.flows(), &options);
    let text = match args.format {
        Format::Yaml => render::to_yaml(&suggestions),
        Format::Json => render::to_json(&suggestions),
    }
    .context("encoding the suggestions")?;
    write_stdout(&text).context("writing the suggestions to stdout")?;

    let mut stderr = io::stderr().lock();
    // Nothing useful to do when stderr is gone.
    if input.flows.evicted() > 0 {
        let _ = writeln!(
            stderr,
            "warning: more than {MAX_FLOWS} distinct denied flows; {} of the oldest were left out",
            input.flows.evicted()
        );
    }
    if input.malformed > MAX_REPORTED_LINES {
        let _ = writeln!(
            stderr,
            "warning: {} malformed drop records skipped in all",
            input.malformed
        );
    }
    for issue in &suggestions.issues {
        let _ = writeln!(stderr, "warning: not suggested: {issue}");
    }
    if suggestions.suggestions.is_empty() {
        let why = if suggestions.denied_flows == suggestions.no_longer_denied {
            format!(
                "no denied flows{} in {} lines",
                if suggestions.no_longer_denied > 0 {
                    " that are still denied"
                } else {
                    ""
                },
                input.lines
            )
        } else {
            "no policy can allow the denied flows (see the warnings)".to_owned()
        };
        let _ = writeln!(stderr, "kube-nftpol: nothing to suggest: {why}");
        return Ok(Outcome::NothingFound);
    }
    Ok(Outcome::Success)
}

/// Reads lines until the end, keeping the denied flows. Bytes that are not UTF-8 (binary
/// output of another container) are replaced, not fatal.
fn read_flows(mut reader: impl BufRead) -> io::Result<Input> {
    let mut input = Input {
        flows: Aggregate::new(MAX_FLOWS),
        lines: 0,
        malformed: 0,
    };
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        if reader.read_until(b'\n', &mut buffer)? == 0 {
            return Ok(input);
        }
        input.lines += 1;
        match hints::parse_line(&String::from_utf8_lossy(&buffer)) {
            Ok(Some(flow)) => {
                input.flows.record(flow);
            }
            Ok(None) => {}
            Err(error) => {
                input.malformed += 1;
                if input.malformed <= MAX_REPORTED_LINES {
                    eprintln!("warning: line {}: {error}", input.lines);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use clap::error::ErrorKind;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(extra: &[&str]) -> Result<SuggestArgs, clap::Error> {
        let cli = Cli::try_parse_from(["kube-nftpol", "suggest"].iter().chain(extra))?;
        match cli.command {
            Command::Suggest(args) => Ok(args),
            other => panic!("not suggest: {other:?}"),
        }
    }

    #[test]
    fn suggest_needs_no_flags() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.manifests, None);
        assert_eq!(args.namespace, None);
        assert_eq!(args.format, Format::Yaml);
    }

    #[test]
    fn every_suggest_flag_parses() {
        let args = parse(&[
            "--manifests",
            "m",
            "--namespace",
            "shop",
            "--format",
            "json",
        ])
        .unwrap();
        assert_eq!(args.manifests.unwrap().to_str(), Some("m"));
        assert_eq!(args.namespace.as_deref(), Some("shop"));
        assert_eq!(args.format, Format::Json);
        assert_eq!(parse(&["-n", "x"]).unwrap().namespace.as_deref(), Some("x"));
    }

    #[test]
    fn suggest_rejects_unknown_formats() {
        let error = parse(&["--format", "toml"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn reading_keeps_drop_records_and_counts_the_rest() {
        let line = r#"{"action":"deny","direction":"egress","pod":{"namespace":"a","name":"p","labels":{"app":"p"}},"peer":{"ip":"203.0.113.1"},"protocol":"tcp","port":443}"#;
        let mut text = format!("starting\n{line}\n{line}\n").into_bytes();
        text.extend_from_slice(b"\xff\xfe binary\n");
        text.extend_from_slice(format!("{}\n{line}", line.replace("egress", "up")).as_bytes());
        let input = read_flows(text.as_slice()).unwrap();
        assert_eq!(input.lines, 6);
        assert_eq!(input.malformed, 1);
        assert_eq!(input.flows.len(), 1);
        assert_eq!(input.flows.flows().next().unwrap().drops, 3);
    }
}
