//! Labels and label selectors, and how a selector matches labels. Validating a Kubernetes
//! selector into a [`Selector`] is [`crate::policy`]'s job.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

/// Object labels, ordered so everything derived from them is deterministic.
pub type Labels = BTreeMap<String, String>;

/// A validated label selector. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Selector {
    /// `matchLabels`: every key must be present with exactly this value.
    pub match_labels: BTreeMap<String, String>,
    /// `matchExpressions`, ANDed with each other and with `match_labels`.
    pub expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator with its values.
    pub operator: Operator,
}

/// A selector operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Operator {
    /// The label is present with one of the values.
    In(BTreeSet<String>),
    /// The label is absent, or present with none of the values.
    NotIn(BTreeSet<String>),
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether the selector is empty (matches everything).
    pub fn is_everything(&self) -> bool {
        self.match_labels.is_empty() && self.expressions.is_empty()
    }

    /// Whether the labels satisfy the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    /// Whether the labels satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            Operator::In(values) => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Selector {
    /// Kubernetes selector syntax (`app=web,tier in (a,b),!legacy`); `{}` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_everything() {
            return f.write_str("{}");
        }
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.expressions {
            let join = |v: &BTreeSet<String>| v.iter().cloned().collect::<Vec<_>>().join(",");
            parts.push(match &r.operator {
                Operator::In(v) => format!("{} in ({})", r.key, join(v)),
                Operator::NotIn(v) => format!("{} notin ({})", r.key, join(v)),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}
