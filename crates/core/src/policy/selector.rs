//! Validation of Kubernetes label selectors (`matchLabels`, `matchExpressions`) into
//! [`Selector`]s, with errors that name the field.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::model::{FieldError, Operator, Requirement, Selector};

impl Selector {
    /// Validates a Kubernetes selector. `field` is the path used in error messages.
    pub fn from_k8s(selector: &LabelSelector, field: &str) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut match_labels = BTreeMap::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            let path = format!("{field}.matchLabels[{key}]");
            if let Err(why) = check_label_key(key) {
                errors.push(FieldError::new(&path, why));
            }
            if let Err(why) = check_label_value(value) {
                errors.push(FieldError::new(&path, why));
            }
            match_labels.insert(key.clone(), value.clone());
        }
        let mut expressions = Vec::new();
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let path = format!("{field}.matchExpressions[{i}]");
            if let Err(why) = check_label_key(&expr.key) {
                errors.push(FieldError::new(format!("{path}.key"), why));
            }
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            for value in &values {
                if let Err(why) = check_label_value(value) {
                    errors.push(FieldError::new(format!("{path}.values"), why));
                }
            }
            let operator = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    errors.push(FieldError::new(
                        format!("{path}.values"),
                        format!("operator {} needs at least one value", expr.operator),
                    ));
                    continue;
                }
                "In" => Operator::In(values),
                "NotIn" => Operator::NotIn(values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    errors.push(FieldError::new(
                        format!("{path}.values"),
                        format!("operator {} takes no values", expr.operator),
                    ));
                    continue;
                }
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    errors.push(FieldError::new(
                        format!("{path}.operator"),
                        format!(
                            "unknown operator {other:?} (use In, NotIn, Exists or DoesNotExist)"
                        ),
                    ));
                    continue;
                }
            };
            expressions.push(Requirement {
                key: expr.key.clone(),
                operator,
            });
        }
        if errors.is_empty() {
            Ok(Self {
                match_labels,
                expressions,
            })
        } else {
            Err(errors)
        }
    }
}

/// Checks a qualified label key: an optional DNS subdomain prefix and `/`, then a name of at
/// most 63 characters of alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let dns_ok = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !dns_ok {
            return Err(format!(
                "label key {key:?} has an invalid prefix (must be a DNS subdomain)"
            ));
        }
    }
    if name.is_empty() {
        return Err(format!("label key {key:?} has an empty name"));
    }
    check_label_value(name).map_err(|_| {
        format!(
            "label key {key:?} is invalid (at most 63 characters: alphanumerics, '-', '_', '.', \
             starting and ending with an alphanumeric)"
        )
    })
}

/// Checks a label value: empty, or at most 63 characters of alphanumerics, `-`, `_` and `.`,
/// starting and ending alphanumeric.
fn check_label_value(value: &str) -> Result<(), String> {
    let bytes = value.as_bytes();
    let ok = value.is_empty()
        || (value.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?} is invalid (at most 63 characters: alphanumerics, '-', '_', \
             '.', starting and ending with an alphanumeric)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use kube_nftpol_test_support::cluster::labels;

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|v| v.to_string()).collect())
            },
        }
    }

    fn selector(exprs: Vec<LabelSelectorRequirement>) -> Result<Selector, Vec<FieldError>> {
        Selector::from_k8s(
            &LabelSelector {
                match_expressions: Some(exprs),
                match_labels: None,
            },
            "spec.podSelector",
        )
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(Selector::everything().matches(&labels(&[])));
        assert!(Selector::everything().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let s = selector(vec![expr("tier", "In", &["web", "api"])]).unwrap();
        assert!(s.matches(&labels(&[("tier", "web")])));
        assert!(!s.matches(&labels(&[("tier", "db")])));
        assert!(!s.matches(&labels(&[])));

        let s = selector(vec![expr("tier", "NotIn", &["db"])]).unwrap();
        assert!(s.matches(&labels(&[("tier", "web")])));
        assert!(
            s.matches(&labels(&[])),
            "NotIn matches objects without the key"
        );
        assert!(!s.matches(&labels(&[("tier", "db")])));

        let s = selector(vec![expr("tier", "Exists", &[])]).unwrap();
        assert!(s.matches(&labels(&[("tier", "")])));
        assert!(!s.matches(&labels(&[])));

        let s = selector(vec![expr("tier", "DoesNotExist", &[])]).unwrap();
        assert!(!s.matches(&labels(&[("tier", "x")])));
        assert!(s.matches(&labels(&[])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = Selector::from_k8s(
            &LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                match_expressions: Some(vec![expr("env", "In", &["prod"])]),
            },
            "x",
        )
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn bad_operators_and_values_are_errors_naming_the_field() {
        let errors = selector(vec![expr("tier", "Equals", &["x"])]).unwrap_err();
        assert_eq!(
            errors[0].field,
            "spec.podSelector.matchExpressions[0].operator"
        );
        assert!(errors[0].message.contains("Equals"));

        let errors = selector(vec![expr("tier", "In", &[])]).unwrap_err();
        assert_eq!(
            errors[0].field,
            "spec.podSelector.matchExpressions[0].values"
        );

        let errors = selector(vec![expr("tier", "Exists", &["x"])]).unwrap_err();
        assert_eq!(
            errors[0].field,
            "spec.podSelector.matchExpressions[0].values"
        );

        let errors = selector(vec![expr("bad key!", "Exists", &[])]).unwrap_err();
        assert_eq!(errors[0].field, "spec.podSelector.matchExpressions[0].key");
    }

    #[test]
    fn label_values_at_the_length_limit_are_accepted() {
        let at_limit = "a".repeat(63);
        assert!(check_label_value(&at_limit).is_ok());
        assert!(check_label_value(&"a".repeat(64)).is_err());
        assert!(check_label_key(&format!("example.com/{at_limit}")).is_ok());
        assert!(check_label_key("kubernetes.io/metadata.name").is_ok());
        assert!(check_label_key("/x").is_err());
    }

    #[test]
    fn display_uses_kubernetes_selector_syntax() {
        let s = Selector::from_k8s(
            &LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                match_expressions: Some(vec![
                    expr("env", "In", &["prod", "dev"]),
                    expr("legacy", "DoesNotExist", &[]),
                ]),
            },
            "x",
        )
        .unwrap();
        assert_eq!(s.to_string(), "app=web,env in (dev,prod),!legacy");
        assert_eq!(Selector::everything().to_string(), "{}");
    }
}
