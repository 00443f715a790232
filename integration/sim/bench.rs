//! The benchmarks that run on the node simulator, `#[ignore]`d so the root suites skip them;
//! `integration/bench/run.sh` runs them (in release mode, or `--quick` on the debug build).
//!
//! - [`dataplane`]: the per-packet cost of enforcement, the agent with 10,000 pods and 1,000
//!   policies against no agent in the same run, with its traffic ([`traffic`]), its table
//!   ([`report`]) and where its profiles' samples went ([`cpu_shares`]).
//! - [`programming`]: programming latency at cluster scale against a real API server, the
//!   agent's footprint, measured with [`usage`], and the revocation passes with the node's
//!   conntrack table full ([`tracked`]).
//! - [`profile`]: perf recordings, shared by both.

pub mod cpu_shares;
pub mod dataplane;
pub mod profile;
pub mod programming;
pub mod report;
pub mod tracked;
pub mod traffic;
pub mod usage;
