//! The linter's findings as SARIF 2.1.0 (OASIS, `sarif-schema-2.1.0.json`), the format code
//! hosts read to show findings on the lines of a change: one run, the tool's rules with their
//! ids, descriptions and default levels, and one result per finding with its file and line
//! (physical location) and its object and field (logical location).
//!
//! Only the parts of SARIF this tool writes are modelled, serde both ways; the root package's
//! CLI tests validate the output against the official schema.

use serde::{Deserialize, Serialize};

use super::report::{Located, SourceLine};
use super::{RuleId, Severity};

/// The schema the log declares.
pub const SCHEMA_URI: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// The tool's name in the log.
pub const TOOL_NAME: &str = "kube-nftpol lint";

/// A SARIF log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    /// [`SCHEMA_URI`].
    #[serde(rename = "$schema")]
    pub schema: String,
    /// `2.1.0`.
    pub version: String,
    /// One run.
    pub runs: Vec<Run>,
}

/// One run of the tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The tool and its rules.
    pub tool: Tool,
    /// The findings.
    pub results: Vec<SarifResult>,
}

/// The tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    /// Its main component.
    pub driver: Driver,
}

/// The tool's main component and its rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Driver {
    /// [`TOOL_NAME`].
    pub name: String,
    /// The tool's version.
    pub version: String,
    /// Every rule, in [`RuleId::ALL`] order (results refer to them by index).
    pub rules: Vec<Rule>,
}

/// A rule (SARIF's `reportingDescriptor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The rule id.
    pub id: String,
    /// What it finds.
    pub short_description: Message,
    /// Why it matters.
    pub full_description: Message,
    /// Its default level.
    pub default_configuration: Configuration,
}

/// A rule's default configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// `error`, `warning` or `note`.
    pub level: String,
}

/// A text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The text.
    pub text: String,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SarifResult {
    /// The rule id.
    pub rule_id: String,
    /// The rule's index in the driver's rules.
    pub rule_index: usize,
    /// `error`, `warning` or `note`.
    pub level: String,
    /// What is wrong and what to write instead.
    pub message: Message,
    /// Where.
    pub locations: Vec<Location>,
}

/// Where a finding is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// The file and line, when the object came from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_location: Option<PhysicalLocation>,
    /// The object and field.
    pub logical_locations: Vec<LogicalLocation>,
}

/// A file and a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhysicalLocation {
    /// The file.
    pub artifact_location: ArtifactLocation,
    /// The line, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Region>,
}

/// A file, as a URI reference (relative paths stay relative, so code hosts resolve them
/// against the repository).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactLocation {
    /// The URI.
    pub uri: String,
}

/// Lines of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    /// The 1-based first line.
    pub start_line: u64,
}

/// An object or field, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogicalLocation {
    /// `NetworkPolicy shop/web spec.ingress[0]`.
    pub fully_qualified_name: String,
    /// `resource` for an object, `property` for a field of one.
    pub kind: String,
}

/// SARIF's level for a severity.
fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

/// The findings as a SARIF log from `version` of the tool.
pub fn to_sarif(findings: &[Located], version: &str) -> Log {
    let rules = RuleId::ALL
        .iter()
        .map(|rule| Rule {
            id: rule.as_str().to_owned(),
            short_description: Message {
                text: rule.summary().to_owned(),
            },
            full_description: Message {
                text: rule.why().to_owned(),
            },
            default_configuration: Configuration {
                level: level(rule.default_severity()).to_owned(),
            },
        })
        .collect();
    let results = findings
        .iter()
        .map(|Located { finding, location }| {
            let rule_index = RuleId::ALL
                .iter()
                .position(|rule| *rule == finding.rule)
                .unwrap_or_default();
            let name = match &finding.field {
                Some(field) => format!("{} {field}", finding.object),
                None => finding.object.to_string(),
            };
            SarifResult {
                rule_id: finding.rule.as_str().to_owned(),
                rule_index,
                level: level(finding.severity).to_owned(),
                message: Message {
                    text: format!("{name}: {}. Fix: {}.", finding.message, finding.fix),
                },
                locations: vec![Location {
                    physical_location: location.as_ref().map(physical),
                    logical_locations: vec![LogicalLocation {
                        fully_qualified_name: name,
                        kind: if finding.field.is_some() {
                            "property"
                        } else {
                            "resource"
                        }
                        .to_owned(),
                    }],
                }],
            }
        })
        .collect();
    Log {
        schema: SCHEMA_URI.to_owned(),
        version: "2.1.0".to_owned(),
        runs: vec![Run {
            tool: Tool {
                driver: Driver {
                    name: TOOL_NAME.to_owned(),
                    version: version.to_owned(),
                    rules,
                },
            },
            results,
        }],
    }
}

fn physical(line: &SourceLine) -> PhysicalLocation {
    PhysicalLocation {
        artifact_location: ArtifactLocation {
            uri: uri(&line.file),
        },
        region: line.line.map(|start_line| Region { start_line }),
    }
}

/// A file path as a URI reference: a relative path stays relative (with `/`), an absolute one
/// becomes a `file://` URI; characters that mean something in a URI are percent-encoded.
fn uri(path: &str) -> String {
    let mut encoded = String::new();
    for byte in path.replace('\\', "/").bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                encoded.push(char::from(byte))
            }
            other => encoded.push_str(&format!("%{other:02X}")),
        }
    }
    if encoded.starts_with('/') {
        format!("file://{encoded}")
    } else {
        encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::Finding;
    use crate::model::{ObjectKey, ObjectKind, ObjectRef};

    #[test]
    fn paths_become_uri_references() {
        assert_eq!(uri("deploy/examples/a.yaml"), "deploy/examples/a.yaml");
        assert_eq!(
            uri("/tmp/my dir/a#1.yaml"),
            "file:///tmp/my%20dir/a%231.yaml"
        );
    }

    #[test]
    fn a_result_names_its_rule_by_id_and_index_with_file_line_and_field() {
        let finding = Finding {
            rule: RuleId::ShadowedRule,
            severity: Severity::Info,
            object: ObjectRef::namespaced(ObjectKind::NetworkPolicy, &ObjectKey::new("a", "p")),
            field: Some("spec.ingress[0]".into()),
            message: "m".into(),
            fix: "f".into(),
        };
        let located = Located {
            finding,
            location: Some(SourceLine {
                file: "p.yaml".into(),
                line: Some(7),
            }),
        };
        let log = to_sarif(&[located], "1.2.3");
        let run = &log.runs[0];
        assert_eq!(run.tool.driver.rules.len(), RuleId::ALL.len());
        let result = &run.results[0];
        assert_eq!(result.rule_id, "shadowed-rule");
        assert_eq!(run.tool.driver.rules[result.rule_index].id, "shadowed-rule");
        assert_eq!(result.level, "note");
        assert_eq!(
            result.message.text,
            "NetworkPolicy a/p spec.ingress[0]: m. Fix: f."
        );
        let physical = result.locations[0].physical_location.as_ref().unwrap();
        assert_eq!(physical.region, Some(Region { start_line: 7 }));
        let text = serde_json::to_string(&log).unwrap();
        assert!(
            text.contains("\"startLine\":7") && text.contains("\"$schema\""),
            "{text}"
        );
        let back: Log = serde_json::from_str(&text).unwrap();
        assert_eq!(back, log);
    }
}
