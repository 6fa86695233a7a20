//! Step 6: the flow's status from the verdicts: one condition per step, Ready from all of them,
//! the contract in use, replicas, and the revision history.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use millrace_crds::conditions::{ConditionStatus, set_condition};
use millrace_crds::flow::{
    HISTORY_LIMIT, IntegrationFlow, IntegrationFlowStatus, ReplicaCounts,
    ResolvedContract as StatusContract, RevisionRecord, condition, reason,
};
use millrace_render::{RenderedFlow, ResolvedContract, Verdict};

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

/// Records replicas and the revision: a new revision enters the history as `Applied`, and
/// becomes `RolledOut` once the workers run it.
pub fn set_revision(
    status: &mut IntegrationFlowStatus,
    flow: &IntegrationFlow,
    rendered: &RenderedFlow,
    replicas: ReplicaCounts,
    rolled_out: bool,
    t: &Time,
) {
    status.replicas = Some(replicas);
    if status.revision.as_deref() != Some(rendered.revision.as_str()) {
        status.history.insert(
            0,
            RevisionRecord {
                revision: rendered.revision.clone(),
                version: flow.spec.version.0.clone(),
                applied_at: t.clone(),
                outcome: "Applied".into(),
            },
        );
        status.history.truncate(HISTORY_LIMIT);
        status.revision = Some(rendered.revision.clone());
        status.version = Some(flow.spec.version.0.clone());
    }
    if rolled_out
        && let Some(h) = status.history.first_mut()
        && h.revision == rendered.revision
        && h.outcome == "Applied"
    {
        h.outcome = "RolledOut".into();
    }
}
