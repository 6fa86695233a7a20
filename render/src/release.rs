//! The release a flow carries: the digest promotion annotated, and whether the live spec still
//! has it. The operator reports the verdict as `ReleaseVerified`; `millrace promote` writes the
//! annotations this module reads.

use millrace_crds::IntegrationFlow;
use millrace_crds::flow::{annotation, reason};

use crate::Verdict;
use crate::digest::release_digest;

/// The `ReleaseVerified` verdict of a flow, or `None` when the flow carries no release
/// annotation (it was authored in place, not promoted).
pub fn verify_release(flow: &IntegrationFlow) -> Option<Verdict> {
    let annotated = flow
        .metadata
        .annotations
        .as_ref()?
        .get(annotation::RELEASE_DIGEST)?;
    let live = release_digest(flow);
    Some(if *annotated == live {
        Verdict::ok(
            reason::DIGEST_MATCHES,
            format!("the live spec has the promoted release digest {live}"),
        )
    } else {
        Verdict::fail(
            reason::DIGEST_MISMATCH,
            None,
            format!(
                "the live spec has release digest {live}, but {} promoted {annotated}: the flow was edited outside promotion; it keeps running as edited. Revert the edit, or promote the change through Git",
                annotation::RELEASE_DIGEST
            ),
        )
    })
}

/// The promotion id a flow carries, when it was promoted.
pub fn promotion_id(flow: &IntegrationFlow) -> Option<String> {
    flow.metadata
        .annotations
        .as_ref()?
        .get(annotation::PROMOTION_ID)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> IntegrationFlow {
        serde_yaml::from_str(crate::digest::tests::FLOW).unwrap()
    }

    fn annotate(flow: &mut IntegrationFlow, digest: &str) {
        flow.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(annotation::RELEASE_DIGEST.into(), digest.into());
    }

    #[test]
    fn an_unannotated_flow_has_no_verdict() {
        assert!(verify_release(&flow()).is_none());
    }

    #[test]
    fn the_promoted_digest_verifies_and_a_hand_edit_does_not() {
        let mut f = flow();
        let d = release_digest(&f);
        annotate(&mut f, &d);
        let v = verify_release(&f).unwrap();
        assert!(v.ok, "{}", v.message);
        f.spec.routes[0].name = "erp-2".into();
        let v = verify_release(&f).unwrap();
        assert!(!v.ok);
        assert_eq!(v.reason, reason::DIGEST_MISMATCH);
        assert!(v.message.contains(&d), "{}", v.message);
        assert!(v.message.contains(&release_digest(&f)), "{}", v.message);
    }
}
