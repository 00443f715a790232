//! Shared test helpers.
pub mod cluster;
pub mod conformance;
pub mod hostile;
pub mod interpret;
pub mod rng;
