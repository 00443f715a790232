//! The node simulator and the root suites that prove enforcement on real packets.
//!
//! A simulated cluster looks like kind with kindnet from the inside: two node namespaces joined
//! by a veth link, one namespace per pod plugged into its node with a routed ptp veth,
//! kube-proxy's Service DNAT in a table of its own on each node, and real TCP and UDP servers
//! (plus an SCTP observer) in every pod. Probes are real connections from one pod namespace to
//! another pod's IP or Service IP; the verdict is whatever the kernel did with the packets.
//!
//! Modules, one job each:
//! - [`links`]: links, addresses, routes and sysctls (namespaces: [`netns`], shared with
//!   `nft_accepts`);
//! - [`setns`]: creating sockets inside a namespace from this process;
//! - [`cluster`]: builds the cluster and writes its manifests;
//! - [`kube_proxy`]: the Service DNAT table;
//! - [`servers`] and [`sctp`]: what runs in the pods, and SCTP INITs on the wire;
//! - [`probes`]: TCP, UDP and SCTP probes, many at once; [`steady`]: probe loops under
//!   change, every attempt timed; [`streams`]: long-lived TCP and UDP connections whose ends
//!   both send and check numbered messages;
//! - [`scenario`]: the hand-written policies and flows of the restart and change suites;
//! - [`agent`]: processes inside node namespaces (the agent under test);
//! - [`enforcer`]: what loads policy into the kernels, pluggable ([`enforcer::Mode`]);
//! - [`nft`]: `nft` in a namespace and reading the table back;
//! - the suites: [`suite_conformance`] (58 upstream cases), [`suite_cnp_conformance`] (the
//!   ClusterNetworkPolicy conformance suite of network-policy-api v0.2.0, 24 tests), [`suite_restart`] (agent killed
//!   under traffic), [`suite_policy_change`] (one policy changed, other chains untouched),
//!   [`suite_cleanup`] (nothing is left behind), [`suite_flood`] (100,000 denied packets
//!   against the agent: allowed traffic, its memory and its drop log stay fine),
//!   [`suite_audit_metrics`] (flow metrics and audit mode, with the agent: `/metrics` and the
//!   drop log read from the nodes), [`suite_spoof`] (pods forging another pod's address or an
//!   allowed block's are dropped at their veth), [`suite_tamper`] (the agent's table flushed,
//!   deleted or edited behind its back: repaired within the interval, the gap measured),
//!   [`suite_churn`] (1,000 pods with reused IPs and changing policies through the API server:
//!   nothing wrongly allowed, the final table exactly the compiled one), [`suite_revoke`]
//!   (changes that deny end established TCP and UDP connections at both ends, through pod and
//!   Service IPs, logged as `revoke`; allowed ones never notice, even under a flood of
//!   changes), [`suite_hostile`]
//!   (invalid and extreme policies and names: fail closed, verdicts equal `evaluate`, errors
//!   reported).
//! - [`bench`]: the benchmarks that run on the simulator, `#[ignore]`d
//!   (`integration/bench/run.sh` runs them): the per-packet cost of enforcement and the
//!   programming latency and footprint at cluster scale, both on the test-support crate's
//!   `ScaleCluster`.
//!
//! Running: as root, `cargo test --test sim` (it is `test = false`, so a plain `cargo test`
//! skips it). The suites run one at a time (they share the machine's 2 cores and time
//! probes); their results tables go to stderr even without `--nocapture`. Not root, no `ip` or
//! no `nft`: every suite fails loudly.
//!
//! Enforcer modes: the conformance suite runs with the static compile (`kube-nftpol compile`
//! and `nft -f`); the restart and policy-change suites with the library's dataplane in this
//! process. The same suites in agent mode, with a real `kube-nftpol agent` process in each node,
//! are the tests named `..._with_the_agent` (`KNP_SIM_AGENT_BIN=/path/to/kube-nftpol` points
//! them at an agent built elsewhere).

use kube_nftpol_test_support::{
    apiserver, cnp_conformance as cnp_data, conformance as conformance_data,
    hostile as hostile_data, netns, rng,
};

mod agent;
mod api;
mod bench;
mod cluster;
mod daemonset;
mod enforcer;
mod kube_proxy;
mod links;
mod nft;
mod probes;
mod scenario;
mod sctp;
mod servers;
mod setns;
mod steady;
mod streams;

mod suite_api;
mod suite_audit_metrics;
mod suite_churn;
mod suite_cleanup;
mod suite_cnp_conformance;
mod suite_conformance;
mod suite_flood;
mod suite_hints;
mod suite_hostile;
mod suite_observe;
mod suite_policy_change;
mod suite_restart;
mod suite_revoke;
mod suite_spoof;
mod suite_tamper;

use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Errors of the harness: what failed, with its context, for the test's panic message.
pub type Result<T, E = String> = std::result::Result<T, E>;

/// Every namespace of this suite is named `knp-sim-<pid>-<cluster>-<node or pod>`.
pub const NETNS_PREFIX: &str = "knp-sim";

/// Starts a root suite: fails loudly unless root with `ip` and `nft`, removes what killed runs
/// left behind (once), and holds the lock that runs the suites one at a time.
pub fn begin() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    netns::require_root("sim", NETNS_PREFIX);
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The runtime a suite's async code runs on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
}

/// An error with its sources, `outer: inner: ...`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Writes to stderr directly, past the test harness's output capture: results tables and
/// progress show up whether the test passes or fails.
pub fn say(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.write_all(b"\n");
}
