//! EventContract: the verdict on every version (`millrace_render::contract`, the same call as
//! `millrace validate`), written to status.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use millrace_crds::conditions::{ConditionStatus, set_condition};
use millrace_crds::contract::{EventContract, condition, reason};
use millrace_render::contract::{judge_contract, mode};
use millrace_render::references::uses_contract;

use super::{apply_pause, measured, now, write_status};
use crate::context::Context;
use crate::error::{Error, Result};

/// Reconciles one EventContract.
pub async fn reconcile(contract: Arc<EventContract>, ctx: Arc<Context>) -> Result<Action> {
    measured(&ctx, contract.as_ref(), apply(&contract, &ctx)).await
}

async fn apply(contract: &EventContract, ctx: &Context) -> Result<Action> {
    let ns = contract
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = contract.name_any();
    let api: Api<EventContract> = Api::namespaced(ctx.client.clone(), &ns);
    let old = contract.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let generation = contract.metadata.generation;
    let t = now();
    if apply_pause(&contract.metadata, &mut status) {
        write_status(ctx, &api, contract, &old, &status).await?;
        return Ok(Action::await_change());
    }

    let judged = judge_contract(&contract.spec);
    let m = mode(contract.spec.compatibility);
    let schema_problem = judged
        .iter()
        .find(|v| v.rejection.as_ref().is_some_and(|r| r.is_schema_problem()));
    let compat_problem = judged
        .iter()
        .find(|v| v.rejection.as_ref().is_some_and(|r| !r.is_schema_problem()));
    set_condition(
        &mut status.conditions,
        condition::ACCEPTED,
        ConditionStatus::from_bool(schema_problem.is_none()),
        if schema_problem.is_none() {
            reason::SCHEMAS_VALID
        } else {
            reason::INVALID_SCHEMA
        },
        schema_problem
            .and_then(|v| v.message(m))
            .unwrap_or_else(|| "every schema compiles and every example validates".into()),
        generation,
        t.clone(),
    );
    set_condition(
        &mut status.conditions,
        condition::COMPATIBLE,
        ConditionStatus::from_bool(compat_problem.is_none()),
        if compat_problem.is_none() {
            reason::COMPATIBLE
        } else {
            reason::INCOMPATIBLE_VERSION
        },
        compat_problem
            .and_then(|v| v.message(m))
            .unwrap_or_else(|| {
                format!(
                    "all versions are compatible under {:?}",
                    contract.spec.compatibility
                )
            }),
        generation,
        t.clone(),
    );
    let verdicts: Vec<_> = judged.iter().map(|v| v.status(m)).collect();
    let latest = verdicts
        .iter()
        .filter(|v| v.accepted)
        .map(|v| v.version)
        .max();
    let all_ok = verdicts.iter().all(|v| v.accepted);
    let (ready, reason, message) = match (latest, all_ok) {
        (Some(l), true) => (
            true,
            reason::READY,
            format!("version {l} is the latest accepted version"),
        ),
        (Some(l), false) => (
            false,
            reason::VERSION_REJECTED,
            format!(
                "{}; flows keep using version {l}",
                verdicts
                    .iter()
                    .find(|v| !v.accepted)
                    .and_then(|v| v.message.clone())
                    .unwrap_or_default()
            ),
        ),
        (None, _) => (
            false,
            reason::NO_ACCEPTED_VERSION,
            "no version is accepted; see status.versions".to_string(),
        ),
    };
    set_condition(
        &mut status.conditions,
        condition::READY,
        ConditionStatus::from_bool(ready),
        reason,
        message,
        generation,
        t,
    );
    status.latest_accepted_version = latest;
    status.versions = verdicts;
    status.observed_generation = generation;
    let mut used_by: Vec<String> = ctx
        .flows
        .state()
        .iter()
        .filter(|f| f.namespace().as_deref() == Some(ns.as_str()))
        .filter(|f| uses_contract(&f.spec, &name))
        .map(|f| f.name_any())
        .collect();
    used_by.sort();
    status.used_by = used_by;

    write_status(ctx, &api, contract, &old, &status).await?;
    Ok(Action::await_change())
}
