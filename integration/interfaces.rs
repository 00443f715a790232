//! Root-only check that [`interfaces::watch`] follows the kernel: links and routes made with
//! `ip` in a network namespace of its own show up in (and leave) the pod-IP-to-veth mapping
//! within [`DEADLINE`].
//!
//! The watcher runs on a thread that has entered the namespace (`setns`), in a current-thread
//! Tokio runtime, so its rtnetlink socket belongs to that namespace; pod ends of the veths go to
//! a second scratch namespace. Both are named `knp-if-<pid>[-pod]` and deleted on drop, also
//! when an assertion fails. Needs root and `ip` (iproute2); without them it fails loudly
//! instead of passing. `cargo test` skips this target (`test = false` in Cargo.toml); run it
//! with `cargo test --test interfaces`.

use std::fs::File;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kube_nftpol::dataplane::interfaces::{self, PodInterfaces};
use nix::sched::{CloneFlags, setns};
use tokio::sync::watch;

/// How long a change may take to reach the mapping.
const DEADLINE: Duration = Duration::from_secs(2);

/// Fails the test loudly unless we are root and `ip` runs.
fn require_root_and_ip() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    // `Uid:` lists real, effective, saved and filesystem uid; network namespaces need euid 0.
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("unknown");
    let why = if euid != "0" {
        Some(format!("not running as root (euid {euid})"))
    } else {
        match Command::new("ip").arg("-V").output() {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!("`ip -V` failed: {}", stderr(&out))),
            Err(e) => Some(format!("`ip` cannot be run: {e}")),
        }
    };
    if let Some(why) = why {
        panic!(
            "\n\n*** the interfaces suite needs root and `ip` (iproute2): {why}.\n\
             *** It does not pass silently; run it as root (`sudo cargo test --test interfaces`).\n"
        );
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// Runs `ip ARGS`, failing the test with `ip`'s stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`ip {}` could not run: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        stderr(&out)
    );
}

/// Deletes `knp-if-<pid>[-pod]` namespaces left by an earlier run that was killed before its
/// guard could drop (its pid is gone). Namespaces of live runs are left alone.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // Lines look like `knp-if-123`, `knp-if-123-pod` or `knp-if-123 (id: 7)`.
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("knp-if-")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            eprintln!("removing stale network namespace {name}");
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// The node namespace the watcher runs in and the namespace holding the pod ends of the veths;
/// both deleted on drop.
struct Namespaces {
    node: String,
    pod: String,
}

impl Namespaces {
    fn new() -> Self {
        let node = format!("knp-if-{}", std::process::id());
        let pod = format!("{node}-pod");
        ip(&["netns", "add", &node]);
        // From here on, a failure deletes the node namespace through the guard.
        let mut guard = Self {
            node,
            pod: String::new(),
        };
        ip(&["netns", "add", &pod]);
        guard.pod = pod;
        guard
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.node, &self.pod] {
            if name.is_empty() {
                continue;
            }
            match Command::new("ip").args(["netns", "del", name]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!("ip netns del {name} failed: {}", stderr(&out)),
                Err(e) => eprintln!("ip netns del {name} could not run: {e}"),
            }
        }
    }
}

/// Runs [`interfaces::watch`] on a thread inside `netns`; it ends once the receiver is dropped.
fn spawn_watcher(netns: &str) -> (watch::Receiver<PodInterfaces>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(PodInterfaces::new());
    let path = format!("/run/netns/{netns}");
    let thread = std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a Tokio runtime");
        runtime.block_on(interfaces::watch(tx));
    });
    (rx, thread)
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mapping(pairs: &[(&str, &str)]) -> PodInterfaces {
    pairs
        .iter()
        .map(|(ip, name)| (addr(ip), (*name).to_owned()))
        .collect()
}

/// Waits until the watcher has sent `expected`; fails with what it holds after [`DEADLINE`].
fn wait_for(rx: &mut watch::Receiver<PodInterfaces>, expected: &PodInterfaces, step: &str) {
    let start = Instant::now();
    loop {
        if *rx.borrow_and_update() == *expected {
            eprintln!("{step}: after {} ms", start.elapsed().as_millis());
            return;
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "{step}: the mapping is not {expected:?} after {DEADLINE:?}; it is {:?}",
                *rx.borrow()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn mapping_follows_veth_routes_and_links() {
    require_root_and_ip();
    remove_stale_namespaces();
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "kube_nftpol=debug".into()),
        )
        .try_init();

    let ns = Namespaces::new();
    let (node, pod) = (ns.node.as_str(), ns.pod.as_str());
    // A veth pair like a CNI's: host end in the node namespace, pod end in the pod namespace.
    let add_veth = |host: &str, peer: &str| {
        ip(&[
            "-n", node, "link", "add", host, "type", "veth", "peer", "name", peer, "netns", pod,
        ]);
        ip(&["-n", node, "link", "set", host, "up"]);
        ip(&["-n", pod, "link", "set", peer, "up"]);
        // kindnet puts the gateway address on every veth: a /32 in the local table, no pod.
        ip(&["-n", node, "addr", "add", "10.244.1.1/32", "dev", host]);
    };

    // Present before the watcher starts: the first dump must find it.
    add_veth("vethpre", "eth9");
    ip(&[
        "-n",
        node,
        "route",
        "add",
        "10.244.1.9/32",
        "dev",
        "vethpre",
    ]);

    let (mut rx, watcher) = spawn_watcher(node);
    let start = Instant::now();
    while !rx.has_changed().unwrap_or(false) {
        assert!(
            start.elapsed() < DEADLINE,
            "the watcher sent no mapping within {DEADLINE:?} (first dump)"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        *rx.borrow_and_update(),
        mapping(&[("10.244.1.9", "vethpre")]),
        "first dump"
    );

    add_veth("vethx", "eth0");
    ip(&["-n", node, "route", "add", "10.244.1.5/32", "dev", "vethx"]);
    ip(&[
        "-n",
        node,
        "-6",
        "route",
        "add",
        "fd00:10:244:1::5/128",
        "dev",
        "vethx",
    ]);
    wait_for(
        &mut rx,
        &mapping(&[
            ("10.244.1.9", "vethpre"),
            ("10.244.1.5", "vethx"),
            ("fd00:10:244:1::5", "vethx"),
        ]),
        "IPv4 /32 and IPv6 /128 routes to a veth added",
    );

    ip(&["-n", node, "route", "del", "10.244.1.5/32", "dev", "vethx"]);
    wait_for(
        &mut rx,
        &mapping(&[("10.244.1.9", "vethpre"), ("fd00:10:244:1::5", "vethx")]),
        "IPv4 route deleted",
    );

    // `ip route replace` moves a pod IP to another veth: one RTM_NEWROUTE with NLM_F_REPLACE.
    ip(&[
        "-n",
        node,
        "route",
        "replace",
        "10.244.1.9/32",
        "dev",
        "vethx",
    ]);
    wait_for(
        &mut rx,
        &mapping(&[("10.244.1.9", "vethx"), ("fd00:10:244:1::5", "vethx")]),
        "route replaced by one through another veth",
    );

    // Deleting the link takes its IPv4 routes without any RTM_DELROUTE.
    ip(&["-n", node, "route", "add", "10.244.1.5/32", "dev", "vethx"]);
    ip(&["-n", node, "link", "del", "vethx"]);
    wait_for(&mut rx, &PodInterfaces::new(), "veth deleted");

    // Routes through a bridge map nothing. The veth route added after them tells when the
    // watcher has seen them, as it applies notifications in order.
    ip(&["-n", node, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", node, "link", "set", "br0", "up"]);
    ip(&["-n", node, "route", "add", "10.244.2.0/24", "dev", "br0"]);
    ip(&["-n", node, "route", "add", "10.244.2.7/32", "dev", "br0"]);
    ip(&[
        "-n",
        node,
        "route",
        "add",
        "10.244.1.9/32",
        "dev",
        "vethpre",
    ]);
    wait_for(
        &mut rx,
        &mapping(&[("10.244.1.9", "vethpre")]),
        "bridge routes added (only the veth route maps)",
    );

    // Setting a veth down also flushes its IPv4 routes silently.
    ip(&["-n", node, "link", "set", "vethpre", "down"]);
    wait_for(&mut rx, &PodInterfaces::new(), "veth set down");

    drop(rx);
    watcher.join().expect("the watcher thread panicked");
}
