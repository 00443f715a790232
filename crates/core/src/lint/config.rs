//! The lint configuration: the rules' parameters and which rules run at which severity, read
//! from a small YAML file (`kube-nftpol lint --config FILE`, `agent --lint-config FILE`).
//! Every key is optional; a key or rule id it does not know, or a value of the wrong type, is
//! an error naming the line, never silently ignored. `docs/lint.md` shows the format.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::{RuleId, Severity};
use crate::model::Labels;

/// Why a config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not YAML, or not the config's shape (an unknown key or rule id, a wrong type).
    #[error("invalid lint config")]
    Parse {
        /// The parser's error, with line and column (boxed: it is large).
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A value of the right type that cannot be used.
    #[error("invalid lint config: {0}")]
    Value(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the rules check against and which rules run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Namespaces the posture rules (`missing-default-deny-*`, `unprotected-pod`) leave out:
    /// the cluster's own, whose pods are mostly hostNetwork or managed by the provider.
    pub exempt_namespaces: BTreeSet<String>,
    /// The cluster's DNS resolver, for `egress-without-dns` and `dns-udp-only`.
    pub dns: Resolver,
    /// The cloud metadata addresses `metadata-reachable` checks (on TCP port 80).
    pub metadata_addresses: Vec<IpAddr>,
    /// Rules whose severity differs from their default, or that are `off`.
    pub rules: BTreeMap<RuleId, Level>,
}

/// The cluster's DNS resolver pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Resolver {
    /// The namespace they run in.
    pub namespace: String,
    /// The labels that select them.
    pub pod_labels: Labels,
    /// The port they serve DNS on (the pods' port, after the Service's DNAT).
    pub port: u16,
}

/// A rule's severity in the config, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Report as an error.
    Error,
    /// Report as a warning.
    Warning,
    /// Report as info.
    Info,
    /// Do not run the rule.
    Off,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            exempt_namespaces: ["kube-system", "kube-public", "kube-node-lease"]
                .map(String::from)
                .into(),
            dns: Resolver::default(),
            metadata_addresses: vec![
                // AWS, GCP, Azure, OpenStack and most other clouds.
                IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
                // AWS's IPv6 endpoint of the instance metadata service.
                IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
            ],
            rules: BTreeMap::new(),
        }
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Self {
            namespace: "kube-system".to_owned(),
            pod_labels: [("k8s-app".to_owned(), "kube-dns".to_owned())].into(),
            port: 53,
        }
    }
}

impl Config {
    /// Reads a config from YAML; an empty text is the default config.
    pub fn from_yaml(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        // No source snippet in errors: they are printed on one line, after the file name.
        let options = serde_saphyr::options! { with_snippet: false };
        let config: Self =
            serde_saphyr::from_str_with_options(text, options).map_err(|source| Error::Parse {
                source: Box::new(source),
            })?;
        if config.dns.port == 0 {
            return Err(Error::Value("dns.port must be 1-65535".to_owned()));
        }
        if config.dns.pod_labels.is_empty() {
            return Err(Error::Value(
                "dns.pod-labels must name at least one label".to_owned(),
            ));
        }
        Ok(config)
    }

    /// The severity findings of `rule` get; `None` when the rule is off.
    pub fn severity(&self, rule: RuleId) -> Option<Severity> {
        match self.rules.get(&rule) {
            None => Some(rule.default_severity()),
            Some(Level::Error) => Some(Severity::Error),
            Some(Level::Warning) => Some(Severity::Warning),
            Some(Level::Info) => Some(Severity::Info),
            Some(Level::Off) => None,
        }
    }

    /// Whether the posture rules leave `namespace` out.
    pub fn is_exempt(&self, namespace: &str) -> bool {
        self.exempt_namespaces.contains(namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_config_is_the_default_one() {
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
        assert_eq!(Config::from_yaml("# nothing\n").unwrap(), Config::default());
        let config = Config::default();
        assert!(config.is_exempt("kube-system") && !config.is_exempt("default"));
        assert_eq!(
            config.severity(RuleId::InvalidPolicy),
            Some(Severity::Error)
        );
    }

    #[test]
    fn every_key_is_read() {
        let text = "\
exempt-namespaces: [infra]
dns:
  namespace: dns
  pod-labels: {app: coredns}
  port: 5353
metadata-addresses: [100.100.100.200, 'fd00:ec2::254']
rules:
  unprotected-pod: off
  missing-default-deny-egress: warning
";
        let config = Config::from_yaml(text).unwrap();
        assert!(config.is_exempt("infra") && !config.is_exempt("kube-system"));
        assert_eq!(config.dns.namespace, "dns");
        assert_eq!(config.dns.port, 5353);
        assert_eq!(config.metadata_addresses.len(), 2);
        assert_eq!(config.severity(RuleId::UnprotectedPod), None);
        assert_eq!(
            config.severity(RuleId::MissingDefaultDenyEgress),
            Some(Severity::Warning)
        );
        // Keys left out keep their defaults.
        let config = Config::from_yaml("rules: {shadowed-rule: error}\n").unwrap();
        assert_eq!(config.dns, Resolver::default());
        assert_eq!(config.severity(RuleId::ShadowedRule), Some(Severity::Error));
    }

    #[test]
    fn unknown_rule_ids_keys_and_wrong_types_are_errors_with_a_line() {
        for text in [
            "rules: {no-such-rule: off}\n",
            "exempt: [a]\n",
            "dns: {port: fifty-three}\n",
            "exempt-namespaces: kube-system\n",
            "rules: {shadowed-rule: loud}\n",
            "metadata-addresses: [not-an-address]\n",
        ] {
            let error = Config::from_yaml(text).unwrap_err();
            let source = std::error::Error::source(&error).unwrap().to_string();
            assert!(source.contains("line 1"), "{text}: {source}");
        }
    }

    #[test]
    fn a_port_of_zero_and_a_resolver_without_labels_are_errors() {
        let error = Config::from_yaml("dns: {port: 0}\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid lint config: dns.port must be 1-65535"
        );
        assert!(Config::from_yaml("dns: {pod-labels: {}}\n").is_err());
    }
}
