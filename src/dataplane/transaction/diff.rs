//! One object kind's share of an incremental script ([`Diff`]): the commands for each phase of
//! the script and the names of the objects they change; and the matching of a kind's objects
//! by name ([`ByName`]). The per-kind modules fill a `Diff`; the script's order across kinds
//! (which phase comes before which) is [`super::incremental`]'s, not theirs.

use std::collections::BTreeMap;

/// What an incremental script does to the objects of one kind, phase by phase.
#[derive(Debug, Default)]
pub(super) struct Diff {
    /// The objects added, declared for the script's `table { ... }` block.
    pub(super) declared: String,
    /// Commands that change objects that stay.
    pub(super) changed: String,
    /// Commands that delete stale objects.
    pub(super) deleted: String,
    /// The names of the objects added, changed and deleted, in that order.
    pub(super) touched: Vec<String>,
}

/// The objects of one kind in the installed and the desired ruleset, matched by name; each
/// iterator goes in name order.
pub(super) struct ByName<'a, T> {
    old: BTreeMap<&'a str, &'a T>,
    new: BTreeMap<&'a str, &'a T>,
}

impl<'a, T> ByName<'a, T> {
    /// Matches `installed` with `desired` by `name`.
    pub(super) fn new(installed: &'a [T], desired: &'a [T], name: fn(&T) -> &str) -> Self {
        let by_name = |objects: &'a [T]| objects.iter().map(|o| (name(o), o)).collect();
        Self {
            old: by_name(installed),
            new: by_name(desired),
        }
    }

    /// The desired objects the installed ruleset does not have.
    pub(super) fn added(&self) -> impl Iterator<Item = &'a T> + '_ {
        self.new
            .iter()
            .filter(|(n, _)| !self.old.contains_key(*n))
            .map(|(_, o)| *o)
    }

    /// The objects both rulesets have: name, installed object, desired object.
    pub(super) fn kept(&self) -> impl Iterator<Item = (&'a str, &'a T, &'a T)> + '_ {
        self.new
            .iter()
            .filter_map(|(name, new)| Some((*name, *self.old.get(name)?, *new)))
    }

    /// The names of the installed objects the desired ruleset does not have.
    pub(super) fn stale(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.old
            .keys()
            .filter(|n| !self.new.contains_key(*n))
            .copied()
    }
}

/// Elements as `nft` lists them between braces: `a, b, c`.
pub(super) fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
