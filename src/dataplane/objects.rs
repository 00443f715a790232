//! The names of the agent's table's objects, by kind: the vocabulary the dataplane's modules
//! share. [`TableObjects`] is what the table holds (what a full replace deletes); [`Touched`] is
//! what one incremental script changes (what its read-back reads and its fingerprint check
//! leaves out). It builds, reads and compares nothing, and uses none of the other modules, so
//! all of them can use it.

use std::collections::BTreeSet;

/// The named objects of the agent's table, as the kernel holds them now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableObjects {
    /// Chain names, base chains included.
    pub chains: BTreeSet<String>,
    /// Named sets (not maps, not the anonymous sets of rules).
    pub sets: BTreeSet<String>,
    /// Named maps.
    pub maps: BTreeSet<String>,
}

/// Names of the objects a script changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Touched {
    /// Chains added, refilled or deleted.
    pub chains: Vec<String>,
    /// Sets added, changed or deleted.
    pub sets: Vec<String>,
    /// Maps whose elements changed.
    pub maps: Vec<String>,
}
