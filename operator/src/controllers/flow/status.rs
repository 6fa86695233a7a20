//! Step 6: the flow's status from the verdicts: one condition per step, Ready from all of them,
//! the contract in use, replicas, and the revision history.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use millrace_crds::conditions::{ConditionStatus, set_condition};
use millrace_crds::flow::{
    HISTORY_LIMIT, IntegrationFlow, IntegrationFlowStatus, ReleaseStatus, ReplicaCounts,
    ResolvedContract as StatusContract, RevisionRecord, condition, outcome, reason,
};
use millrace_render::{RenderedFlow, ResolvedContract, Verdict, promotion_id, release_digest};

/// The verdict of every condition, in evaluation order.
pub struct Verdicts<'a> {
    /// Accepted.
    pub accepted: &'a Verdict,
    /// ContractsResolved.
    pub contracts: &'a Verdict,
    /// ConnectionsReady.
    pub connections: &'a Verdict,
    /// TopologyReady.
    pub topology: &'a Verdict,
    /// WorkersAvailable.
    pub workers: &'a Verdict,
    /// Healthy.
    pub healthy: &'a Verdict,
}

impl Verdicts<'_> {
    fn by_condition(&self) -> [(&'static str, &Verdict); 6] {
        [
            (condition::ACCEPTED, self.accepted),
            (condition::CONTRACTS_RESOLVED, self.contracts),
            (condition::CONNECTIONS_READY, self.connections),
            (condition::TOPOLOGY_READY, self.topology),
            (condition::WORKERS_AVAILABLE, self.workers),
            (condition::HEALTHY, self.healthy),
        ]
    }

    /// True when every condition holds.
    pub fn ready(&self) -> bool {
        self.by_condition().iter().all(|(_, v)| v.ok)
    }
}

/// Sets every condition and Ready (named by the first failing verdict).
pub fn set_conditions(
    status: &mut IntegrationFlowStatus,
    verdicts: &Verdicts<'_>,
    generation: Option<i64>,
    t: &Time,
) {
    for (type_, v) in verdicts.by_condition() {
        set_condition(
            &mut status.conditions,
            type_,
            ConditionStatus::from_bool(v.ok),
            v.reason,
            v.condition_message(),
            generation,
            t.clone(),
        );
    }
    let (why, message) = match verdicts.by_condition().into_iter().find(|(_, v)| !v.ok) {
        None => (
            reason::READY,
            "the flow is accepted, resolved, declared, running and healthy".to_string(),
        ),
        Some((_, v)) => (v.reason, v.condition_message()),
    };
    set_condition(
        &mut status.conditions,
        condition::READY,
        ConditionStatus::from_bool(verdicts.ready()),
        why,
        message,
        generation,
        t.clone(),
    );
}

/// Records the contract in use.
pub fn set_contract(status: &mut IntegrationFlowStatus, input: Option<&ResolvedContract>) {
    if let Some(c) = input {
        status.contract = Some(StatusContract {
            name: c.name.clone(),
            version: c.version,
            reference: format!("{}@v{}", c.name, c.version),
        });
    }
}

/// How the worker rollout of the current revision stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// Workers are still moving to the revision (or it runs none).
    Pending,
    /// Every replica runs the revision and is available.
    Done,
    /// The rollout passed its progress deadline.
    Stuck,
}

impl Rollout {
    /// The rollout from the `WorkersAvailable` verdict.
    pub fn from_verdict(workers: &Verdict) -> Self {
        if workers.ok {
            Self::Done
        } else if workers.reason == reason::ROLLOUT_STUCK {
            Self::Stuck
        } else {
            Self::Pending
        }
    }
}

/// Records replicas and the revision: a new revision enters the history as `Applied`, with
/// the promotion that brought it, and becomes `RolledOut` once the workers run it, or `Failed`
/// when its rollout gets stuck. A revision that brings back an earlier promotion (a rollback)
/// marks the revisions it replaces `Reverted`.
pub fn set_revision(
    status: &mut IntegrationFlowStatus,
    flow: &IntegrationFlow,
    rendered: &RenderedFlow,
    replicas: ReplicaCounts,
    rollout: Rollout,
    t: &Time,
) {
    status.replicas = Some(replicas);
    if status.revision.as_deref() != Some(rendered.revision.as_str()) {
        let promotion = promotion_id(flow);
        if let Some(p) = &promotion
            && let Some(earlier) = status
                .history
                .iter()
                .skip(1)
                .position(|h| h.promotion_id.as_ref() == Some(p))
        {
            for h in &mut status.history[..=earlier] {
                if h.promotion_id.as_ref() != Some(p) {
                    h.outcome = outcome::REVERTED.into();
                }
            }
        }
        status.history.insert(
            0,
            RevisionRecord {
                revision: rendered.revision.clone(),
                version: flow.spec.version.0.clone(),
                applied_at: t.clone(),
                outcome: outcome::APPLIED.into(),
                promotion_id: promotion,
            },
        );
        status.history.truncate(HISTORY_LIMIT);
        status.revision = Some(rendered.revision.clone());
        status.version = Some(flow.spec.version.0.clone());
    }
    if let Some(h) = status.history.first_mut()
        && h.revision == rendered.revision
        && h.outcome == outcome::APPLIED
    {
        match rollout {
            Rollout::Done => h.outcome = outcome::ROLLED_OUT.into(),
            Rollout::Stuck => h.outcome = outcome::FAILED.into(),
            Rollout::Pending => {}
        }
    }
}

/// Records the release in force. A new release digest starts unrolled; `rolledOutAt` is set
/// the first time every replica runs it and is available, and kept while the digest stays.
pub fn set_release(
    status: &mut IntegrationFlowStatus,
    flow: &IntegrationFlow,
    rollout: Rollout,
    t: &Time,
) {
    let digest = release_digest(flow);
    let version = flow.spec.version.0.clone();
    let promotion = promotion_id(flow);
    let same = status
        .release
        .as_ref()
        .is_some_and(|r| r.digest == digest && r.promotion_id == promotion);
    if !same {
        status.release = Some(ReleaseStatus {
            reference: ReleaseStatus::reference(&version, &digest),
            version,
            digest,
            promotion_id: promotion,
            rolled_out_at: None,
        });
    }
    if let Some(r) = status.release.as_mut()
        && r.rolled_out_at.is_none()
        && rollout == Rollout::Done
    {
        r.rolled_out_at = Some(t.clone());
    }
}

/// Sets `ReleaseVerified` on a promoted flow, and removes it from a flow that is not.
pub fn set_release_verified(
    status: &mut IntegrationFlowStatus,
    verdict: Option<&Verdict>,
    generation: Option<i64>,
    t: &Time,
) {
    match verdict {
        Some(v) => {
            set_condition(
                &mut status.conditions,
                condition::RELEASE_VERIFIED,
                ConditionStatus::from_bool(v.ok),
                v.reason,
                v.condition_message(),
                generation,
                t.clone(),
            );
        }
        None => status
            .conditions
            .retain(|c| c.type_ != condition::RELEASE_VERIFIED),
    }
}
