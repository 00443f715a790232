//! `kube-nftpol graph`: the workload graph of observed flow lines ([`crate::graph`]) as
//! Graphviz DOT, Mermaid or JSON on stdout. The lines come from stdin or `--flows FILE`, the
//! cluster from `--manifests` ([`super::flow_source`]). With `--policy FILE...` the candidate
//! policies are added to the cluster and the edges they would newly deny (or allow) are marked,
//! with a count on stderr.
//!
//! Exit status: 0 graph printed, 1 no flows to draw, 2 bad input (unreadable files, bad
//! manifests, a `--policy` file without a NetworkPolicy).

use std::io::{self, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::flow_source::{Observation, SourceArgs};
use super::{Outcome, load, write_stdout};
use crate::graph::{self, PreviewSummary};
use crate::model::Policy;

/// Arguments of `graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Where the flows and the cluster come from.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Preview candidate policies (NetworkPolicy manifests: files or directories): the edges
    /// they would newly deny are drawn bold red, those they would newly allow bold green
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub policy: Vec<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Dot)]
    pub format: Format,
}

/// How `graph` prints the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Graphviz DOT: `| dot -Tsvg > flows.svg`.
    Dot,
    /// A Mermaid flowchart, for a ```mermaid block in markdown.
    Mermaid,
    /// `{"groups", "nodes", "edges", "preview"}`, for scripts.
    Json,
}

/// Runs `graph`.
pub fn run(args: &GraphArgs) -> anyhow::Result<Outcome> {
    let candidates = candidates(&args.policy)?;
    let observation = Observation::load(&args.source)?;
    let mut stderr = io::stderr().lock();
    // Nothing useful to do when stderr is gone.
    for problem in &observation.problems {
        let _ = writeln!(stderr, "warning: {problem}");
    }
    if observation.lines.is_empty() {
        let _ = writeln!(
            stderr,
            "kube-nftpol: nothing to draw: no flows ({})",
            observation.origin
        );
        return Ok(Outcome::NothingFound);
    }
    let mut graph = graph::build(&observation.lines, observation.snapshot.as_ref());
    if !args.policy.is_empty() {
        let today = observation
            .snapshot
            .clone()
            .unwrap_or_else(|| graph::cluster_of(&observation.lines));
        let mut candidate = today.clone();
        for policy in candidates {
            candidate.upsert_policy(policy);
        }
        graph.preview(&today, &candidate);
        if let Some(summary) = &graph.preview {
            let _ = writeln!(stderr, "{}", preview_text(summary, graph.edges.len()));
        }
    }
    let text = match args.format {
        Format::Dot => graph::to_dot(&graph),
        Format::Mermaid => graph::to_mermaid(&graph),
        Format::Json => graph::to_json(&graph).context("encoding the graph")?,
    };
    write_stdout(&text).context("writing the graph to stdout")?;
    Ok(Outcome::Success)
}

/// The NetworkPolicies of the `--policy` files (their diagnostics on stderr, as for
/// `--manifests`); other objects in them are left out.
fn candidates(paths: &[PathBuf]) -> anyhow::Result<Vec<Policy>> {
    let mut policies = Vec::new();
    for path in paths {
        let snapshot = load::load(path).with_context(|| format!("--policy {}", path.display()))?;
        let before = policies.len();
        policies.extend(snapshot.policies().cloned());
        if policies.len() == before {
            anyhow::bail!("--policy {}: no NetworkPolicy in it", path.display());
        }
        let pods = snapshot.pods().count();
        if pods > 0 {
            eprintln!(
                "warning: --policy {}: only its NetworkPolicies are previewed, not its {pods} \
                 pods",
                path.display()
            );
        }
    }
    Ok(policies)
}

/// `preview: of 9 edges, 2 would be newly denied, ...`.
fn preview_text(summary: &PreviewSummary, edges: usize) -> String {
    let mut parts = vec![format!("{} would be newly denied", summary.newly_denied)];
    for (count, what) in [
        (summary.newly_allowed, "newly allowed"),
        (summary.still_denied, "still denied"),
        (summary.kept, "kept"),
        (
            summary.unknown,
            "not previewed (no port, or an end without an address)",
        ),
    ] {
        if count > 0 {
            parts.push(format!("{count} {what}"));
        }
    }
    format!("preview: of {edges} edges, {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;
    use crate::cli::{Command, parse_command};

    fn parse(extra: &[&str]) -> Result<GraphArgs, clap::Error> {
        let Command::Graph(args) = parse_command("graph", extra)? else {
            panic!("not graph");
        };
        Ok(args)
    }

    #[test]
    fn graph_needs_no_flags_and_prints_dot() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.format, Format::Dot);
        assert!(args.policy.is_empty());
        assert_eq!(args.source.flows, None);
    }

    #[test]
    fn every_graph_flag_parses() {
        let args = parse(&[
            "--manifests",
            "m",
            "--flows",
            "f",
            "--format",
            "mermaid",
            "--policy",
            "a.yaml",
            "b.yaml",
            "--policy",
            "c",
        ])
        .unwrap();
        assert_eq!(args.source.manifests, Some(PathBuf::from("m")));
        assert_eq!(args.source.flows, Some(PathBuf::from("f")));
        assert_eq!(args.format, Format::Mermaid);
        assert_eq!(args.policy.len(), 3);
        assert_eq!(parse(&["--format", "json"]).unwrap().format, Format::Json);
    }

    #[test]
    fn graph_rejects_unknown_formats_and_an_empty_policy_list() {
        let error = parse(&["--format", "svg"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
        let error = parse(&["--policy"]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
    }

    #[test]
    fn the_preview_summary_names_only_what_happens() {
        let summary = PreviewSummary {
            newly_denied: 2,
            kept: 5,
            ..PreviewSummary::default()
        };
        assert_eq!(
            preview_text(&summary, 7),
            "preview: of 7 edges, 2 would be newly denied, 5 kept"
        );
    }
}
