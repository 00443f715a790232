//! The linter's findings as text for people and as a JSON report for scripts, each finding
//! with the file and line it points at when the input was manifests
//! ([`crate::manifest::Locations`]). One [`Report`] type, serde both ways: `kube-nftpol lint
//! --format json` writes it and tests read it back.
//!
//! The text form, one finding per two lines, then nothing else (the command prints the counts
//! on stderr):
//!
//! ```text
//! deploy/examples/allow-dns.yaml:14: warning[any-address-peer] NetworkPolicy shop/x spec.egress[0].to[1]: ipBlock ...
//!   fix: list the networks that need access; ...
//! ```

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{Counts, Finding};
use crate::manifest::Locations;

/// A finding with where it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Located {
    /// The finding.
    #[serde(flatten)]
    pub finding: Finding,
    /// The file and line, when the object came from a manifest file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<SourceLine>,
}

/// A place in a manifest file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLine {
    /// The file, as it was given (relative to where the command ran, or absolute).
    pub file: String,
    /// The 1-based line of the field, or of the object, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
}

/// What `kube-nftpol lint --format json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The findings, in the linter's order.
    pub findings: Vec<Located>,
    /// How many of each severity.
    pub counts: Counts,
}

/// Pairs each finding with the line of its field in `locations` (empty for a live cluster).
pub fn locate(findings: Vec<Finding>, locations: &Locations) -> Vec<Located> {
    findings
        .into_iter()
        .map(|finding| {
            let location = locations.get(&finding.object).map(|object| SourceLine {
                file: object.origin.clone(),
                line: object.line_of(finding.field.as_deref()),
            });
            Located { finding, location }
        })
        .collect()
}

/// The text form (see the module doc); empty for no findings.
pub fn to_text(findings: &[Located]) -> String {
    let mut out = String::new();
    for Located { finding, location } in findings {
        match location {
            Some(SourceLine {
                file,
                line: Some(line),
            }) => {
                let _ = write!(out, "{file}:{line}: ");
            }
            Some(SourceLine { file, line: None }) => {
                let _ = write!(out, "{file}: ");
            }
            None => {}
        }
        let _ = write!(
            out,
            "{}[{}] {}",
            finding.severity, finding.rule, finding.object
        );
        if let Some(field) = &finding.field {
            let _ = write!(out, " {field}");
        }
        let _ = writeln!(out, ": {}", finding.message);
        let _ = writeln!(out, "  fix: {}", finding.fix);
    }
    out
}

/// The JSON report, pretty-printed, with a final newline.
pub fn to_json(findings: &[Located]) -> serde_json::Result<String> {
    let report = Report {
        findings: findings.to_vec(),
        counts: Counts::of(findings.iter().map(|l| &l.finding)),
    };
    let mut text = serde_json::to_string_pretty(&report)?;
    text.push('\n');
    Ok(text)
}
