//! The named sets' share of an incremental script: sets added (declared with their elements),
//! elements added to and deleted from the sets that stay, and stale sets deleted. A set whose
//! type changed cannot be changed in place ([`in_place`]). It does not order its commands
//! against the other kinds' (rules refer to sets): [`super::incremental`] does.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::diff::{ByName, Diff, join};
use crate::compile::Set;
use crate::compile::render_text::{element, render_set};

/// Whether a script can take the sets from `installed` to `desired` in place: no set that
/// stays changes its kind or family (its `type`, which `nft` cannot change).
pub(super) fn in_place(installed: &[Set], desired: &[Set]) -> bool {
    !by_name(installed, desired)
        .kept()
        .any(|(_, old, new)| old.kind != new.kind || old.family != new.family)
}

/// The commands that take the sets of table `table` from `installed` to `desired`.
pub(super) fn diff(table: &str, installed: &[Set], desired: &[Set]) -> Diff {
    let sets = by_name(installed, desired);
    let mut diff = Diff::default();

    for set in sets.added() {
        render_set(&mut diff.declared, set);
        diff.touched.push(set.name.clone());
    }

    for (name, old, new) in sets.kept() {
        let old_elements: BTreeSet<String> = old
            .elements
            .iter()
            .map(|e| element(e, old.family))
            .collect();
        let new_elements: BTreeSet<String> = new
            .elements
            .iter()
            .map(|e| element(e, new.family))
            .collect();
        let removed: Vec<&String> = old_elements.difference(&new_elements).collect();
        let added: Vec<&String> = new_elements.difference(&old_elements).collect();
        if !removed.is_empty() {
            let _ = writeln!(
                diff.changed,
                "delete element {table} {name} {{ {} }}",
                join(&removed)
            );
        }
        if !added.is_empty() {
            let _ = writeln!(
                diff.changed,
                "add element {table} {name} {{ {} }}",
                join(&added)
            );
        }
        if !removed.is_empty() || !added.is_empty() {
            diff.touched.push(name.to_owned());
        }
    }

    for name in sets.stale() {
        let _ = writeln!(diff.deleted, "delete set {table} {name}");
        diff.touched.push(name.to_owned());
    }
    diff
}

fn by_name<'a>(installed: &'a [Set], desired: &'a [Set]) -> ByName<'a, Set> {
    ByName::new(installed, desired, |s| s.name.as_str())
}
