//! The linter: NetworkPolicy mistakes and gaps in a cluster's isolation, found before they
//! ship. A snapshot and a [`Config`] in, sorted [`Finding`]s out; pure, no I/O. The
//! `kube-nftpol lint` command prints them (text, JSON, SARIF) and the agent counts them by rule
//! and severity as its posture metric.
//!
//! The rules ([`RuleId`] lists them with their ids and default severities; `docs/lint.md`
//! says why each matters) judge with the engine's own semantics: the validator's field errors,
//! the matching helpers of [`crate::policy`], and [`crate::policy::evaluate`] for what isolated
//! pods can reach. One module per family:
//!
//! - `invalid`: what the validator rejects (`invalid-policy`);
//! - `posture`: namespaces without a default deny, pods no policy selects;
//! - `dns`: egress isolation without DNS to the cluster's resolver, or on UDP only;
//! - `metadata`: the cloud metadata address reachable from restricted egress;
//! - `unmatched`: selectors and named ports that match nothing in the cluster;
//! - `broad`: `0.0.0.0/0`, `namespaceSelector: {}`, rules open on every port or to everything;
//! - `shadowed`: rules another policy already allows in full (`cover` decides containment).
//!
//! Beside them: `context` (what every rule reads, and the field paths findings name), `probe`
//! (the snapshot with witness pods for flows from policies that select nothing), `config` (the
//! YAML config), `finding` and `rule_id` (what is reported), and the outputs: [`report`] (text
//! and JSON) and [`sarif`].
//!
//! Field paths are the ones the validator uses (`spec.egress[0].to[1]`); with the manifests'
//! [`crate::manifest::Locations`] the outputs turn them into file and line.

mod broad;
mod config;
mod context;
mod cover;
mod dns;
mod finding;
mod invalid;
mod metadata;
mod posture;
mod probe;
pub mod report;
mod rule_id;
pub mod sarif;
mod shadowed;
mod unmatched;

pub use config::{Config, Error as ConfigError, Level, Resolver};
pub use finding::{Counts, Finding, Severity};
pub use rule_id::RuleId;

use crate::model::Snapshot;
use context::Context;

/// Every finding of the rules the config leaves on, at the config's severities, sorted by
/// object, field, rule and message, without duplicates.
pub fn lint(snapshot: &Snapshot, config: &Config) -> Vec<Finding> {
    let context = Context::new(snapshot, config);
    let mut findings = Vec::new();
    invalid::check(&context, &mut findings);
    posture::check(&context, &mut findings);
    dns::check(&context, &mut findings);
    metadata::check(&context, &mut findings);
    unmatched::check(&context, &mut findings);
    broad::check(&context, &mut findings);
    shadowed::check(&context, &mut findings);
    findings.retain_mut(|finding| match config.severity(finding.rule) {
        Some(severity) => {
            finding.severity = severity;
            true
        }
        None => false,
    });
    findings.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    findings.dedup();
    findings
}

#[cfg(test)]
mod tests;
