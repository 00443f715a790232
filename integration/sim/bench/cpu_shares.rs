//! Where a system-wide `perf` recording's CPU samples went: into the agent's chains (by the
//! hook that ran them), the agent's own process, or idle. The dataplane benchmark reads each
//! connections phase's recording with it, so the table says how much of the gap to no agent
//! the profile accounts for.
//!
//! The connections phase keeps both CPUs busy (idle is 2 % or less of the samples). Then a
//! connection's CPU cost with the agent is the baseline's plus the agent's share `s` of all
//! samples, and the connection rate can only be `1 - s` of the baseline's: the profile's
//! prediction, printed beside the measured ratio of the same round.
//!
//! A sample is the agent's chains when its innermost nftables frame is `nft_do_chain_inet`:
//! the agent's table is the node's only `inet` table (kube-proxy's is `ip`). The hook is the
//! function that called `nf_hook_slow` (`ip_rcv`: prerouting, `ip_output`: postrouting,
//! `ip_local_deliver`: input).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::Result;

/// Sample counts of one recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuShares {
    pub samples: u64,
    /// The idle task (`swapper`, pid 0).
    pub idle: u64,
    /// The agent's process, user space and the kernel work of its system calls.
    pub agent_process: u64,
    /// Samples inside the agent's chains, by hook.
    pub chains: BTreeMap<String, u64>,
}

impl CpuShares {
    /// Reads `recording` with `perf script`; `agent` is the agent's pid, if it ran.
    pub fn of_recording(recording: &Path, agent: Option<u32>) -> Result<Self> {
        let output = Command::new("perf")
            .args(["script", "-F", "comm,pid,ip,sym", "-i"])
            .arg(recording)
            .output()
            .map_err(|e| format!("perf script: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "perf script -i {}: {}",
                recording.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(Self::parse(&String::from_utf8_lossy(&output.stdout), agent))
    }

    /// Counts `perf script -F comm,pid,ip,sym` output: per sample a `comm pid` line, then one
    /// `address symbol` line per frame, innermost first, then a blank line.
    pub fn parse(script: &str, agent: Option<u32>) -> Self {
        let mut shares = Self::default();
        let mut lines = script.lines().peekable();
        while let Some(header) = lines.next() {
            if header.trim().is_empty() || header.starts_with(char::is_whitespace) {
                continue;
            }
            let mut frames = Vec::new();
            while let Some(frame) = lines.next_if(|l| l.starts_with(char::is_whitespace)) {
                if let Some((_, symbol)) = frame.trim().split_once(' ') {
                    frames.push(symbol.trim());
                }
            }
            shares.count(header, &frames, agent);
        }
        shares
    }

    fn count(&mut self, header: &str, frames: &[&str], agent: Option<u32>) {
        self.samples += 1;
        let pid = header
            .split_whitespace()
            .last()
            .and_then(|p| p.parse::<u32>().ok());
        if pid == Some(0) {
            self.idle += 1;
        }
        if pid.is_some() && pid == agent {
            self.agent_process += 1;
        }
        let innermost_chain = frames
            .iter()
            .position(|f| f.starts_with("nft_do_chain_") || *f == "nft_nat_do_chain");
        if let Some(at) = innermost_chain.filter(|at| frames[*at] == "nft_do_chain_inet") {
            let hook = frames[at..]
                .iter()
                .skip_while(|f| **f != "nf_hook_slow")
                .nth(1)
                .map_or("unknown", |caller| hook_of(caller));
            *self.chains.entry(hook.to_owned()).or_default() += 1;
        }
    }

    /// The agent's chains' samples.
    pub fn in_chains(&self) -> u64 {
        self.chains.values().sum()
    }

    /// `count` as a percentage of all samples.
    pub fn percent(&self, count: u64) -> f64 {
        100.0 * count as f64 / self.samples.max(1) as f64
    }

    /// The connection rate the profile predicts, as a ratio to no agent: what is left when
    /// the agent's chains and process are taken out of a saturated machine.
    pub fn predicted_ratio(&self) -> f64 {
        1.0 - (self.in_chains() + self.agent_process) as f64 / self.samples.max(1) as f64
    }
}

/// The netfilter hook that the function calling `nf_hook_slow` runs.
fn hook_of(caller: &str) -> &str {
    match caller {
        "ip_rcv" | "ipv6_rcv" => "prerouting",
        "ip_output" | "ip6_output" | "ip6_finish_output" => "postrouting",
        "ip_local_deliver" | "ip6_input" => "input",
        "ip_forward" | "ip6_forward" => "forward",
        "__ip_local_out" | "__ip6_local_out" => "output",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "\
in-knp-sim-1662 16629 
\tffffffff81f6333c nft_do_chain
\tffffffff81f7e543 nft_do_chain_inet
\tffffffff81f28e13 nf_hook_slow
\tffffffff81ffd00e ip_output
\tffffffff81e6651d __netif_receive_skb_one_core

bench-rr 16629 
\tffffffff81f6333c nft_rhash_lookup
\tffffffff81f6333c nft_lookup_eval
\tffffffff81f6333c nft_do_chain
\tffffffff81f7e543 nft_do_chain_inet
\tffffffff81f28e13 nf_hook_slow
\tffffffff81ffd00e ip_rcv

bench-rr 16629 
\tffffffff81f6333c nft_do_chain
\tffffffff81f7e543 nft_nat_do_chain
\tffffffff81f28e13 nf_hook_slow
\tffffffff81ffd00e nf_nat_ipv4_fn
\tffffffff81f7e543 nft_do_chain_inet
\tffffffff81f28e13 nf_hook_slow
\tffffffff81ffd00e ip_output

kworker/u8:4-kv 8792 
\tffffffff81e6651d tcp_v4_rcv

tokio-rt-worker 16738 
\t           224ba strcmp

swapper     0 
\tffffffff821f2c2b pv_native_safe_halt
";

    #[test]
    fn samples_are_split_by_the_innermost_chain_and_its_hook() {
        let shares = CpuShares::parse(SCRIPT, Some(16738));
        assert_eq!(shares.samples, 6);
        assert_eq!(shares.idle, 1);
        assert_eq!(shares.agent_process, 1);
        // The NAT chain nested inside the agent's is kube-proxy's, not the agent's.
        assert_eq!(
            shares.chains,
            BTreeMap::from([("postrouting".to_owned(), 1), ("prerouting".to_owned(), 1)])
        );
        assert!((shares.predicted_ratio() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn an_empty_recording_predicts_no_cost() {
        let shares = CpuShares::parse("", None);
        assert_eq!(shares.samples, 0);
        assert!((shares.predicted_ratio() - 1.0).abs() < 1e-9);
    }
}
