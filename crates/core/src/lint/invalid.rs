//! `invalid-policy`: what the validator rejects ([`crate::policy`]'s `Policy::from_k8s`),
//! one finding per field error, in the same form as every other finding. An `except` outside
//! its `cidr`, a CIDR that does not parse, an unknown protocol or selector operator all land
//! here, since a policy the API server rejects never matches anything.

use super::context::{Context, finding, policy_ref};
use super::{Finding, RuleId};

pub(super) fn check(context: &Context<'_>, out: &mut Vec<Finding>) {
    for policy in context.snapshot.policies() {
        for error in &policy.errors {
            out.push(finding(
                RuleId::InvalidPolicy,
                policy_ref(policy),
                Some(error.field.clone()),
                error.message.clone(),
                "correct the field; until then the policy isolates the pods it selects and \
                 allows them nothing (kube-nftpol enforces invalid policies fail-closed)"
                    .to_owned(),
            ));
        }
    }
}
