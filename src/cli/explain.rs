//! `kube-nftpol explain`: loads manifests, evaluates one flow with
//! [`crate::policy::evaluate`] and prints the verdict with its reasons, as text for people or
//! JSON for scripts. The exit status carries the verdict: 0 allowed, 1 denied (2 is left for
//! errors, see [`super::EXIT_ERROR`]).
//!
//! The text form is one headline and one line per side (egress of the sender, ingress of the
//! receiver); a denying side lists every rule that was tried and why it missed, indented below
//! it:
//!
//! ```text
//! DENIED shop/api -> shop/db tcp/5432
//!   egress  shop/api: not isolated (no policy selects it for egress)
//!   ingress shop/db: denied (isolated by shop/db-from-backend)
//!     shop/db-from-backend ingress[0]: source shop/api is not among the rule's peers: pods ...
//! ```
//!
//! A side a ClusterNetworkPolicy decides names the policy, its tier and priority, and the rule;
//! an Admin rule that passed the flow on to the next tier is listed below the side:
//!
//! ```text
//! DENIED shop/api -> 169.254.169.254 tcp/80
//!   egress  shop/api: denied by ClusterNetworkPolicy guardrails egress[1] "no-cloud-metadata" (Admin tier, priority 10)
//!   ingress 169.254.169.254: not policed (169.254.169.254 is not a pod address)
//! ```

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::flow::{self, PortArg};
use super::{Outcome, drop_line, load, write_stdout};
use crate::flow_line::Action;
use crate::model::{ClusterAction, Direction, ObjectKey, Tier};
use crate::policy::{
    self, ClusterRuleRef, DirectionVerdict, Endpoint, Flow, MissReason, RuleMiss, Verdict,
};

/// Arguments of `explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Kubernetes manifests: a directory (YAML and JSON files, read recursively) or one file.
    /// Without it, the live cluster is read through the Kubernetes API
    #[arg(long, value_name = "DIR", conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// Kubeconfig for the live cluster [default: in-cluster, then KUBECONFIG, then
    /// ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The sender: NAMESPACE/POD, or an IP address (a pod's IP stands for that pod)
    #[arg(long, value_name = "NS/POD|IP", value_parser = flow::parse_endpoint,
          required_unless_present = "drop_log", conflicts_with = "drop_log")]
    pub from: Option<Endpoint>,
    /// The receiver, after Service DNAT: NAMESPACE/POD, or an IP address
    #[arg(long, value_name = "NS/POD|IP", value_parser = flow::parse_endpoint,
          required_unless_present = "drop_log", conflicts_with = "drop_log")]
    pub to: Option<Endpoint>,
    /// Destination port on the receiver (the pod's port, not the Service's), and protocol:
    /// tcp (the default), udp or sctp, in any case. Examples: 8080, 53/udp
    #[arg(long, value_name = "PORT[/PROTO]", value_parser = flow::parse_port,
          required_unless_present = "drop_log", conflicts_with = "drop_log")]
    pub port: Option<PortArg>,
    /// Explain the drop-log lines on stdin (the agent's JSON lines, as `kubectl logs` prints
    /// them) instead of --from/--to/--port; lines that are not drop-log lines are skipped
    #[arg(long)]
    pub drop_log: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// How `explain` prints the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for people.
    Text,
    /// One JSON object: `allowed`, `flow`, `egress`, `ingress`.
    Json,
}

impl ExplainArgs {
    /// The flow `--from`, `--to` and `--port` describe (`None` with `--drop-log`).
    pub fn flow(&self) -> Option<Flow> {
        let (Some(from), Some(to), Some(port)) = (&self.from, &self.to, &self.port) else {
            return None;
        };
        Some(Flow {
            source: from.clone(),
            destination: to.clone(),
            protocol: port.protocol,
            port: port.port,
        })
    }

    /// Where the cluster comes from, for messages.
    fn origin(&self) -> String {
        match (&self.manifests, &self.kubeconfig) {
            (Some(dir), _) => dir.display().to_string(),
            (None, Some(file)) => format!("the cluster of {}", file.display()),
            (None, None) => "the cluster".to_owned(),
        }
    }
}

/// Runs `explain`: every flow asked for; the exit status says whether all were allowed.
pub fn run(args: &ExplainArgs) -> anyhow::Result<Outcome> {
    let snapshot = match &args.manifests {
        Some(dir) => load::load(dir)?,
        None => live_snapshot(args.kubeconfig.as_deref())?,
    };
    let flows = match args.flow() {
        Some(flow) => {
            for endpoint in [&flow.source, &flow.destination] {
                if let Endpoint::Pod(key) = endpoint
                    && snapshot.pod(key).is_none()
                {
                    anyhow::bail!("no pod {key} in {}", args.origin());
                }
            }
            vec![(flow, None)]
        }
        None => drop_log_flows(&snapshot)?,
    };
    let mut all_allowed = true;
    let mut texts = Vec::new();
    for (flow, revoked_at) in &flows {
        let verdict = policy::evaluate(&snapshot, flow)
            .with_context(|| format!("explaining {}", flow_text(flow)))?;
        all_allowed &= verdict.allowed;
        texts.push(match args.format {
            Format::Text => with_revocation(render_text(flow, &verdict), revoked_at.as_deref()),
            Format::Json => render_json(flow, &verdict, revoked_at.as_deref())?,
        });
    }
    write_stdout(&texts.join(match args.format {
        Format::Text => "\n",
        Format::Json => "",
    }))
    .context("writing the verdict to stdout")?;
    Ok(if all_allowed {
        Outcome::Success
    } else {
        Outcome::Denied
    })
}

/// The live cluster, listed once through the Kubernetes API, its diagnostics on stderr.
fn live_snapshot(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<crate::Snapshot> {
    let loaded = load::live(kubeconfig)?;
    for line in load::diagnostics(&loaded) {
        eprintln!("{line}");
    }
    Ok(loaded.snapshot)
}

/// The flows of the drop-log lines on stdin, each with when the agent ended it for a `revoke`
/// line; other lines are skipped (with a note on stderr for lines that look like JSON but are
/// not flows explain can take).
fn drop_log_flows(snapshot: &crate::Snapshot) -> anyhow::Result<Vec<(Flow, Option<String>)>> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .context("reading drop-log lines from stdin")?;
    let mut flows = Vec::new();
    for (number, line) in input.lines().enumerate() {
        // Lines without a JSON object are the agent's other output; kubectl's `--prefix` and
        // `--timestamps` prefixes before the object are skipped by the reader.
        if !line.contains('{') {
            continue;
        }
        match drop_line::flow(line, snapshot) {
            Ok(line) => {
                let revoked_at = (line.action == Action::Revoke).then_some(line.ts);
                flows.push((line.flow, revoked_at));
            }
            Err(error) => eprintln!("note: stdin line {}: {error}", number + 1),
        }
    }
    if flows.is_empty() {
        anyhow::bail!("no drop-log lines on stdin (pipe in the agent's output, e.g. kubectl logs)");
    }
    Ok(flows)
}

/// `x/a -> y/b tcp/80`.
fn flow_text(flow: &Flow) -> String {
    format!(
        "{} -> {} {}/{}",
        flow.source, flow.destination, flow.protocol, flow.port
    )
}

/// The sentence on a connection the agent ended (a `revoke` line of the drop log).
fn revocation_note(at: &str) -> String {
    format!(
        "revoked at {at}: this connection was established while allowed, and the agent ended \
         it when a change denied it (its conntrack entry deleted, its next packets answered with \
         a TCP reset or an ICMP error)"
    )
}

/// The text form with, for a revoked connection, the note under the headline.
fn with_revocation(text: String, revoked_at: Option<&str>) -> String {
    let Some(at) = revoked_at else {
        return text;
    };
    match text.split_once('\n') {
        Some((headline, rest)) => format!("{headline}\n  {}\n{rest}", revocation_note(at)),
        None => text,
    }
}

/// The JSON form: `{"allowed", "flow", "egress", "ingress"}`, pretty-printed, and `"revoked"`
/// (`{"at", "note"}`) for a connection the agent ended.
pub fn render_json(
    flow: &Flow,
    verdict: &Verdict,
    revoked_at: Option<&str>,
) -> anyhow::Result<String> {
    #[derive(Serialize)]
    struct Revoked<'a> {
        at: &'a str,
        note: String,
    }
    #[derive(Serialize)]
    struct Report<'a> {
        allowed: bool,
        flow: &'a Flow,
        egress: &'a DirectionVerdict,
        ingress: &'a DirectionVerdict,
        #[serde(skip_serializing_if = "Option::is_none")]
        revoked: Option<Revoked<'a>>,
    }
    let report = Report {
        allowed: verdict.allowed,
        flow,
        egress: &verdict.egress,
        ingress: &verdict.ingress,
        revoked: revoked_at.map(|at| Revoked {
            at,
            note: revocation_note(at),
        }),
    };
    let mut text = serde_json::to_string_pretty(&report).context("encoding the verdict")?;
    text.push('\n');
    Ok(text)
}

/// The text form (see the module doc).
pub fn render_text(flow: &Flow, verdict: &Verdict) -> String {
    let mut out = String::new();
    let headline = if verdict.allowed { "ALLOWED" } else { "DENIED" };
    let _ = writeln!(out, "{headline} {}", flow_text(flow));
    render_side(&mut out, flow, Direction::Egress, &verdict.egress);
    render_side(&mut out, flow, Direction::Ingress, &verdict.ingress);
    out
}

/// One side: the sender's egress or the receiver's ingress.
fn render_side(out: &mut String, flow: &Flow, direction: Direction, verdict: &DirectionVerdict) {
    let this = match direction {
        Direction::Egress => &flow.source,
        Direction::Ingress => &flow.destination,
    };
    // `{:<7}` lines up `egress ` with `ingress`.
    let _ = write!(out, "  {:<7} ", direction.as_str());
    let isolated = |by: &[ObjectKey]| {
        let by: Vec<String> = by.iter().map(ToString::to_string).collect();
        format!("isolated by {}", by.join(", "))
    };
    match verdict {
        DirectionVerdict::NotPoliced { reason } => {
            let _ = writeln!(out, "{this}: not policed ({reason})");
        }
        DirectionVerdict::Exempt { reason } => {
            let _ = writeln!(out, "{this}: always allowed ({reason})");
        }
        DirectionVerdict::NotIsolated { pod, passed } => {
            let _ = writeln!(
                out,
                "{}: not isolated (no policy selects it for {direction})",
                label(this, pod)
            );
            passed_text(out, passed);
        }
        DirectionVerdict::Allowed {
            pod,
            isolated_by,
            rule,
            passed,
        } => {
            let _ = writeln!(
                out,
                "{}: allowed by {rule} ({})",
                label(this, pod),
                isolated(isolated_by)
            );
            passed_text(out, passed);
        }
        DirectionVerdict::Denied {
            pod,
            isolated_by,
            misses,
            passed,
        } => {
            let _ = writeln!(
                out,
                "{}: denied ({})",
                label(this, pod),
                isolated(isolated_by)
            );
            passed_text(out, passed);
            for miss in misses {
                let _ = writeln!(out, "    {}", miss_text(flow, direction, miss));
            }
        }
        DirectionVerdict::Cluster { pod, rule, passed } => {
            let verb = match rule.action {
                ClusterAction::Deny => "denied",
                ClusterAction::Accept | ClusterAction::Pass => "accepted",
            };
            let _ = writeln!(out, "{}: {verb} by {rule}", label(this, pod));
            passed_text(out, passed);
        }
    }
}

/// The ClusterNetworkPolicy rules that passed the side on to the next tier, one line each.
fn passed_text(out: &mut String, passed: &[ClusterRuleRef]) {
    for rule in passed {
        let next = match rule.tier {
            Tier::Admin => "the NetworkPolicies and the Baseline tier",
            Tier::Baseline => "the default (allowed)",
        };
        let _ = writeln!(out, "    passed on to {next} by {rule}");
    }
}

/// The pod's key, with the address it was given as when that was an IP.
fn label(endpoint: &Endpoint, pod: &ObjectKey) -> String {
    match endpoint {
        Endpoint::Pod(_) => pod.to_string(),
        Endpoint::Ip(ip) => format!("{pod} ({ip})"),
    }
}

/// One line for a rule that did not allow the flow.
fn miss_text(flow: &Flow, direction: Direction, miss: &RuleMiss) -> String {
    let rule = match miss.rule {
        Some(index) => format!("{} {direction}[{index}]", miss.policy),
        None => miss.policy.to_string(),
    };
    let why = match &miss.reason {
        MissReason::NoRules => format!("no {direction} rules, so it denies all {direction}"),
        MissReason::Invalid { errors } => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("invalid, so it allows nothing ({})", errors.join("; "))
        }
        MissReason::Peer { peers } => {
            let (role, other) = match direction {
                Direction::Ingress => ("source", &flow.source),
                Direction::Egress => ("destination", &flow.destination),
            };
            format!(
                "{role} {other} is not among the rule's peers: {}",
                peers.join("; ")
            )
        }
        MissReason::Protocol { ports } => format!(
            "{}/{} is not among the rule's ports (none is {}): {}",
            flow.protocol,
            flow.port,
            flow.protocol,
            ports.join(", ")
        ),
        MissReason::Port { ports } => format!(
            "{}/{} is not among the rule's ports: {}",
            flow.protocol,
            flow.port,
            ports.join(", ")
        ),
    };
    format!("{rule}: {why}")
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use clap::error::ErrorKind;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::model::{FieldError, Protocol};
    use crate::policy::RuleRef;

    fn parse(args: &[&str]) -> Result<ExplainArgs, clap::Error> {
        let cli = Cli::try_parse_from(["kube-nftpol", "explain"].iter().chain(args))?;
        match cli.command {
            Command::Explain(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    const REQUIRED: [&str; 8] = [
        "--manifests",
        "m",
        "--from",
        "x/a",
        "--to",
        "10.0.0.9",
        "--port",
        "80",
    ];

    fn with_required<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        REQUIRED.iter().chain(extra).copied().collect()
    }

    fn key(namespace: &str, name: &str) -> ObjectKey {
        ObjectKey::new(namespace, name)
    }

    #[test]
    fn flow_comes_from_from_to_and_port() {
        let args = parse(&REQUIRED).unwrap();
        assert_eq!(args.manifests, Some(PathBuf::from("m")));
        assert_eq!(
            args.flow(),
            Some(Flow {
                source: Endpoint::Pod(key("x", "a")),
                destination: Endpoint::Ip("10.0.0.9".parse().unwrap()),
                protocol: Protocol::Tcp,
                port: 80,
            })
        );
        assert_eq!(args.format, Format::Text);
    }

    #[test]
    fn drop_log_replaces_the_flow_flags_and_the_api_replaces_manifests() {
        let args = parse(&["--drop-log"]).unwrap();
        assert!(args.drop_log && args.flow().is_none() && args.manifests.is_none());
        let args = parse(&["--drop-log", "--kubeconfig", "k"]).unwrap();
        assert_eq!(args.kubeconfig, Some(PathBuf::from("k")));
        assert!(parse(&["--drop-log", "--from", "x/a"]).is_err());
        assert!(parse(&["--from", "x/a", "--to", "y/b"]).is_err(), "no port");
        assert!(parse(&["--manifests", "m", "--kubeconfig", "k", "--drop-log"]).is_err());
    }

    #[test]
    fn every_flow_flag_is_required() {
        for skip in ["--from", "--to", "--port"] {
            let args: Vec<&str> = REQUIRED
                .chunks(2)
                .filter(|pair| pair[0] != skip)
                .flatten()
                .copied()
                .collect();
            let error = parse(&args).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument, "{skip}");
        }
        // Without --manifests the live cluster is read.
        let live: Vec<&str> = REQUIRED.iter().skip(2).copied().collect();
        assert_eq!(parse(&live).unwrap().manifests, None);
    }

    #[test]
    fn from_rejects_a_pod_without_namespace() {
        let args = [
            "--manifests",
            "m",
            "--from",
            "a",
            "--to",
            "y/b",
            "--port",
            "80",
        ];
        let error = parse(&args).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ValueValidation);
        assert!(error.to_string().contains("NAMESPACE/POD"), "{error}");
    }

    #[test]
    fn to_rejects_a_cidr() {
        let args = [
            "--manifests",
            "m",
            "--from",
            "x/a",
            "--to",
            "10.0.0.0/8",
            "--port",
            "80",
        ];
        assert_eq!(parse(&args).unwrap_err().kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn port_takes_a_protocol_in_any_case() {
        let args = [
            "--manifests",
            "m",
            "--from",
            "x/a",
            "--to",
            "y/b",
            "--port",
            "53/UDP",
        ];
        let flow = parse(&args).unwrap().flow().unwrap();
        assert_eq!((flow.protocol, flow.port), (Protocol::Udp, 53));
    }

    #[test]
    fn port_rejects_zero_and_unknown_protocols() {
        for bad in ["0", "80/icmp", "http"] {
            let args = [
                "--manifests",
                "m",
                "--from",
                "x/a",
                "--to",
                "y/b",
                "--port",
                bad,
            ];
            assert_eq!(
                parse(&args).unwrap_err().kind(),
                ErrorKind::ValueValidation,
                "{bad}"
            );
        }
    }

    #[test]
    fn format_takes_text_or_json() {
        assert_eq!(
            parse(&with_required(&["--format", "json"])).unwrap().format,
            Format::Json
        );
        assert_eq!(
            parse(&with_required(&["--format", "text"])).unwrap().format,
            Format::Text
        );
        let error = parse(&with_required(&["--format", "nft"])).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidValue);
    }

    fn flow() -> Flow {
        Flow {
            source: Endpoint::Pod(key("x", "a")),
            destination: Endpoint::Pod(key("y", "b")),
            protocol: Protocol::Tcp,
            port: 80,
        }
    }

    #[test]
    fn allowed_text_names_the_rule_and_the_isolating_policies() {
        let verdict = Verdict {
            allowed: true,
            egress: DirectionVerdict::NotIsolated {
                pod: key("x", "a"),
                passed: Vec::new(),
            },
            ingress: DirectionVerdict::Allowed {
                pod: key("y", "b"),
                isolated_by: vec![key("y", "allow-from-x"), key("y", "deny-all")],
                rule: RuleRef {
                    policy: key("y", "allow-from-x"),
                    direction: Direction::Ingress,
                    index: 0,
                },
                passed: Vec::new(),
            },
        };
        assert_eq!(
            render_text(&flow(), &verdict),
            "ALLOWED x/a -> y/b tcp/80\n\
             \x20 egress  x/a: not isolated (no policy selects it for egress)\n\
             \x20 ingress y/b: allowed by y/allow-from-x ingress[0] (isolated by y/allow-from-x, \
             y/deny-all)\n"
        );
    }

    #[test]
    fn denied_text_has_one_line_per_miss() {
        let miss = |policy: &str, rule, reason| RuleMiss {
            policy: key("y", policy),
            rule,
            reason,
        };
        let verdict = Verdict {
            allowed: false,
            egress: DirectionVerdict::Exempt {
                reason: "test".into(),
            },
            ingress: DirectionVerdict::Denied {
                pod: key("y", "b"),
                isolated_by: vec![key("y", "bad"), key("y", "deny"), key("y", "web")],
                misses: vec![
                    miss(
                        "bad",
                        None,
                        MissReason::Invalid {
                            errors: vec![FieldError::new("spec.x", "wrong")],
                        },
                    ),
                    miss("deny", None, MissReason::NoRules),
                    miss(
                        "web",
                        Some(0),
                        MissReason::Peer {
                            peers: vec!["ipBlock 10.0.0.0/8".into()],
                        },
                    ),
                    miss(
                        "web",
                        Some(1),
                        MissReason::Port {
                            ports: vec!["tcp/8080".into()],
                        },
                    ),
                    miss(
                        "web",
                        Some(2),
                        MissReason::Protocol {
                            ports: vec!["udp/53".into()],
                        },
                    ),
                ],
                passed: Vec::new(),
            },
        };
        assert_eq!(
            render_text(&flow(), &verdict),
            "DENIED x/a -> y/b tcp/80\n\
             \x20 egress  x/a: always allowed (test)\n\
             \x20 ingress y/b: denied (isolated by y/bad, y/deny, y/web)\n\
             \x20   y/bad: invalid, so it allows nothing (spec.x: wrong)\n\
             \x20   y/deny: no ingress rules, so it denies all ingress\n\
             \x20   y/web ingress[0]: source x/a is not among the rule's peers: ipBlock 10.0.0.0/8\n\
             \x20   y/web ingress[1]: tcp/80 is not among the rule's ports: tcp/8080\n\
             \x20   y/web ingress[2]: tcp/80 is not among the rule's ports (none is tcp): udp/53\n"
        );
    }

    #[test]
    fn ip_endpoints_show_the_pod_they_resolved_to() {
        let mut flow = flow();
        flow.source = Endpoint::Ip("10.0.0.5".parse().unwrap());
        let verdict = Verdict {
            allowed: true,
            egress: DirectionVerdict::NotIsolated {
                pod: key("x", "a"),
                passed: Vec::new(),
            },
            ingress: DirectionVerdict::NotPoliced {
                reason: "because".into(),
            },
        };
        let text = render_text(&flow, &verdict);
        assert!(
            text.contains("\n  egress  x/a (10.0.0.5): not isolated"),
            "{text}"
        );
        assert!(
            text.contains("\n  ingress y/b: not policed (because)"),
            "{text}"
        );
    }

    #[test]
    fn json_has_allowed_flow_and_both_sides() {
        let verdict = Verdict {
            allowed: true,
            egress: DirectionVerdict::NotIsolated {
                pod: key("x", "a"),
                passed: Vec::new(),
            },
            ingress: DirectionVerdict::NotIsolated {
                pod: key("y", "b"),
                passed: Vec::new(),
            },
        };
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&flow(), &verdict, None).unwrap()).unwrap();
        assert_eq!(json["allowed"], true);
        assert_eq!(json["flow"]["port"], 80);
        assert_eq!(json["egress"]["decision"], "not_isolated");
        assert_eq!(json["ingress"]["pod"]["name"], "b");
    }

    #[test]
    fn a_revoked_connection_is_explained_with_when_and_how_it_was_ended() {
        let text = "DENIED a -> b tcp/80\n  egress  a: x\n  ingress b: y\n".to_owned();
        assert_eq!(with_revocation(text.clone(), None), text);
        let revoked = with_revocation(text, Some("2026-12-06T10:00:00.000Z"));
        let lines: Vec<&str> = revoked.lines().collect();
        assert_eq!(lines[0], "DENIED a -> b tcp/80");
        assert!(
            lines[1].starts_with("  revoked at 2026-12-06T10:00:00.000Z: this connection was established while allowed"),
            "{revoked}"
        );
        assert_eq!(lines[2], "  egress  a: x");
        let verdict = Verdict {
            allowed: false,
            egress: DirectionVerdict::NotPoliced { reason: "r".into() },
            ingress: DirectionVerdict::NotPoliced { reason: "r".into() },
        };
        let json: serde_json::Value = serde_json::from_str(
            &render_json(&flow(), &verdict, Some("2026-12-06T10:00:00.000Z")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["revoked"]["at"], "2026-12-06T10:00:00.000Z");
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&flow(), &verdict, None).unwrap()).unwrap();
        assert!(json.get("revoked").is_none());
    }
}

#[cfg(test)]
mod tier_tests {
    use super::*;
    use crate::model::Protocol;

    fn rule(tier: Tier, action: ClusterAction, name: Option<&str>) -> ClusterRuleRef {
        ClusterRuleRef {
            policy: "guardrails".into(),
            tier,
            priority: 7,
            direction: Direction::Egress,
            index: 2,
            name: name.map(str::to_owned),
            action,
        }
    }

    #[test]
    fn a_tier_decision_names_the_policy_tier_priority_and_rule_and_what_passed_before() {
        let flow = Flow {
            source: Endpoint::Pod(ObjectKey::new("x", "a")),
            destination: Endpoint::Pod(ObjectKey::new("y", "b")),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let verdict = Verdict {
            allowed: false,
            egress: DirectionVerdict::Cluster {
                pod: ObjectKey::new("x", "a"),
                rule: rule(Tier::Baseline, ClusterAction::Deny, Some("no-y")),
                passed: vec![rule(Tier::Admin, ClusterAction::Pass, None)],
            },
            ingress: DirectionVerdict::Cluster {
                pod: ObjectKey::new("y", "b"),
                rule: rule(Tier::Admin, ClusterAction::Accept, None),
                passed: Vec::new(),
            },
        };
        assert_eq!(
            render_text(&flow, &verdict),
            "DENIED x/a -> y/b tcp/80\n\
             \x20 egress  x/a: denied by ClusterNetworkPolicy guardrails egress[2] \"no-y\" \
             (Baseline tier, priority 7)\n\
             \x20   passed on to the NetworkPolicies and the Baseline tier by ClusterNetworkPolicy \
             guardrails egress[2] (Admin tier, priority 7)\n\
             \x20 ingress y/b: accepted by ClusterNetworkPolicy guardrails egress[2] (Admin tier, \
             priority 7)\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&flow, &verdict, None).unwrap()).unwrap();
        assert_eq!(json["egress"]["decision"], "cluster");
        assert_eq!(json["egress"]["rule"]["tier"], "Baseline");
        assert_eq!(json["egress"]["rule"]["name"], "no-y");
        assert_eq!(json["egress"]["passed"][0]["action"], "Pass");
    }
}
