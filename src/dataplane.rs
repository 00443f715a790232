//! The dataplane: puts a compiled [`Ruleset`] into the kernel and keeps it there.
//!
//! It owns one table, `inet kube-nftpol`, and touches nothing else on the node. The first apply
//! and every full resync replace the table's content in one transaction without deleting the
//! base chains ([`transaction::full_replace`]); later changes are incremental
//! ([`transaction::incremental`]): only the set elements, map elements and chains that differ.
//! After each apply the table is read back and compared with what was asked
//! ([`readback::Summary`]); its [`readback::Fingerprint`] is kept, and [`Dataplane::check`]
//! compares it again later: a table someone else flushed, deleted or edited is replaced. An
//! incremental apply also compares the objects it did not touch with the kept fingerprint, so
//! an edit made since the last check is repaired there and then, not taken for ours.
//!
//! Shutting the agent down leaves the table in place: enforcement goes on until a new agent
//! takes it over (again in one transaction) or `kube-nftpol uninstall` removes it.

pub mod counters;
pub mod interfaces;
pub mod nft;
pub mod readback;
pub mod transaction;

use tracing::{debug, warn};

use crate::compile::Ruleset;
use nft::Nft;
use readback::{Fingerprint, Summary};
use transaction::{Plan, Touched};

/// Why the dataplane could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Running `nft` failed.
    #[error(transparent)]
    Nft(#[from] nft::Error),
    /// The table's listing could not be parsed.
    #[error("cannot read the table back")]
    Readback(#[from] readback::Error),
    /// After an apply, the kernel's table differs from what was applied.
    #[error("the table differs from the applied ruleset after applying it: {0}")]
    Mismatch(String),
    /// After an incremental apply, an object the update did not touch differs from the last
    /// verified table: someone else changed it.
    #[error("{0} was changed by someone else")]
    Tampered(String),
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The kernel already held the ruleset.
    Unchanged,
    /// Only these objects changed.
    Incremental(Touched),
    /// The table's content was replaced in one transaction.
    Full,
    /// Someone else had changed the table since the last verified apply; its content was
    /// replaced with the desired ruleset in one transaction.
    Repaired,
}

/// What a periodic check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Nothing applied yet.
    NotInstalled,
    /// The table is as the dataplane left it.
    Intact,
    /// Someone changed the table; it was replaced with the installed ruleset.
    Repaired,
}

/// The kernel side of the agent: the installed ruleset and how to change it.
#[derive(Debug, Default)]
pub struct Dataplane {
    nft: Nft,
    installed: Option<Ruleset>,
    fingerprint: Option<Fingerprint>,
}

impl Dataplane {
    /// A dataplane that calls `nft` through `nft`.
    pub fn new(nft: Nft) -> Self {
        Self {
            nft,
            installed: None,
            fingerprint: None,
        }
    }

    /// The ruleset in the kernel, as last applied and verified.
    pub fn installed(&self) -> Option<&Ruleset> {
        self.installed.as_ref()
    }

    /// Makes the kernel hold `desired`: incrementally when a ruleset is installed, by a full
    /// replace otherwise (or when the incremental script fails).
    pub async fn apply(&mut self, desired: &Ruleset) -> Result<Applied, Error> {
        if let Some(installed) = &self.installed {
            match transaction::incremental(installed, desired) {
                Plan::Nothing => return Ok(Applied::Unchanged),
                Plan::Script { script, touched } => match self.nft.apply(&script).await {
                    Ok(()) => match self.verify(desired, Some(&touched)).await {
                        Ok(()) => return Ok(Applied::Incremental(touched)),
                        Err(Error::Tampered(object)) => {
                            warn!(%object, "the table was changed by someone else; repairing it");
                            self.replace(desired).await?;
                            return Ok(Applied::Repaired);
                        }
                        Err(error) => return Err(error),
                    },
                    Err(error) => {
                        warn!(%error, "incremental update failed; replacing the table's content");
                    }
                },
                Plan::FullReplace => {}
            }
        }
        self.replace(desired).await?;
        Ok(Applied::Full)
    }

    /// Replaces the table's content with `desired` in one transaction.
    pub async fn replace(&mut self, desired: &Ruleset) -> Result<(), Error> {
        let current = match self.nft.list_table().await? {
            Some(listing) => Some(readback::parse(&listing)?.0),
            None => None,
        };
        let script = transaction::full_replace(current.as_ref(), desired);
        if let Err(error) = self.nft.apply(&script).await {
            // The kernel kept its previous table (transactions are all or nothing), which is
            // no longer known to match what we believe is installed.
            self.installed = None;
            self.fingerprint = None;
            return Err(error.into());
        }
        self.verify(desired, None).await
    }

    /// Compares the table with the installed ruleset's fingerprint and replaces its content
    /// when someone else changed it.
    pub async fn check(&mut self) -> Result<Check, Error> {
        let Some(installed) = self.installed.clone() else {
            return Ok(Check::NotInstalled);
        };
        let now = match self.nft.list_table().await? {
            Some(listing) => Some(readback::parse(&listing)?.1),
            None => None,
        };
        if now.is_some() && now == self.fingerprint {
            return Ok(Check::Intact);
        }
        warn!(
            table_exists = now.is_some(),
            "the table was changed by someone else; repairing it"
        );
        self.replace(&installed).await?;
        Ok(Check::Repaired)
    }

    /// Reads the table back and checks it holds `desired`; after an incremental update that
    /// changed only `touched`, also that nothing else changed since the last verified apply.
    async fn verify(&mut self, desired: &Ruleset, touched: Option<&Touched>) -> Result<(), Error> {
        let listing = self
            .nft
            .list_table()
            .await?
            .ok_or_else(|| Error::Mismatch("the table is missing".into()))?;
        let (summary, fingerprint) = readback::parse(&listing)?;
        let expected = Summary::of(desired);
        if summary != expected {
            self.installed = None;
            self.fingerprint = None;
            return Err(Error::Mismatch(describe_difference(&expected, &summary)));
        }
        if let (Some(touched), Some(before)) = (touched, &self.fingerprint)
            && let Some(object) = before.changed_besides(&fingerprint, touched)
        {
            self.installed = None;
            self.fingerprint = None;
            return Err(Error::Tampered(object));
        }
        debug!(
            chains = summary.chains.len(),
            sets = summary.sets.len(),
            "table verified"
        );
        self.installed = Some(desired.clone());
        self.fingerprint = Some(fingerprint);
        Ok(())
    }
}

/// The first difference between two summaries, for the error message.
fn describe_difference(expected: &Summary, actual: &Summary) -> String {
    for (name, rules) in &expected.chains {
        match actual.chains.get(name) {
            None => return format!("chain {name} missing"),
            Some(got) if got != rules => {
                return format!("chain {name}: expected {rules:?}, found {got:?}");
            }
            _ => {}
        }
    }
    if let Some(extra) = actual
        .chains
        .keys()
        .find(|n| !expected.chains.contains_key(*n))
    {
        return format!("unexpected chain {extra}");
    }
    for (kind, exp, got) in [
        ("set", &expected.sets, &actual.sets),
        ("map", &expected.maps, &actual.maps),
    ] {
        for (name, elements) in exp {
            match got.get(name) {
                None => return format!("{kind} {name} missing"),
                Some(g) if g != elements => {
                    return format!("{kind} {name}: expected {elements:?}, found {g:?}");
                }
                _ => {}
            }
        }
        if let Some(extra) = got.keys().find(|n| !exp.contains_key(*n)) {
            return format!("unexpected {kind} {extra}");
        }
    }
    "no difference found".into()
}
