//! What the node knows that the API does not: behind which host-side interface each local pod
//! address sits. The agent learns it from the node's routes; the compiler keys anti-spoofing
//! on it.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// The host-side interface of each local pod address, as the node's routes say
/// (`10.244.1.5 dev veth1a2b3c4d`). Empty when nothing is known (`kube-nftpol compile`).
pub type PodInterfaces = BTreeMap<IpAddr, String>;
