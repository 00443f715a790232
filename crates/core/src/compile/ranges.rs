//! Address range arithmetic for ipBlocks: `cidr` minus `except`, unions merged into disjoint,
//! sorted ranges (nftables interval sets reject overlapping elements).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::ruleset::Family;

/// An inclusive range of addresses of one family, as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddrRange {
    /// First address.
    pub start: u128,
    /// Last address, inclusive.
    pub end: u128,
}

impl AddrRange {
    /// The range a prefix covers.
    pub fn of_net(net: &IpNet) -> Self {
        let (start, end) = match net {
            IpNet::V4(n) => (
                u32::from(n.network()) as u128,
                u32::from(n.broadcast()) as u128,
            ),
            IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
        };
        Self { start, end }
    }

    /// The range's bounds as addresses of the family.
    pub fn bounds(&self, family: Family) -> (IpAddr, IpAddr) {
        (to_addr(self.start, family), to_addr(self.end, family))
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
pub fn addr_to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn to_addr(value: u128, family: Family) -> IpAddr {
    match family {
        // Ranges of the V4 family are built from IPv4 prefixes, so they fit in 32 bits.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(value).unwrap_or(u32::MAX))),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// `cidr` minus every `except` (all of the same family as `cidr`; others are ignored).
pub fn subtract(cidr: &IpNet, except: &[IpNet]) -> Vec<AddrRange> {
    let mut holes: Vec<AddrRange> = except
        .iter()
        .filter(|e| Family::of(e.addr()) == Family::of(cidr.addr()))
        .map(AddrRange::of_net)
        .collect();
    holes.sort();
    let whole = AddrRange::of_net(cidr);
    let mut out = Vec::new();
    let mut next = whole.start;
    let mut done = false;
    for hole in merge(holes) {
        if hole.end < next || hole.start > whole.end {
            continue;
        }
        if hole.start > next {
            out.push(AddrRange {
                start: next,
                end: hole.start - 1,
            });
        }
        match hole.end.checked_add(1) {
            Some(n) if hole.end < whole.end => next = n,
            _ => {
                done = true;
                break;
            }
        }
    }
    if !done && next <= whole.end {
        out.push(AddrRange {
            start: next,
            end: whole.end,
        });
    }
    out
}

/// Sorts and merges overlapping or adjacent ranges.
pub fn merge(mut ranges: Vec<AddrRange>) -> Vec<AddrRange> {
    ranges.sort();
    let mut out: Vec<AddrRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(1) => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// A range as nft writes and lists it: an address, a prefix, or `first-last`.
pub fn display(start: IpAddr, end: IpAddr, family: Family) -> String {
    let bits = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let range = AddrRange {
        start: addr_to_int(start),
        end: addr_to_int(end),
    };
    if range.start == range.end {
        return start.to_string();
    }
    match as_prefix(range, bits) {
        Some(len) => format!("{start}/{len}"),
        None => format!("{start}-{end}"),
    }
}

/// The prefix length when `start..=end` is exactly one prefix of a family with `bits` bits.
pub fn as_prefix(range: AddrRange, bits: u32) -> Option<u8> {
    let size = range.end.checked_sub(range.start)?.checked_add(1);
    let host_bits = match size {
        // The whole 128-bit space.
        None => 128,
        Some(size) if size.is_power_of_two() => size.trailing_zeros(),
        Some(_) => return None,
    };
    if host_bits > bits {
        return None;
    }
    let aligned = host_bits == 128 || range.start & ((1u128 << host_bits) - 1) == 0;
    aligned.then(|| u8::try_from(bits - host_bits).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn show(ranges: &[AddrRange], family: Family) -> Vec<String> {
        ranges
            .iter()
            .map(|r| {
                let (a, b) = r.bounds(family);
                format!("{a}-{b}")
            })
            .collect()
    }

    #[test]
    fn except_cuts_holes_in_its_own_block() {
        let ranges = subtract(
            &net("10.0.0.0/24"),
            &[net("10.0.0.16/28"), net("10.0.0.128/25")],
        );
        assert_eq!(
            show(&ranges, Family::V4),
            ["10.0.0.0-10.0.0.15", "10.0.0.32-10.0.0.127"]
        );
    }

    #[test]
    fn except_at_the_edges_and_nested_excepts() {
        let ranges = subtract(
            &net("10.0.0.0/24"),
            &[net("10.0.0.0/25"), net("10.0.0.0/26")],
        );
        assert_eq!(show(&ranges, Family::V4), ["10.0.0.128-10.0.0.255"]);
        let ranges = subtract(&net("0.0.0.0/0"), &[net("169.254.169.254/32")]);
        assert_eq!(
            show(&ranges, Family::V4),
            ["0.0.0.0-169.254.169.253", "169.254.169.255-255.255.255.255"]
        );
    }

    #[test]
    fn whole_ipv6_space_minus_nothing() {
        let ranges = subtract(&net("::/0"), &[]);
        assert_eq!(
            ranges,
            [AddrRange {
                start: 0,
                end: u128::MAX
            }]
        );
        assert_eq!(as_prefix(ranges[0], 128), Some(0));
    }

    #[test]
    fn merge_joins_overlapping_and_adjacent_ranges() {
        let merged = merge(vec![
            AddrRange { start: 10, end: 20 },
            AddrRange { start: 0, end: 5 },
            AddrRange { start: 6, end: 8 },
            AddrRange { start: 15, end: 30 },
        ]);
        assert_eq!(
            merged,
            [
                AddrRange { start: 0, end: 8 },
                AddrRange { start: 10, end: 30 }
            ]
        );
    }

    #[test]
    fn prefixes_are_recognised() {
        let r = AddrRange::of_net(&net("10.1.0.0/16"));
        assert_eq!(as_prefix(r, 32), Some(16));
        assert_eq!(as_prefix(AddrRange { start: 1, end: 2 }, 32), None);
        assert_eq!(as_prefix(AddrRange { start: 7, end: 7 }, 32), Some(32));
    }
}
