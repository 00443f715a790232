//! The dataplane: puts a compiled [`Ruleset`] into the kernel and keeps it there.
//!
//! It owns one table, `inet kube-nftpol`, and touches nothing else on the node. The first apply
//! and every full resync replace the table's content in one transaction without deleting the
//! base chains ([`transaction::full_replace`]); later changes are incremental
//! ([`transaction::incremental`]): only the set elements, map elements and chains that differ.
//! After each apply what it wrote is read back and compared with what was asked
//! ([`readback::Summary`]): the whole table after a full apply, only the objects it changed
//! after a small incremental one (reading 10,000 elements back after every small change would
//! cost more than the change; a change of more than [`MAX_READBACK_CALLS`] objects reads the
//! whole table). The table's [`readback::Fingerprint`] is kept per object, each entry read from
//! the kernel right after the object was written, and [`Dataplane::check`] compares a full
//! listing with it later: a table someone else flushed, deleted or edited is replaced, whatever
//! apply came before. The check lists nothing while the namespace's ruleset generation
//! ([`kernel::Kernel::generation`], moved by one by every commit to any table) is still the one
//! the last verification saw: an idle agent checks with one netlink request instead of a
//! listing of 10,000 elements. An incremental apply keeps that generation only when its own
//! commit was the only one since (the generation moved by exactly one); otherwise the next
//! check reads the whole table. An edit made since the last check is never taken for ours: a
//! small update does not read the objects it did not write (their entries stay as verified),
//! and an update that reads the whole table compares those objects with the kept fingerprint
//! and repairs the table there and then.
//!
//! Shutting the agent down leaves the table in place: enforcement goes on until a new agent
//! takes it over (again in one transaction) or `kube-nftpol uninstall` removes it.
//!
//! # Modules
//!
//! Dependencies point down this list, never up: a module uses only modules below it, and
//! none uses this one.
//!
//! - this module: [`Dataplane`], which decides between a full and an incremental apply, runs
//!   it, verifies it, checks the table and repairs it. The only one that joins building
//!   scripts, reading listings and I/O.
//! - [`transaction`] (pure): builds the `nft -f` script from rulesets: [`transaction::Plan`],
//!   with the objects it touches.
//! - [`readback`] (pure): reads a JSON listing into a [`readback::Summary`] and a
//!   [`readback::Fingerprint`] and compares them.
//! - [`nft`] (I/O): runs the `nft` binary: scripts in, listings out. Carries a
//!   [`kernel::Kernel`] for the same network namespace.
//! - [`kernel`] (I/O): asks nf_tables over netlink what must cost microseconds.
//! - [`objects`]: the names of the table's objects ([`objects::TableObjects`],
//!   [`objects::Touched`]), the vocabulary the modules above share. Uses none of them.
//!
//! ```text
//! dataplane ──> transaction ───────────> objects
//!           ──> readback ──────────────> objects
//!           ──> nft ──────> kernel ────> objects
//! ```
//!
//! [`interfaces`] stands apart: the node's pod-IP-to-veth mapping, learned over rtnetlink for
//! the agent, which uses none of the others and is used by none of them. So does
//! [`conntrack`]: the node's tracked connections over ctnetlink, listed and deleted for the
//! agent's revocation pass.

pub mod conntrack;
pub mod interfaces;
pub mod kernel;
pub mod nft;
pub mod objects;
pub mod readback;
pub mod transaction;

use std::collections::BTreeMap;

use tracing::{debug, warn};

use crate::compile::Ruleset;
use nft::Nft;
use objects::{TableObjects, Touched};
use readback::{Fingerprint, Summary};
use transaction::Plan;

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
    /// The namespace's ruleset generation when the kernel's table was last known to match
    /// `fingerprint`: while the kernel still reports it, no commit has happened since, and
    /// [`Dataplane::check`] needs no listing.
    generation: Option<u32>,
}

impl Dataplane {
    /// A dataplane that calls `nft` through `nft`.
    pub fn new(nft: Nft) -> Self {
        Self {
            nft,
            installed: None,
            fingerprint: None,
            generation: None,
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
                    Ok(()) => match self.verify_touched(desired, &touched).await {
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
        let current = self.current_objects().await?;
        let script = transaction::full_replace(current.as_ref(), desired);
        if let Err(error) = self.nft.apply(&script).await {
            // The kernel kept its previous table (transactions are all or nothing), which is
            // no longer known to match what we believe is installed.
            self.forget();
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
        let generation = self.current_generation().await;
        if generation.is_some() && generation == self.generation {
            return Ok(Check::Intact);
        }
        let now = match self.nft.list_table().await? {
            Some(listing) => Some(readback::parse(&listing)?.1),
            None => None,
        };
        if now.is_some() && now == self.fingerprint {
            // Some commit happened (another table's, most likely), but not to ours.
            self.generation = generation;
            return Ok(Check::Intact);
        }
        warn!(
            table_exists = now.is_some(),
            "the table was changed by someone else; repairing it"
        );
        self.replace(&installed).await?;
        Ok(Check::Repaired)
    }

    /// After an incremental apply: reads back only the objects it wrote, compares them with
    /// `desired`, and updates their fingerprint entries. Reads the whole table instead when the
    /// change is large or no fingerprint is known.
    async fn verify_touched(&mut self, desired: &Ruleset, touched: &Touched) -> Result<(), Error> {
        let expected = Summary::of(desired);
        let mut written = Summary::default();
        let mut replaced = Vec::new();
        take_touched(
            "chain",
            &touched.chains,
            &expected.chains,
            &mut written.chains,
            &mut replaced,
        );
        take_touched(
            "set",
            &touched.sets,
            &expected.sets,
            &mut written.sets,
            &mut replaced,
        );
        take_touched(
            "map",
            &touched.maps,
            &expected.maps,
            &mut written.maps,
            &mut replaced,
        );
        // One `nft` call per object: nftables 1.0.6 narrows its cache to the object a `list`
        // command names, so a second `list` in the same call fails ("No such file").
        let calls: Vec<(&str, &str)> = [
            ("chain", written.chains.keys().collect::<Vec<_>>()),
            ("set", written.sets.keys().collect()),
            ("map", written.maps.keys().collect()),
        ]
        .into_iter()
        .flat_map(|(kind, names)| names.into_iter().map(move |name| (kind, name.as_str())))
        .collect();
        if calls.len() > MAX_READBACK_CALLS || self.fingerprint.is_none() {
            return self.verify(desired, Some(touched)).await;
        }
        // Exactly one commit since the table was last verified: the update just applied.
        let after_update = self.current_generation().await;
        let only_ours = match (self.generation, after_update) {
            (Some(verified), Some(now)) => now == verified.wrapping_add(1),
            _ => false,
        };
        // The listings only read, so they run side by side (in order of the calls).
        let parts = futures::future::join_all(
            calls
                .iter()
                .map(|(kind, name)| self.nft.list_object(kind, name)),
        )
        .await;
        let mut listing = String::new();
        for part in parts {
            match part {
                Ok(part) => listing.push_str(&part),
                Err(error) => {
                    self.forget();
                    return Err(error.into());
                }
            }
        }
        let (summary, part) = if listing.is_empty() {
            (Summary::default(), Fingerprint::default())
        } else {
            readback::parse(&listing)?
        };
        if summary != written {
            self.forget();
            return Err(Error::Mismatch(describe_difference(&written, &summary)));
        }
        if let Some(fingerprint) = &mut self.fingerprint {
            fingerprint.update(part, replaced);
        }
        debug!(calls = calls.len(), "changed objects verified");
        self.installed = Some(desired.clone());
        // Otherwise someone else committed too: the next check reads the whole table.
        self.generation = if only_ours { after_update } else { None };
        Ok(())
    }

    /// Reads the table back and checks it holds `desired`; after an incremental update that
    /// changed only `touched`, also that nothing else changed since the last verified apply.
    async fn verify(&mut self, desired: &Ruleset, touched: Option<&Touched>) -> Result<(), Error> {
        // Read before the listing: a commit after it makes the kernel report another one.
        let generation = self.current_generation().await;
        let listing = self
            .nft
            .list_table()
            .await?
            .ok_or_else(|| Error::Mismatch("the table is missing".into()))?;
        let (summary, fingerprint) = readback::parse(&listing)?;
        let expected = Summary::of(desired);
        if summary != expected {
            self.forget();
            return Err(Error::Mismatch(describe_difference(&expected, &summary)));
        }
        if let (Some(touched), Some(before)) = (touched, &self.fingerprint)
            && let Some(object) = before.changed_besides(&fingerprint, touched)
        {
            self.forget();
            return Err(Error::Tampered(object));
        }
        debug!(
            chains = summary.chains.len(),
            sets = summary.sets.len(),
            "table verified"
        );
        self.installed = Some(desired.clone());
        self.fingerprint = Some(fingerprint);
        self.generation = generation;
        Ok(())
    }

    /// The chains, sets and maps the table holds now (what a full replace deletes): asked over
    /// netlink, or read from a listing when the kernel cannot say.
    async fn current_objects(&self) -> Result<Option<TableObjects>, Error> {
        match self.nft.kernel().table_objects().await {
            Ok(objects) => return Ok(objects),
            Err(error) => {
                debug!(%error, "cannot ask the kernel for the table's objects; listing it")
            }
        }
        Ok(match self.nft.list_table().await? {
            Some(listing) => Some(TableObjects::from(&readback::parse(&listing)?.0)),
            None => None,
        })
    }

    /// The namespace's ruleset generation now; `None` when the kernel cannot say (then every
    /// check reads the whole table, as it would without it).
    async fn current_generation(&self) -> Option<u32> {
        match self.nft.kernel().generation().await {
            Ok(generation) => Some(generation),
            Err(error) => {
                debug!(%error, "cannot read the ruleset generation");
                None
            }
        }
    }

    /// Forgets what is installed: the next apply replaces the table's content.
    fn forget(&mut self) {
        self.installed = None;
        self.fingerprint = None;
        self.generation = None;
    }
}

/// Above this many `nft` calls to read the changed objects back, an incremental apply reads
/// the whole table instead (one listing of everything then costs less).
const MAX_READBACK_CALLS: usize = 4;

/// Splits the `names` of one kind an incremental apply touched into those that exist in the
/// `expected` table (copied into `written`, to be read back), and adds the fingerprint keys of
/// all of them to `replaced` (the entries the read-back replaces; deleted objects just go).
fn take_touched<V: Clone>(
    kind: &str,
    names: &[String],
    expected: &BTreeMap<String, V>,
    written: &mut BTreeMap<String, V>,
    replaced: &mut Vec<String>,
) {
    for name in names {
        replaced.extend(Fingerprint::keys(kind, name));
        if let Some(content) = expected.get(name) {
            written.insert(name.clone(), content.clone());
        }
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
