//! A kube-proxy stand-in: Service ClusterIP DNAT in a table of its own on every node.
//!
//! Each pod has a Service whose ClusterIP (`service_ip` in the conformance data) forwards
//! ports 80 and 81 over TCP, UDP and SCTP to the pod IP, same port, as kube-proxy's
//! nftables mode does: `nat` chains at `dstnat` priority (-100) in `prerouting` (traffic from pods)
//! and `output` (traffic from the node itself). The agent's postrouting chain runs after this
//! DNAT, so it sees the pod IP and the container port (`docs/ruleset.md`).
//!
//! The agent never touches this table; the simulator loads it once per node and leaves it.

use std::net::Ipv4Addr;

use crate::{Result, nft};

/// The table's name (`table ip kube-proxy-sim`).
pub const TABLE: &str = "kube-proxy-sim";

/// Service ports forwarded to every pod.
pub const SERVICE_PORTS: [u16; 2] = [80, 81];

/// The `nft -f` script of the DNAT table for these `(service IP, pod IP)` pairs.
pub fn script(services: &[(Ipv4Addr, Ipv4Addr)]) -> String {
    let elements: Vec<String> = services
        .iter()
        .map(|(service, pod)| format!("{service} : {pod}"))
        .collect();
    let ports: Vec<String> = SERVICE_PORTS.iter().map(u16::to_string).collect();
    let dnat = format!(
        "meta l4proto {{ tcp, udp, sctp }} th dport {{ {} }} dnat to ip daddr map @services",
        ports.join(", ")
    );
    let mut out = format!("table ip {TABLE} {{\n");
    out.push_str("\tmap services {\n\t\ttype ipv4_addr : ipv4_addr\n");
    if !elements.is_empty() {
        out.push_str(&format!("\t\telements = {{ {} }}\n", elements.join(", ")));
    }
    out.push_str("\t}\n");
    // Priority -100 is `dstnat`; nft 1.0.6 accepts that name only in the prerouting hook.
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        out.push_str(&format!(
            "\tchain {chain} {{\n\t\ttype nat hook {hook} priority -100; policy accept;\n\
             \t\t{dnat}\n\t}}\n"
        ));
    }
    out.push_str("}\n");
    out
}

/// Loads the DNAT table into a node namespace.
pub async fn install(netns: &str, services: &[(Ipv4Addr, Ipv4Addr)]) -> Result<()> {
    let script = script(services);
    nft::apply(netns, &script)
        .await
        .map_err(|e| format!("the kube-proxy table: {e}\n{script}"))
}
