//! Links, addresses, routes and sysctls of the simulated cluster, as kind with kindnet sets
//! them up (kind's `images/kindnetd/cmd/kindnetd/cni.go` and `routes.go`):
//!
//! - nodes joined by one veth pair (`eth0` on both sides, node IPs in 172.18.0.0/24), IPv4
//!   forwarding on;
//! - each pod a routed ptp veth: inside the pod `eth0` with the pod IP /32 and
//!   `default via <gateway> dev eth0 onlink`; on the node `veth` + 8 hex characters with the
//!   gateway address (`10.244.N.1/32`, the same on every veth of the node) and the route
//!   `<pod IP>/32 dev vethXXXXXXXX`;
//! - every node routes the other node's pod CIDR via that node's IP, and (since the
//!   conformance plan gives every pod an IP in 10.244.1.0/24 whatever its node, see
//!   [`crate::cluster`]) each pod's /32 via its node's IP on the other node.
//!
//! Only `ip` and `sysctl` commands here; namespaces come from [`crate::netns`].

use std::net::Ipv4Addr;
use std::process::Command;

use crate::Result;

/// Runs `ip [-n NETNS] ARGS`, with `ip`'s stderr in the error.
pub fn ip(netns: Option<&str>, args: &[&str]) -> Result<()> {
    let mut command = Command::new("ip");
    if let Some(ns) = netns {
        command.args(["-n", ns]);
    }
    let out = command
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}{} failed: {}",
            netns.map(|n| format!("-n {n} ")).unwrap_or_default(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Sets a sysctl inside a namespace (`/proc/sys/net` is per namespace).
pub fn sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ])
        .output()
        .map_err(|e| format!("cannot run sysctl in {netns}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "sysctl {key}={value} in {netns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A node namespace: loopback up, forwarding on.
pub fn setup_node(netns: &str) -> Result<()> {
    ip(Some(netns), &["link", "set", "lo", "up"])?;
    sysctl(netns, "net.ipv4.ip_forward", "1")
}

/// Joins two nodes with a veth pair named `eth0` on both sides, addressed in a /24.
pub fn link_nodes(a: &str, a_ip: Ipv4Addr, b: &str, b_ip: Ipv4Addr) -> Result<()> {
    ip(
        Some(a),
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b,
        ],
    )?;
    for (ns, addr) in [(a, a_ip), (b, b_ip)] {
        ip(
            Some(ns),
            &["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
        )?;
        ip(Some(ns), &["link", "set", "eth0", "up"])?;
    }
    Ok(())
}

/// Adds `DESTINATION via GATEWAY` in a namespace.
pub fn route_via(netns: &str, destination: &str, gateway: Ipv4Addr) -> Result<()> {
    ip(
        Some(netns),
        &["route", "add", destination, "via", &gateway.to_string()],
    )
}

/// The kindnet-style host-side name of a pod's veth: `veth` and 8 hex characters.
pub fn veth_name(namespace: &str, pod: &str) -> String {
    // FNV-1a over `ns/pod`: stable and unique enough among a node's few pods (the caller
    // checks for collisions).
    let hash = format!("{namespace}/{pod}")
        .bytes()
        .fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
    format!("veth{hash:08x}")
}

/// Plugs a pod namespace into its node with a routed ptp veth.
pub fn attach_pod(
    node: &str,
    pod: &str,
    veth: &str,
    pod_ip: Ipv4Addr,
    gateway: Ipv4Addr,
) -> Result<()> {
    ip(
        Some(node),
        &[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod,
        ],
    )?;
    ip(Some(pod), &["link", "set", "lo", "up"])?;
    ip(
        Some(pod),
        &["addr", "add", &format!("{pod_ip}/32"), "dev", "eth0"],
    )?;
    ip(Some(pod), &["link", "set", "eth0", "up"])?;
    ip(
        Some(pod),
        &[
            "route",
            "add",
            "default",
            "via",
            &gateway.to_string(),
            "dev",
            "eth0",
            "onlink",
        ],
    )?;
    ip(
        Some(node),
        &["addr", "add", &format!("{gateway}/32"), "dev", veth],
    )?;
    ip(Some(node), &["link", "set", veth, "up"])?;
    ip(
        Some(node),
        &["route", "add", &format!("{pod_ip}/32"), "dev", veth],
    )
}
