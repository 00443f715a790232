//! Renders a [`Ruleset`] as an `nft -f` script: one `table inet kube-nftpol { ... }` block in
//! the syntax of `nft(8)`, byte-identical for equal rulesets.
//!
//! The script declares the table's full content. Loaded with `nft -f` into a network namespace
//! that does not have the table yet, it creates it in one transaction; replacing an existing
//! table's content is the dataplane's job.

use std::fmt::Write;
use std::net::IpAddr;

use super::ranges;
use super::ruleset::{
    AddrField, Chain, Expr, Family, LOG_QUEUE_THRESHOLD, LOG_SNAPLEN, MapVerdict, ProtocolPorts,
    Rule, Ruleset, Set, SetElement, SetKind, TABLE_FAMILY, TABLE_NAME, VerdictMap,
};

/// Renders the whole table.
pub fn render(ruleset: &Ruleset) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table {TABLE_FAMILY} {TABLE_NAME} {{");
    for map in &ruleset.maps {
        render_map(&mut out, map);
    }
    for set in &ruleset.sets {
        render_set(&mut out, set);
    }
    for chain in &ruleset.chains {
        render_chain(&mut out, chain);
    }
    out.push_str("}\n");
    out
}

/// Appends a `map` block (inside a table block).
pub(crate) fn render_map(out: &mut String, map: &VerdictMap) {
    let _ = writeln!(out, "\tmap {} {{", map.name);
    let _ = writeln!(out, "\t\ttype {} : verdict", map.family.addr_type());
    let elements: Vec<String> = map
        .elements
        .iter()
        .map(|(ip, verdict)| map_element(*ip, verdict))
        .collect();
    render_elements(out, &elements);
    out.push_str("\t}\n\n");
}

/// Appends a `set` block (inside a table block).
pub fn render_set(out: &mut String, set: &Set) {
    let _ = writeln!(out, "\tset {} {{", set.name);
    let key = match set.kind {
        SetKind::Addresses | SetKind::AddressRanges => set.family.addr_type().to_owned(),
        SetKind::AddressProtocolPort => {
            format!("{} . inet_proto . inet_service", set.family.addr_type())
        }
        SetKind::Interfaces => "ifname".to_owned(),
        SetKind::InterfaceAddresses => format!("ifname . {}", set.family.addr_type()),
        SetKind::Connections => {
            let addr = set.family.addr_type();
            format!("{addr} . {addr} . inet_proto . inet_service . inet_service")
        }
    };
    let _ = writeln!(out, "\t\ttype {key}");
    match set.kind {
        SetKind::AddressRanges => out.push_str("\t\tflags interval\n"),
        SetKind::Connections => out.push_str("\t\tflags timeout\n"),
        _ => {}
    }
    let _ = writeln!(out, "\t\tcomment {}", quote(&set.comment));
    let elements: Vec<String> = set
        .elements
        .iter()
        .map(|e| element(e, set.family))
        .collect();
    render_elements(out, &elements);
    out.push_str("\t}\n\n");
}

fn render_elements(out: &mut String, elements: &[String]) {
    if elements.is_empty() {
        return;
    }
    out.push_str("\t\telements = {\n");
    for (i, e) in elements.iter().enumerate() {
        let sep = if i + 1 == elements.len() { "" } else { "," };
        let _ = writeln!(out, "\t\t\t{e}{sep}");
    }
    out.push_str("\t\t}\n");
}

/// Appends a `chain` block with its rules (inside a table block).
pub fn render_chain(out: &mut String, chain: &Chain) {
    let _ = writeln!(out, "\tchain {} {{", chain.name);
    if let Some(hook) = chain.hook {
        let _ = writeln!(
            out,
            "\t\ttype filter hook {} priority {}; policy accept;",
            hook.name(),
            hook.priority_text()
        );
    }
    for rule in &chain.rules {
        let _ = writeln!(out, "\t\t{}", rule_text(rule));
    }
    out.push_str("\t}\n");
    out.push('\n');
}

/// A verdict-map element as nft writes it (`10.0.0.1 : goto in_x_a`).
pub fn map_element(ip: IpAddr, verdict: &MapVerdict) -> String {
    match verdict {
        MapVerdict::Jump(chain) => format!("{ip} : jump {chain}"),
        MapVerdict::Goto(chain) => format!("{ip} : goto {chain}"),
    }
}

/// One rule as `nft` syntax (without indentation).
pub fn rule_text(rule: &Rule) -> String {
    let mut parts: Vec<String> = rule.exprs.iter().map(expr).collect();
    if let Some(comment) = &rule.comment {
        parts.push(format!("comment {}", quote(comment)));
    }
    parts.join(" ")
}

fn expr(e: &Expr) -> String {
    match e {
        Expr::CtEstablishedOrRelated => "ct state established,related".into(),
        Expr::CtNotAssured => "ct status ! assured".into(),
        Expr::ConnectionInSet(family, set) => {
            let protocol = family.payload_protocol();
            format!(
                "ct original {protocol} saddr . ct original {protocol} daddr . meta l4proto . \
                 th sport . th dport @{set}"
            )
        }
        Expr::ProtocolIs(protocol) => format!("meta l4proto {protocol}"),
        Expr::TcpInitialSyn => "tcp flags & (syn | ack) == syn".into(),
        Expr::Icmpv6NeighborDiscovery => "icmpv6 type { nd-router-solicit, nd-router-advert, \
                                          nd-neighbor-solicit, nd-neighbor-advert }"
            .into(),
        Expr::SourceIsLocal => "fib saddr type local".into(),
        Expr::AddressIs(field, ip) => format!("{} {ip}", addr_field(*field, Family::of(*ip))),
        Expr::AddressInSet(field, family, set) => format!("{} @{set}", addr_field(*field, *family)),
        Expr::DestinationProtocolPortInSet(family, set) => format!(
            "{} . meta l4proto . th dport @{set}",
            addr_field(AddrField::Destination, *family)
        ),
        Expr::ProtocolPortIn(ports) => {
            let items: Vec<String> = ports.iter().map(protocol_ports).collect();
            format!("meta l4proto . th dport {{ {} }}", items.join(", "))
        }
        Expr::PortIn(protocol, ports) => {
            let items: Vec<String> = ports.iter().map(|&range| port_range(range)).collect();
            match items.as_slice() {
                [one] => format!("{protocol} dport {one}"),
                _ => format!("{protocol} dport {{ {} }}", items.join(", ")),
            }
        }
        Expr::InputInterfaceInSet(set) => format!("iifname @{set}"),
        Expr::InterfaceSourceInSet(family, set) => format!(
            "iifname . {} @{set}",
            addr_field(AddrField::Source, *family)
        ),
        Expr::OutputInterfaceNotIn(names) => match names.as_slice() {
            [one] => format!("oifname != {}", quote(one)),
            _ => format!(
                "oifname != {{ {} }}",
                names
                    .iter()
                    .map(|n| quote(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        Expr::Ip6SourceLinkLocal => "ip6 saddr fe80::/10".into(),
        Expr::FamilyIs(family) => format!("meta nfproto {}", nfproto(*family)),
        Expr::Counter => "counter".into(),
        Expr::Limit {
            rate_per_second,
            burst_packets,
        } => {
            format!("limit rate {rate_per_second}/second burst {burst_packets} packets")
        }
        Expr::Log { prefix, group } => format!(
            "log prefix {} group {group} snaplen {LOG_SNAPLEN} queue-threshold {LOG_QUEUE_THRESHOLD}",
            quote(prefix)
        ),
        Expr::DispatchBy(field, family, map) => {
            format!("{} vmap @{map}", addr_field(*field, *family))
        }
        Expr::Accept => "accept".into(),
        Expr::Drop => "drop".into(),
        Expr::Return => "return".into(),
        Expr::Jump(chain) => format!("jump {chain}"),
        Expr::Goto(chain) => format!("goto {chain}"),
        Expr::RejectWithTcpReset => "reject with tcp reset".into(),
        Expr::Reject => "reject".into(),
    }
}

fn port_range((start, end): (u16, u16)) -> String {
    if start == end {
        start.to_string()
    } else {
        format!("{start}-{end}")
    }
}

fn protocol_ports(p: &ProtocolPorts) -> String {
    format!("{} . {}", p.protocol, port_range((p.start, p.end)))
}

/// A set element as nft writes it.
pub fn element(e: &SetElement, family: Family) -> String {
    element_with(e, family, quote)
}

/// A set element as `nft list` prints it: interface names unquoted.
pub fn listed_element(e: &SetElement, family: Family) -> String {
    element_with(e, family, str::to_owned)
}

fn element_with(e: &SetElement, family: Family, name: fn(&str) -> String) -> String {
    match e {
        SetElement::Address(ip) => ip.to_string(),
        SetElement::Range(start, end) => ranges::display(*start, *end, family),
        SetElement::AddressProtocolPort(ip, protocol, port) => {
            format!("{ip} . {protocol} . {port}")
        }
        SetElement::Interface(interface) => name(interface),
        SetElement::InterfaceAddress(interface, ip) => format!("{} . {ip}", name(interface)),
        SetElement::Connection(source, destination, protocol, source_port, destination_port) => {
            format!("{source} . {destination} . {protocol} . {source_port} . {destination_port}")
        }
    }
}

/// The `nft -f` script that adds `elements` to the set `set` of the agent's table, each for
/// `timeout_seconds` (the [`SetKind::Connections`] sets, filled at run time). Empty for no
/// elements.
pub fn add_elements_with_timeout(
    set: &str,
    family: Family,
    elements: &[SetElement],
    timeout_seconds: u64,
) -> String {
    if elements.is_empty() {
        return String::new();
    }
    let items: Vec<String> = elements
        .iter()
        .map(|e| format!("{} timeout {timeout_seconds}s", element(e, family)))
        .collect();
    format!(
        "add element {TABLE_FAMILY} {TABLE_NAME} {set} {{ {} }}\n",
        items.join(", ")
    )
}

/// The `nft -f` script that deletes `elements` from the set `set` of the agent's table. Empty
/// for no elements.
pub fn delete_elements(set: &str, family: Family, elements: &[SetElement]) -> String {
    if elements.is_empty() {
        return String::new();
    }
    let items: Vec<String> = elements.iter().map(|e| element(e, family)).collect();
    format!(
        "delete element {TABLE_FAMILY} {TABLE_NAME} {set} {{ {} }}\n",
        items.join(", ")
    )
}

/// The `meta nfproto` value of a family (`man nft`, META EXPRESSIONS).
pub(crate) fn nfproto(family: Family) -> &'static str {
    match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

fn addr_field(field: AddrField, family: Family) -> String {
    format!("{} {}", family.payload_protocol(), field.payload_field())
}

/// A double-quoted nft string (see [`sanitize`]).
fn quote(text: &str) -> String {
    format!("\"{}\"", sanitize(text))
}

/// Comment and log prefix text as both renderers write it. Names in comments and prefixes come
/// from Kubernetes object names (DNS labels and subdomains), but quotes, backslashes and control
/// characters are dropped defensively; the JSON renderer drops them too so both describe the
/// same table.
pub(super) fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}
