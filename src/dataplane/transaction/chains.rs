//! The chains' share of an incremental script: chains added (declared with their rules),
//! chains that stay but whose rules changed (flushed and refilled in the same transaction, so
//! no packet sees them empty), and stale chains deleted. A different set of base chains cannot
//! be changed in place ([`in_place`]). It does not order its commands against the other kinds'
//! (map elements point to chains, rules refer to sets): [`super::incremental`] does.

use std::fmt::Write;

use super::diff::{ByName, Diff};
use crate::compile::Chain;
use crate::compile::render_text::{self, render_chain};

/// Whether a script can take the chains from `installed` to `desired` in place: the same base
/// chains on the same hooks, in the same order.
pub(super) fn in_place(installed: &[Chain], desired: &[Chain]) -> bool {
    let base_chains = |chains: &[Chain]| {
        chains
            .iter()
            .filter(|c| c.hook.is_some())
            .map(|c| (c.name.clone(), c.hook))
            .collect::<Vec<_>>()
    };
    base_chains(installed) == base_chains(desired)
}

/// The commands that take the chains of table `table` from `installed` to `desired`.
pub(super) fn diff(table: &str, installed: &[Chain], desired: &[Chain]) -> Diff {
    let chains = ByName::new(installed, desired, |c| c.name.as_str());
    let mut diff = Diff::default();

    for chain in chains.added() {
        render_chain(&mut diff.declared, chain);
        diff.touched.push(chain.name.clone());
    }

    for (name, old, new) in chains.kept() {
        if old.rules == new.rules {
            continue;
        }
        let _ = writeln!(diff.changed, "flush chain {table} {name}");
        for rule in &new.rules {
            let _ = writeln!(
                diff.changed,
                "add rule {table} {name} {}",
                render_text::rule_text(rule)
            );
        }
        diff.touched.push(name.to_owned());
    }

    // Every stale chain is flushed before any is deleted: one may still jump to another (a
    // tier chain to its deny chain, a pod chain to its allow-log chain), and the kernel refuses
    // to delete a chain a rule still refers to.
    for name in chains.stale() {
        let _ = writeln!(diff.deleted, "flush chain {table} {name}");
    }
    for name in chains.stale() {
        let _ = writeln!(diff.deleted, "delete chain {table} {name}");
        diff.touched.push(name.to_owned());
    }
    diff
}
