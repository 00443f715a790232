//! Helpers shared by the tests and benchmarks of kube-nftpol's crates. Dev-only: no release
//! build links it.
//!
//! - [`rng`]: the seeded generator behind every generated cluster and flow.
//! - [`cluster`]: small clusters built by hand (pods, namespaces, policies from JSON).
//! - [`scale_cluster`]: the one cluster-scale generator of the benchmarks (10,000 pods).
//! - [`conformance`]: the upstream Kubernetes e2e cases as data, read from
//!   `../shared/conformance/upstream.json` beside the repository.
//! - [`cnp_conformance`]: the ClusterNetworkPolicy conformance suite of network-policy-api
//!   v0.2.0 as data (`data/cnp-conformance/`), and the player that turns its tests into the
//!   cluster states each probe runs against, for every runner (evaluator, simulator, a real
//!   cluster).
//! - [`hostile`]: a cluster of invalid and extreme policies and names.
//! - [`interpret`]: a reference interpreter of a compiled ruleset, to check the compiler
//!   against [`kube_nftpol_core::evaluate`] without a kernel; [`topology`]: nodes with their
//!   rulesets and the path of a packet through them.
//! - [`netns`]: network namespaces for the root suites (`ip netns`, `nft`).
//! - [`nft`]: `nft` in a namespace from async code: the node simulator's runner.
//! - [`apiserver`]: a real kube-apiserver and etcd for the suites that talk to Kubernetes.

pub mod apiserver;
pub mod cluster;
pub mod cnp_conformance;
pub mod conformance;
pub mod hostile;
pub mod interpret;
pub mod netns;
pub mod nft;
pub mod rng;
pub mod scale_cluster;
pub mod topology;

use std::path::PathBuf;

/// The repository's root directory (the workspace root), for files the tests read.
pub fn repository_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}
