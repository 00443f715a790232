//! Names of the per-pod chains and per-rule sets: built from Kubernetes object names, which an
//! attacker who may create pods or policies chooses, so they must stay unique, within the
//! kernel's limit, and readable by `nft` without quoting, whatever the names are.
//!
//! A name is `<kind>_<part>_<part><suffix>` (`in_shop_backend-0`,
//! `np_shop_web_in0_pods4`) when every part is a Kubernetes name (non-empty lowercase
//! alphanumerics, `-` and `.`, so no `_`) and the whole fits [`MAX_NAME`]. Anything else (a
//! 63-character namespace with a 253-character pod name, or a name from a manifest that the API
//! server would have refused: `_`, spaces, quotes, `;`, newlines, non-ASCII) becomes a readable
//! head of safe characters, `__`, and the first 80 bits of the SHA-256 of the parts.
//!
//! Why that is unique: plain names split back into their parts at each `_` (parts have none)
//! and never contain `__`; hashed names always end in `__` and 20 hex digits; two hashed names
//! are equal only if their SHA-256 prefixes are, which nobody can arrange (an FNV hash, used
//! before, can be steered to collide with a chosen name: two pods sharing a chain would share
//! their rules).

use sha2::{Digest as _, Sha256};

/// Chain and set names are capped well below the kernel's 255 bytes (`NFT_NAME_MAXLEN` 256
/// with the NUL).
pub(crate) const MAX_NAME: usize = 200;

/// Hex digits of the hash in a hashed name (80 bits).
const HASH_HEX: usize = 20;

/// The name of `kind` for `parts`, followed by a fixed `suffix` (made of `[a-z0-9_]`).
pub(crate) fn object_name(kind: &str, parts: &[&str], suffix: &str) -> String {
    let plain = format!("{kind}_{}{suffix}", parts.join("_"));
    if plain.len() <= MAX_NAME && parts.iter().all(|p| is_kubernetes_name(p)) {
        return plain;
    }
    let head: String = plain
        .chars()
        .map(|c| if is_safe(c) { c } else { '_' })
        .take(MAX_NAME - 2 - HASH_HEX)
        .collect();
    format!("{head}__{}", hash_hex(kind, parts, suffix))
}

/// Lowercase alphanumerics, `-` and `.`, at least one character: what namespace (DNS label),
/// pod and policy (DNS subdomain) names are made of.
fn is_kubernetes_name(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Characters `nft` reads in an unquoted identifier (`[a-zA-Z0-9_.-]` after the first letter).
fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

/// The first [`HASH_HEX`] hex digits of the SHA-256 of the kind, the suffix and each part,
/// length-prefixed so that no two different lists encode alike.
fn hash_hex(kind: &str, parts: &[&str], suffix: &str) -> String {
    let mut input = Vec::new();
    for field in [kind, suffix].iter().chain(parts) {
        input.extend_from_slice(&(field.len() as u64).to_be_bytes());
        input.extend_from_slice(field.as_bytes());
    }
    let hash = Sha256::digest(&input);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    hex[..HASH_HEX].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_plain_identifier(name: &str) -> bool {
        name.len() <= MAX_NAME
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(is_safe)
    }

    #[test]
    fn kubernetes_names_that_fit_stay_readable() {
        assert_eq!(
            object_name("in", &["shop", "backend-0.a"], ""),
            "in_shop_backend-0.a"
        );
        assert_eq!(
            object_name("np", &["x", "p"], "_in0_pods4"),
            "np_x_p_in0_pods4"
        );
    }

    #[test]
    fn a_63_character_namespace_and_a_253_character_pod_name_fit_and_stay_distinct() {
        let namespace = "n".repeat(63);
        let pod = format!("{}.{}", "p".repeat(126), "q".repeat(126));
        let other = format!("{}.{}", "p".repeat(126), "r".repeat(126));
        let a = object_name("in", &[&namespace, &pod], "");
        let b = object_name("in", &[&namespace, &other], "");
        assert_eq!(a.len(), MAX_NAME);
        assert!(is_plain_identifier(&a), "{a}");
        assert_ne!(a, b, "same head, different names");
        assert_eq!(a, object_name("in", &[&namespace, &pod], ""), "stable");
    }

    /// Only a manifest can carry such names (the API server refuses them), but they must
    /// neither collide (`a_b`/`c` against `a`/`b_c` once joined by `_`) nor reach `nft`
    /// unquoted as syntax.
    #[test]
    fn names_the_api_server_would_refuse_are_hashed_into_safe_distinct_identifiers() {
        let cases: [&[&str]; 8] = [
            &["a_b", "c"],
            &["a", "b_c"],
            &["a", "b", "c"],
            &["x", "p; flush ruleset"],
            &["x", "p\"\n}"],
            &["x", "Pöd"],
            &["x", ""],
            &["", "x"],
        ];
        let names: Vec<String> = cases.iter().map(|p| object_name("in", p, "")).collect();
        for name in &names {
            assert!(is_plain_identifier(name), "{name:?}");
        }
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        assert!(!names.contains(&object_name("in", &["a", "b-c"], "")));
    }

    #[test]
    fn the_suffix_and_kind_are_part_of_the_identity() {
        let long = "x".repeat(250);
        assert_ne!(
            object_name("np", &["a", &long], "_in0_pods4"),
            object_name("np", &["a", &long], "_in0_pods6")
        );
        assert_ne!(
            object_name("in", &["a", &long], ""),
            object_name("eg", &["a", &long], "")
        );
    }
}
