//! The pure core of kube-nftpol: everything that decides, nothing that does I/O.
//!
//! ```text
//! Kubernetes objects -> model::Snapshot -> compile::compile -> compile::Ruleset (nft text/JSON)
//!                                       \-> policy::evaluate (explain, hints, tests)
//! drop/flow log lines <-> flow_line::FlowLine -> hints::suggest -> NetworkPolicies
//!                                        \-> flows::Window -> flows::by_workload
//!                                        \-> graph::build -> DOT, Mermaid, JSON
//! model::Snapshot -> lint::lint -> lint::Finding (text, JSON, SARIF)
//! ```
//!
//! - [`model`]: the cluster snapshot and the shared vocabulary (labels, selectors, directions,
//!   protocols, the validated policy data, a node's pod interfaces).
//! - [`policy`]: NetworkPolicy semantics: validation of Kubernetes objects, matching, and
//!   [`policy::evaluate`], the verdict for one flow with its reasons.
//! - [`compile`](mod@compile): a snapshot and a node to the node's desired nftables ruleset, deterministic,
//!   rendered as `nft` text or libnftables JSON.
//! - [`manifest`]: Kubernetes manifests (YAML or JSON text) to a snapshot.
//! - [`flow_line`]: the drop and flow log's line, one type written by the agent and read by
//!   `suggest`, `explain --drop-log` and the hints.
//! - [`hints`]: denied flows to suggested NetworkPolicies.
//! - [`revoke`]: which established connections a policy change takes away.
//! - [`flows`]: recent distinct flows: an agent's bounded window, what its `/flows` serves, and
//!   the flows of many agents merged by workload.
//! - [`lru`]: the bounded map of recent entries the flow windows share.
//! - [`lint`]: NetworkPolicy mistakes and gaps in a cluster's isolation, as findings with a
//!   rule id, a severity, the object and field, and the fix.
//! - [`graph`]: flow lines to the workload graph (DOT, Mermaid, JSON), with a preview of what
//!   candidate policies would deny.
//!
//! The agent, its sources, the dataplane and the command line live in the `kube-nftpol` crate
//! around this one. This crate depends on no async runtime, Kubernetes client, netlink or
//! nftables crate; the test command checks that with `cargo tree`.

pub mod compile;
pub mod flow_line;
pub mod flows;
pub mod graph;
pub mod hints;
pub mod lint;
pub mod lru;
pub mod manifest;
pub mod model;
pub mod policy;
pub mod revoke;

pub use compile::{Options as CompileOptions, Ruleset, compile};
pub use model::Snapshot;
pub use policy::{Flow, Verdict, evaluate};
