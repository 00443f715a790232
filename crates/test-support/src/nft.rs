//! `nft` run inside a network namespace, from async code: the node simulator's runner, and the
//! root suites' way of loading and listing tables (`ip netns exec NS nft ...`).

use std::process::Stdio;

use kube_nftpol_core::compile::{TABLE_FAMILY, TABLE_NAME};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Errors as the suites print them: what failed, with nft's stderr.
pub type Result<T, E = String> = std::result::Result<T, E>;

/// Runs `nft ARGS` inside `netns` with `stdin` as its input; stdout, or nft's stderr as the
/// error.
pub async fn run(netns: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft"])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run nft in {netns}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| format!("cannot write to nft in {netns}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("nft in {netns}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "nft {} in {netns} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Applies a script as one transaction (`nft -f -`).
pub async fn apply(netns: &str, script: &str) -> Result<()> {
    run(netns, &["-f", "-"], Some(script)).await.map(drop)
}

/// `nft -j list table inet kube-nftpol` (rule handles included); `None` without the table.
pub async fn list_table(netns: &str) -> Result<Option<String>> {
    match run(
        netns,
        &["-j", "list", "table", TABLE_FAMILY, TABLE_NAME],
        None,
    )
    .await
    {
        Ok(listing) => Ok(Some(listing)),
        Err(e) if e.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}
