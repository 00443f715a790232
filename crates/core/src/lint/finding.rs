//! What a lint rule reports: a [`Finding`] with its [`Severity`], the object and field it is
//! about, what is wrong and what to write instead. One type for every output: the text, JSON
//! and SARIF renderers read it, and the JSON report carries it as it is.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::RuleId;
use crate::model::ObjectRef;

/// How much a finding matters. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look: broader or more redundant than it needs to be.
    Info,
    /// Likely a mistake or a gap in the isolation.
    Warning,
    /// Broken: traffic that should flow is blocked, or the policy is rejected.
    Error,
}

impl Severity {
    /// Every severity, highest first.
    pub const ALL: [Self; 3] = [Self::Error, Self::Warning, Self::Info];

    /// `error`, `warning`, `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }

    /// The severity named `error`, `warning` or `info`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule that found it.
    pub rule: RuleId,
    /// How much it matters (the rule's default, or the config's).
    pub severity: Severity,
    /// The object it is about.
    pub object: ObjectRef,
    /// The field, as the API names it (`spec.egress[0].to[1]`); `None` for the object as a
    /// whole (a namespace without a default deny).
    pub field: Option<String>,
    /// What is wrong, in a sentence.
    pub message: String,
    /// What to write instead, in a sentence.
    pub fix: String,
}

impl Finding {
    /// The order findings are reported in: by object, field, rule and message, so the same
    /// cluster always gives the same output.
    pub fn sort_key(&self) -> (&ObjectRef, Option<&str>, RuleId, &str) {
        (
            &self.object,
            self.field.as_deref(),
            self.rule,
            &self.message,
        )
    }
}

/// Findings counted by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Findings of severity error.
    pub error: usize,
    /// Findings of severity warning.
    pub warning: usize,
    /// Findings of severity info.
    pub info: usize,
}

impl Counts {
    /// Counts `findings`.
    pub fn of<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Self {
        let mut counts = Self::default();
        for finding in findings {
            match finding.severity {
                Severity::Error => counts.error += 1,
                Severity::Warning => counts.warning += 1,
                Severity::Info => counts.info += 1,
            }
        }
        counts
    }
}

/// `2 errors, 1 warning, 0 info`.
impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        write!(
            f,
            "{} error{}, {} warning{}, {} info",
            self.error,
            plural(self.error),
            self.warning,
            plural(self.warning),
            self.info
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_from_info_to_error_and_parse_their_names() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Error);
        for severity in Severity::ALL {
            assert_eq!(Severity::parse(severity.as_str()), Some(severity));
        }
        assert_eq!(Severity::parse("fatal"), None);
    }

    #[test]
    fn counts_say_how_many_of_each_severity() {
        let finding = |severity| Finding {
            rule: RuleId::AllPortsOpen,
            severity,
            object: ObjectRef::namespace("a"),
            field: None,
            message: String::new(),
            fix: String::new(),
        };
        let findings = [finding(Severity::Error), finding(Severity::Info)];
        let counts = Counts::of(&findings);
        assert_eq!(counts.to_string(), "1 error, 0 warnings, 1 info");
    }
}
