//! Network namespaces for the root suites: the root check, named namespaces deleted on drop,
//! and the removal of namespaces left behind by runs that were killed.
//!
//! Every suite names its namespaces `<prefix>-<pid>-...` (`knp-test-123-4`, `knp-sim-123-0-x-a`):
//! the pid says which test process owns them, so a later run can tell a dead run's leftovers
//! from a live run's namespaces and remove only the former. Deleting a namespace first kills
//! the processes still inside it (an agent started with `ip netns exec`), because a namespace
//! with processes in it outlives `ip netns del`.
//!
//! This module runs `ip` and `nft`; it does not build links or routes (the simulator does).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use kube_nftpol_core::compile::{TABLE_FAMILY, TABLE_NAME};

/// Fails the calling test loudly unless we are root and `ip` and `nft` run, and removes the
/// namespaces dead runs of `suite` left behind (names starting with `prefix-`). Checked once
/// per test process.
pub fn require_root(suite: &str, prefix: &str) {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
        // `Uid:` lists real, effective, saved and filesystem uid; netns and nft need euid 0.
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .ok_or("no Uid line in /proc/self/status")?;
        if euid != "0" {
            return Err(format!("not running as root (euid {euid})"));
        }
        for (tool, arg) in [("nft", "--version"), ("ip", "-V")] {
            match Command::new(tool).arg(arg).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => return Err(format!("`{tool} {arg}` failed: {}", stderr(&out))),
                Err(e) => return Err(format!("`{tool}` cannot be run: {e}")),
            }
        }
        remove_stale_namespaces(prefix);
        Ok(())
    });
    if let Err(why) = result {
        panic!(
            "\n\n*** {suite} needs root, `ip` (iproute2) and `nft` (nftables): {why}.\n\
             *** These tests do not pass silently; run them as root on a machine with nftables \
             (`sudo cargo test --test {suite}`).\n"
        );
    }
}

/// Deletes `<prefix>-<pid>-...` namespaces whose pid is gone (a run killed before its guards
/// could drop), with the processes still running in them. Namespaces of live runs are left
/// alone. Returns the names it removed.
pub fn remove_stale_namespaces(prefix: &str) -> Vec<String> {
    let mut removed = Vec::new();
    for name in list() {
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            eprintln!("removing stale network namespace {name}");
            delete(&name);
            removed.push(name);
        }
    }
    removed
}

/// The names `ip netns list` shows.
pub fn list() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    // Lines look like `knp-test-123-4` or `knp-test-123-4 (id: 7)`.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Pids of the processes whose network namespace is `name` (`ip netns pids`).
pub fn pids(name: &str) -> Vec<u32> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills every process inside `name` (never this one), then deletes the namespace. A
/// namespace already gone (removed by [`remove_stale_namespaces`]) is not an error.
fn delete(name: &str) {
    if !Path::new("/run/netns").join(name).exists() {
        return;
    }
    let me = std::process::id();
    for pid in pids(name).into_iter().filter(|p| *p != me) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .output();
    }
    match Command::new("ip").args(["netns", "del", name]).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!("ip netns del {name} failed: {}", stderr(&out)),
        Err(e) => eprintln!("ip netns del {name} could not run: {e}"),
    }
}

/// A network namespace of our own, deleted (with every table and process in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace named `<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self::named(format!("{prefix}-{}-{n}", std::process::id()))
    }

    /// A fresh namespace with this exact name (which should start with `<prefix>-<pid>-`, so
    /// a later run can clean up after a killed one).
    pub fn named(name: String) -> Self {
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        match out {
            Ok(out) if out.status.success() => Self { name },
            Ok(out) => panic!("ip netns add {name} failed: {}", stderr(&out)),
            Err(e) => panic!("ip netns add {name} could not run: {e}"),
        }
    }

    /// The name `ip netns` knows it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `PROGRAM ARGS` inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {program} could not run: {e}", self.name))
    }

    /// Runs `nft ARGS` inside the namespace.
    pub fn nft(&self, args: &[&str]) -> Output {
        self.exec("nft", args)
    }

    /// Runs `nft ARGS` and returns stdout, panicking with nft's stderr on failure.
    pub fn nft_ok(&self, args: &[&str], what: &str) -> String {
        let out = self.nft(args);
        assert!(
            out.status.success(),
            "nft {} rejected {what} (exit {:?}):\n{}",
            args.join(" "),
            out.status.code(),
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `nft list table inet kube-nftpol` as text.
    pub fn list_table(&self) -> String {
        self.nft_ok(&["list", "table", TABLE_FAMILY, TABLE_NAME], "list table")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// A command's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
