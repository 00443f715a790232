//! The values that name a flow on the command line: `--from`/`--to` (`NS/POD` or an IP address)
//! and `--port` (`PORT[/PROTO]`).
//!
//! Pure parsing, used as clap value parsers so that a malformed value is a usage error (exit 2)
//! before anything is read. Whether a named pod exists is only known once the manifests are
//! loaded, so that is checked later, by [`crate::policy::evaluate`].

use std::fmt;
use std::net::IpAddr;

use crate::model::{ObjectKey, Protocol};
use crate::policy::Endpoint;

/// Why a flow value did not parse. The messages follow clap's `invalid value '...' for
/// '--flag': `, so they do not repeat the value's flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Neither `NS/POD` nor an address.
    #[error(
        "expected NAMESPACE/POD or an IP address (a pod needs its namespace, as in default/{0})"
    )]
    NotAnEndpoint(String),
    /// More than one `/`.
    #[error("expected NAMESPACE/POD with a single '/'")]
    TooManySlashes,
    /// A CIDR where one address is needed.
    #[error("a flow end is one address, not a CIDR")]
    Cidr,
    /// The namespace part is not a namespace name.
    #[error(
        "{0:?} is not a namespace name (at most 63 lowercase letters, digits and '-', starting \
         and ending with a letter or digit)"
    )]
    Namespace(String),
    /// The pod part is not a pod name.
    #[error(
        "{0:?} is not a pod name (at most 253 lowercase letters, digits, '-' and '.', each \
         dot-separated part starting and ending with a letter or digit)"
    )]
    PodName(String),
    /// The port is not a number from 1 to 65535.
    #[error("{0:?} is not a port number from 1 to 65535 (named ports are not accepted here)")]
    Port(String),
    /// An unknown protocol after the `/`.
    #[error("unknown protocol {0:?} (use tcp, udp or sctp)")]
    Protocol(String),
}

/// Parses `--from`/`--to`: an IP address, or `NAMESPACE/POD`.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, Error> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Endpoint::Ip(ip));
    }
    let Some((namespace, pod)) = text.split_once('/') else {
        return Err(Error::NotAnEndpoint(text.to_owned()));
    };
    if namespace.parse::<IpAddr>().is_ok() {
        return Err(Error::Cidr);
    }
    if pod.contains('/') {
        return Err(Error::TooManySlashes);
    }
    if !is_dns_label(namespace) {
        return Err(Error::Namespace(namespace.to_owned()));
    }
    if pod.len() > 253 || !pod.split('.').all(is_dns_label) {
        return Err(Error::PodName(pod.to_owned()));
    }
    Ok(Endpoint::Pod(ObjectKey::new(namespace, pod)))
}

/// A DNS-1123 label, as Kubernetes validates namespace names.
fn is_dns_label(text: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= 63
                && alnum(*first)
                && alnum(*last)
                && bytes.iter().all(|b| alnum(*b) || *b == b'-')
        }
        _ => false,
    }
}

/// A destination port and its protocol: `--port 53/udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortArg {
    /// The port number, 1 to 65535.
    pub port: u16,
    /// The protocol, TCP unless given.
    pub protocol: Protocol,
}

impl fmt::Display for PortArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

/// Parses `--port`: `PORT` or `PORT/PROTO`, the protocol in any case.
pub fn parse_port(text: &str) -> Result<PortArg, Error> {
    let (port, protocol) = match text.split_once('/') {
        None => (text, Protocol::Tcp),
        Some((port, protocol)) => {
            let protocol = Protocol::parse_any_case(protocol)
                .ok_or_else(|| Error::Protocol(protocol.to_owned()))?;
            (port, protocol)
        }
    };
    // Digits only: `u16::from_str` would also take `+80`.
    let number = Some(port)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| Error::Port(port.to_owned()))?;
    Ok(PortArg {
        port: number,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str) -> Endpoint {
        Endpoint::Pod(ObjectKey::new(namespace, name))
    }

    #[test]
    fn namespace_slash_pod_is_a_pod() {
        assert_eq!(
            parse_endpoint("shop/web-7d4f9-abcde"),
            Ok(pod("shop", "web-7d4f9-abcde"))
        );
        assert_eq!(parse_endpoint("a/web.v1"), Ok(pod("a", "web.v1")));
    }

    #[test]
    fn addresses_of_both_families_are_ips() {
        assert_eq!(
            parse_endpoint("10.0.0.5"),
            Ok(Endpoint::Ip("10.0.0.5".parse().unwrap()))
        );
        assert_eq!(
            parse_endpoint("fd00::5"),
            Ok(Endpoint::Ip("fd00::5".parse().unwrap()))
        );
    }

    #[test]
    fn bare_pod_name_without_namespace_is_rejected() {
        assert_eq!(
            parse_endpoint("web"),
            Err(Error::NotAnEndpoint("web".into()))
        );
        assert!(parse_endpoint("").is_err());
    }

    #[test]
    fn cidr_is_rejected_as_a_flow_end() {
        assert_eq!(parse_endpoint("10.0.0.0/8"), Err(Error::Cidr));
        assert_eq!(parse_endpoint("fd00::/64"), Err(Error::Cidr));
    }

    #[test]
    fn malformed_pod_references_are_rejected() {
        assert_eq!(parse_endpoint("a/b/c"), Err(Error::TooManySlashes));
        assert_eq!(parse_endpoint("/web"), Err(Error::Namespace(String::new())));
        assert_eq!(
            parse_endpoint("Shop/web"),
            Err(Error::Namespace("Shop".into()))
        );
        assert_eq!(parse_endpoint("shop/"), Err(Error::PodName(String::new())));
        assert_eq!(
            parse_endpoint("shop/-web"),
            Err(Error::PodName("-web".into()))
        );
        assert_eq!(
            parse_endpoint("shop/a..b"),
            Err(Error::PodName("a..b".into()))
        );
    }

    #[test]
    fn port_defaults_to_tcp() {
        assert_eq!(
            parse_port("80"),
            Ok(PortArg {
                port: 80,
                protocol: Protocol::Tcp
            })
        );
    }

    #[test]
    fn protocol_is_case_insensitive() {
        let udp = PortArg {
            port: 53,
            protocol: Protocol::Udp,
        };
        assert_eq!(parse_port("53/udp"), Ok(udp));
        assert_eq!(parse_port("53/UDP"), Ok(udp));
        assert_eq!(parse_port("5000/Sctp").unwrap().protocol, Protocol::Sctp);
        assert_eq!(parse_port("65535/tcp").unwrap().port, 65535);
    }

    #[test]
    fn bad_ports_are_rejected() {
        for text in ["0", "65536", "-1", "+80", "", "http", "80/", "/tcp"] {
            assert!(parse_port(text).is_err(), "{text:?} should not parse");
        }
        assert_eq!(parse_port("80/icmp"), Err(Error::Protocol("icmp".into())));
        assert_eq!(parse_port("http/tcp"), Err(Error::Port("http".into())));
    }

    #[test]
    fn port_displays_as_protocol_slash_number() {
        assert_eq!(parse_port("53/UDP").unwrap().to_string(), "udp/53");
    }
}
