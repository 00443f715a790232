//! `kube-nftpol uninstall`: removes the agent's table from this node (run it on each node
//! after deleting the DaemonSet, or from a Job with the agent's image and capabilities).
//! Nothing else is touched: other tables, links and routes stay as they are.

use anyhow::Context as _;
use clap::Args;

use super::{Outcome, write_stdout};
use crate::compile::{TABLE_FAMILY, TABLE_NAME};
use crate::dataplane::nft::Nft;

/// Arguments of `uninstall` (none).
#[derive(Debug, Args)]
pub struct UninstallArgs {}

/// Deletes `inet kube-nftpol` if it exists and says what it did.
pub fn run(_args: &UninstallArgs) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let table = format!("{TABLE_FAMILY} {TABLE_NAME}");
    let message = runtime.block_on(async {
        let nft = Nft::default();
        let tables = nft.list_tables().await.context("listing nftables tables")?;
        if !tables.contains(&table) {
            return anyhow::Ok(format!("no table {table} on this node; nothing to do\n"));
        }
        nft.delete_table()
            .await
            .with_context(|| format!("deleting table {table}"))?;
        Ok(format!(
            "removed table {table}; pods on this node are no longer policed\n"
        ))
    })?;
    write_stdout(&message).context("writing to stdout")?;
    Ok(Outcome::Success)
}
