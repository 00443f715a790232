//! Shared test helpers.
pub mod cluster;
pub mod conformance;
pub mod interpret;
pub mod rng;
