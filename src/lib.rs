//! kube-nftpol: Kubernetes NetworkPolicy enforcement with nftables. This crate is the agent and
//! the command line around the pure core ([`kube_nftpol_core`], re-exported here as
//! [`model`], [`policy`], [`compile`], [`manifest`], [`flow_line`], [`flows`], [`hints`],
//! [`lint`], [`graph`] and [`revoke`]).
//!
//! Data flows one way:
//!
//! ```text
//! source (API watch, manifests) -> model::Snapshot -> compile -> dataplane (nftables)
//! kernel -> flowlog (NFLOG) -> drop log lines, metrics, /flows and /hints, Events
//! ```
//!
//! - [`source`]: where snapshots come from: the Kubernetes API ([`source::kubernetes`]) or a
//!   directory of manifests.
//! - [`dataplane`]: puts a compiled ruleset in the kernel, atomically and incrementally, reads
//!   it back and repairs it; learns the pods' interfaces from the node's routes.
//! - [`flowlog`]: NFLOG records of default-deny drops to deduplicated flow lines naming both
//!   ends and the isolating policies.
//! - [`flowmetrics`]: allowed and denied flow counters from the table's rule counters.
//! - [`events`]: the Kubernetes Events the agent writes (invalid policies, denied flows).
//! - [`metrics`]: the one registry the subsystems register their metrics into.
//! - [`http`]: the read-only endpoints.
//! - [`access`]: who may read the agent's flows (`/flows`, `/hints`): Kubernetes bearer tokens,
//!   reviewed by the API server.
//! - [`agent`]: the node agent, wiring the above; it owns the state they share.
//! - [`ui`]: the local page of `kube-nftpol ui` (the flow graph, the flows to tick, their
//!   policies), served on loopback.
//! - [`cli`]: the command line.

pub mod access;
pub mod agent;
pub mod cli;
pub mod dataplane;
pub mod events;
pub mod flowlog;
pub mod flowmetrics;
pub mod http;
pub mod metrics;
pub mod source;
pub mod ui;

pub use kube_nftpol_core::{
    CompileOptions, Flow, Ruleset, Snapshot, Verdict, compile, evaluate, flow_line, flows, graph,
    hints, lint, manifest, model, policy, revoke,
};
