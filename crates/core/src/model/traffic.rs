//! The words every part uses for traffic: [`Direction`] (from the policed pod's side),
//! [`Protocol`] (what a NetworkPolicy port names) and [`IpProtocol`] (what a packet carries).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A traffic direction, from the point of view of the policed pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic arriving at the pod.
    Ingress,
    /// Traffic leaving the pod.
    Egress,
}

impl Direction {
    /// `ingress` or `egress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transport protocol a NetworkPolicy port can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP, IP protocol 6 (the default wherever Kubernetes omits the protocol).
    Tcp,
    /// UDP, IP protocol 17.
    Udp,
    /// SCTP, IP protocol 132.
    Sctp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`); `None` for anything else.
    pub fn from_k8s(value: &str) -> Option<Self> {
        match value {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The lowercase name nftables and users write (`tcp`, `udp`, `sctp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }

    /// Parses a protocol in either case (`tcp`, `TCP`).
    pub fn parse_any_case(value: &str) -> Option<Self> {
        Self::from_k8s(&value.to_ascii_uppercase())
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The protocol above IP, as flow logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpProtocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
    /// ICMP for IPv4 (1).
    Icmp,
    /// ICMP for IPv6 (58).
    Icmpv6,
    /// Any other IP protocol number (including an IPv6 extension header that could not be
    /// walked past in the copied bytes).
    Other(u8),
}

impl IpProtocol {
    /// From an IP protocol (next header) number.
    pub fn from_number(number: u8) -> Self {
        match number {
            6 => Self::Tcp,
            17 => Self::Udp,
            132 => Self::Sctp,
            1 => Self::Icmp,
            58 => Self::Icmpv6,
            other => Self::Other(other),
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
            Self::Icmp => 1,
            Self::Icmpv6 => 58,
            Self::Other(number) => number,
        }
    }

    /// Whether the transport header starts with a source and a destination port (16 bits each).
    pub fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp | Self::Sctp)
    }
}

/// `tcp`, `udp`, `sctp`, `icmp`, `icmpv6` (nft's names), or the protocol number.
impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp => f.write_str("tcp"),
            Self::Udp => f.write_str("udp"),
            Self::Sctp => f.write_str("sctp"),
            Self::Icmp => f.write_str("icmp"),
            Self::Icmpv6 => f.write_str("icmpv6"),
            Self::Other(number) => write!(f, "{number}"),
        }
    }
}

impl IpProtocol {
    /// Parses `tcp`, `udp`, `sctp`, `icmp`, `icmpv6` (any case) or a protocol number.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "tcp" => Some(Self::Tcp),
            "udp" => Some(Self::Udp),
            "sctp" => Some(Self::Sctp),
            "icmp" => Some(Self::Icmp),
            "icmpv6" => Some(Self::Icmpv6),
            other => other.parse::<u8>().ok().map(Self::from_number),
        }
    }

    /// The NetworkPolicy protocol of this IP protocol, for the ones a policy port can name.
    pub fn policy_protocol(self) -> Option<Protocol> {
        match self {
            Self::Tcp => Some(Protocol::Tcp),
            Self::Udp => Some(Protocol::Udp),
            Self::Sctp => Some(Protocol::Sctp),
            Self::Icmp | Self::Icmpv6 | Self::Other(_) => None,
        }
    }
}

/// Serialized as its [`Display`](fmt::Display) string, so JSON always has a string there.
impl Serialize for IpProtocol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Read from a name (any case) or a number, as a string or a JSON number.
impl<'de> Deserialize<'de> for IpProtocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Spelling {
            Number(u8),
            Text(String),
        }
        match Spelling::deserialize(deserializer)? {
            Spelling::Number(number) => Ok(Self::from_number(number)),
            Spelling::Text(text) => Self::parse(&text)
                .ok_or_else(|| serde::de::Error::custom(format!("protocol {text:?} is not known"))),
        }
    }
}
