//! Suite 4: nothing is left behind, also when a test fails.
//!
//! - A test that panics with a cluster and a process inside a node namespace still deletes
//!   every namespace of its cluster and kills the process (the guards' `Drop`).
//! - Namespaces of a run that was killed (its pid gone) are removed at the start of the next
//!   run, with the processes still running in them.
//!
//! Both also hold for every other suite, which build their clusters with the same guards.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;

use crate::agent::NetnsProcess;
use crate::cluster::{self, Cluster, PodPlan};
use crate::netns::{self, Netns};
use crate::{NETNS_PREFIX, begin, runtime};

fn two_pods() -> Vec<PodPlan> {
    ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, name)| PodPlan {
            namespace: "x".to_owned(),
            name: (*name).to_owned(),
            ip: [10, 244, 1, 50 + u8::try_from(i).unwrap()].into(),
            service_ip: [10, 96, 0, 50 + u8::try_from(i).unwrap()].into(),
            node: i % cluster::NODES.len(),
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[test]
fn a_test_that_panics_leaves_no_namespace_or_process_behind() {
    let _serial = begin();
    let (tx, rx) = mpsc::channel();
    let test = std::thread::spawn(move || {
        runtime().block_on(async move {
            let cluster = Cluster::build(two_pods()).await.expect("cluster");
            let sleeper = NetnsProcess::spawn(
                cluster.nodes[0].netns.name(),
                Path::new("sleep"),
                vec!["600".to_owned()],
                cluster.scratch().join("sleep.log"),
            )
            .expect("sleep");
            tx.send((cluster.id.clone(), sleeper.pid().expect("pid")))
                .expect("send");
            panic!("deliberate panic with a cluster and a process up");
        });
    });
    assert!(test.join().is_err(), "the inner test was meant to panic");
    let (id, pid) = rx.recv().expect("the inner test built its cluster");
    let left: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{id}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!alive(pid), "process {pid} still runs");
}

#[test]
fn namespaces_of_a_killed_run_are_removed_with_their_processes() {
    let _serial = begin();
    // A pid that has just ended stands for the killed run.
    let mut done = Command::new("true").spawn().expect("true");
    let dead = done.id();
    done.wait().expect("true");
    assert!(!alive(dead));

    let name = format!("{NETNS_PREFIX}-{dead}-0-node-1");
    let stale = Netns::named(name.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sleeper = NetnsProcess::spawn(
        stale.name(),
        Path::new("sleep"),
        vec!["600".to_owned()],
        dir.path().join("sleep.log"),
    )
    .expect("sleep");
    // `ip netns pids` must see it before the removal can kill it.
    let pid = sleeper.pid().expect("pid");
    for _ in 0..100 {
        if netns::pids(&name).contains(&pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let removed = netns::remove_stale_namespaces(NETNS_PREFIX);
    assert!(removed.contains(&name), "not removed: {removed:?}");
    assert!(!netns::list().contains(&name), "{name} is still listed");
    let mut exited = None;
    for _ in 0..100 {
        exited = sleeper.exited();
        if exited.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        exited.is_some(),
        "the process inside the stale namespace still runs"
    );
}
