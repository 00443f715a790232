//! Where snapshots come from. Today: a directory of manifests ([`manifests`]).

pub mod directory;
pub mod manifests;
