//! The flags that shape the node's ruleset, one set for `agent` (which installs it) and
//! `compile` (which prints what the agent would install with the same flags).

use clap::Args;

use crate::compile::Options;

/// How the ruleset logs, audits, observes and revokes.
#[derive(Debug, Clone, Args)]
pub struct RulesetFlags {
    /// NFLOG group that default-deny drops (and observed and revoked flows) are logged to
    #[arg(long, value_name = "GROUP", default_value_t = Options::default().nflog_group)]
    pub nflog_group: u16,
    /// Audit every namespace: default deny logs (`"action":"audit"`) and counts what it would
    /// drop, and lets it through. Without it, only namespaces annotated
    /// `kube-nftpol.io/enforcement: audit` are audited
    #[arg(long)]
    pub audit: bool,
    /// Observe every namespace: log the first packet of every new connection of every pod
    /// with its verdict (`"action":"allow"` with the rule that allowed it, or not isolated;
    /// denials are always logged). Without it, only namespaces annotated
    /// `kube-nftpol.io/observe: "true"` are observed
    #[arg(long)]
    pub observe: bool,
    /// Leave established connections alone when a change denies them. Without it, the agent
    /// ends them after each change (deletes their conntrack entries; their next packets get a
    /// TCP reset or an ICMP port unreachable) and logs each with `"action":"revoke"`, and the
    /// ruleset has the revoked-connection sets and chain this needs
    #[arg(long)]
    pub keep_established: bool,
}

impl RulesetFlags {
    /// The compiler options these flags select.
    pub fn options(&self) -> Options {
        Options {
            nflog_group: self.nflog_group,
            audit_all: self.audit,
            observe_all: self.observe,
            revoke_established: !self.keep_established,
            ..Options::default()
        }
    }
}
