//! kube-nftpol: Kubernetes NetworkPolicy enforcement with nftables.
//!
//! A pure core and thin adapters around it. Data flows one way:
//!
//! ```text
//! source (manifests, API) -> model::Snapshot -> compile::compile -> dataplane (nft)
//!                                          \-> policy::evaluate (explain)
//! ```
//!
//! - [`model`]: the cluster snapshot built from k8s-openapi objects.
//! - [`policy`]: NetworkPolicy in validated form, and [`policy::evaluate`] with reasons.
//! - [`compile`]: a snapshot and a node to the node's desired nftables ruleset, rendered as
//!   `nft` text or libnftables JSON.
//! - [`source`]: where snapshots come from (a directory of manifests).
//! - [`flowlog`]: NFLOG records of default-deny drops (the rules' `log group`) to one JSON or
//!   text line per denied flow and window, naming both ends and the isolating policies.
//! - [`hints`]: denied flows from the drop log to suggested NetworkPolicies (pure).
//! - [`flowmetrics`]: allowed and denied flow counters from the table's rule counters.
//! - [`cli`]: the command line.

pub mod agent;
pub mod cli;
pub mod compile;
pub mod dataplane;
pub mod flowlog;
pub mod flowmetrics;
pub mod hints;
pub mod http;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod source;

// The seeded generator of the cargo tests and the simulator, for the unit tests that compare
// an index with the plain scan on generated clusters.
#[cfg(test)]
#[path = "../tests/support/rng.rs"]
mod test_rng;

pub use compile::{Options as CompileOptions, Ruleset, compile};
pub use model::Snapshot;
pub use policy::{Flow, Verdict, evaluate};
