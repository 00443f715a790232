//! The verdict maps' share of an incremental script: elements whose key went away or points
//! elsewhere deleted (by key), then the new and re-pointed ones added. Maps are never added or
//! deleted in place: a different list of maps ([`in_place`]) takes a full replace. It does not
//! order its commands against the chains' (elements point to chains): [`super::incremental`]
//! does.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::diff::{Diff, join};
use crate::compile::VerdictMap;
use crate::compile::render_text::map_element;

/// Whether a script can take the maps from `installed` to `desired` in place: the same maps
/// (names and families) in the same order, so only their elements differ.
pub(super) fn in_place(installed: &[VerdictMap], desired: &[VerdictMap]) -> bool {
    let map_names = |maps: &[VerdictMap]| {
        maps.iter()
            .map(|m| (m.name.clone(), m.family))
            .collect::<Vec<_>>()
    };
    map_names(installed) == map_names(desired)
}

/// The commands that take the elements of the maps of table `table` from `installed` to
/// `desired`; both hold the same maps ([`in_place`]).
pub(super) fn diff(table: &str, installed: &[VerdictMap], desired: &[VerdictMap]) -> Diff {
    let mut diff = Diff::default();
    for (old, new) in installed.iter().zip(desired) {
        let old_elements: BTreeSet<String> = old
            .elements
            .iter()
            .map(|(ip, v)| map_element(*ip, v))
            .collect();
        let new_elements: BTreeSet<String> = new
            .elements
            .iter()
            .map(|(ip, v)| map_element(*ip, v))
            .collect();
        let removed: Vec<String> = old_elements
            .difference(&new_elements)
            .filter_map(|e| e.split(" : ").next().map(str::to_owned))
            .collect();
        let added: Vec<&String> = new_elements.difference(&old_elements).collect();
        if !removed.is_empty() {
            let _ = writeln!(
                diff.changed,
                "delete element {table} {} {{ {} }}",
                old.name,
                removed.join(", ")
            );
        }
        if !added.is_empty() {
            let _ = writeln!(
                diff.changed,
                "add element {table} {} {{ {} }}",
                new.name,
                join(&added)
            );
        }
        if !removed.is_empty() || !added.is_empty() {
            diff.touched.push(new.name.clone());
        }
    }
    diff
}
