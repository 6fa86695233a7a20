//! EventContract: compile each version's schema, check its examples and its compatibility with
//! the versions before it, and report a verdict per version.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use millrace_compat::CompatibilityMode;
use millrace_crds::conditions::{ConditionStatus, set_condition};
use millrace_crds::contract::{
    CompatibilityMode as SpecMode, ContractVersionStatus, EventContract, EventContractSpec,
    SchemaChange,
};

use super::{apply_pause, measured, now, write_status};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::render::digest;

/// Condition types of a contract.
pub mod condition {
    /// Every schema compiles and every example validates.
    pub const ACCEPTED: &str = "Accepted";
    /// Every version is compatible with the ones before it under the contract's mode.
    pub const COMPATIBLE: &str = "Compatible";
    /// Every declared version is accepted and served.
    pub const READY: &str = "Ready";
}

fn mode(spec: SpecMode) -> CompatibilityMode {
    match spec {
        SpecMode::None => CompatibilityMode::None,
        SpecMode::Backward => CompatibilityMode::Backward,
        SpecMode::BackwardTransitive => CompatibilityMode::BackwardTransitive,
        SpecMode::Forward => CompatibilityMode::Forward,
        SpecMode::ForwardTransitive => CompatibilityMode::ForwardTransitive,
        SpecMode::Full => CompatibilityMode::Full,
        SpecMode::FullTransitive => CompatibilityMode::FullTransitive,
    }
}

/// The verdict on every version of a contract. Pure: the CLI and tests use it too.
pub fn evaluate(spec: &EventContractSpec) -> Vec<ContractVersionStatus> {
    let mode = mode(spec.compatibility);
    let mut versions: Vec<_> = spec.versions.iter().collect();
    versions.sort_by_key(|v| v.version);
    let mut accepted: Vec<&serde_json::Value> = Vec::new();
    let mut out = Vec::with_capacity(versions.len());
    for v in versions {
        let canonical = serde_json::to_vec(&v.schema).unwrap_or_default();
        let mut status = ContractVersionStatus {
            version: v.version,
            digest: digest(&canonical),
            accepted: false,
            message: None,
            changes: Vec::new(),
        };
        let validator = match jsonschema::validator_for(&v.schema) {
            Ok(validator) => validator,
            Err(e) => {
                status.message = Some(format!(
                    "spec.versions[version={}].schema does not compile: {e}",
                    v.version
                ));
                out.push(status);
                continue;
            }
        };
        if let Some((i, err)) = v
            .examples
            .iter()
            .enumerate()
            .find_map(|(i, ex)| validator.validate(ex).err().map(|e| (i, e)))
        {
            status.message = Some(format!(
                "spec.versions[version={}].examples[{i}] does not validate: {} at {}",
                v.version,
                err,
                err.instance_path()
            ));
            out.push(status);
            continue;
        }
        // Compare with the accepted versions this mode names: the latest, or all of them.
        let against: Vec<&serde_json::Value> = if mode.is_transitive() {
            accepted.clone()
        } else {
            accepted.last().copied().into_iter().collect()
        };
        let mut problem = None;
        for old in against {
            match millrace_compat::diff(old, &v.schema) {
                Ok(diff) => {
                    for c in &diff.changes {
                        let breaking = c.breaking(mode);
                        let change = SchemaChange {
                            kind: c.kind.as_str().to_string(),
                            path: c.path.clone(),
                            breaking,
                        };
                        if !status.changes.contains(&change) {
                            status.changes.push(change);
                        }
                        if breaking && problem.is_none() {
                            problem = Some(format!(
                                "version {} breaks {} compatibility: {} at {}",
                                v.version,
                                mode.as_str(),
                                c.kind.as_str(),
                                c.path
                            ));
                        }
                    }
                }
                Err(e) => {
                    problem = Some(format!(
                        "spec.versions[version={}].schema cannot be compared: {e}",
                        v.version
                    ))
                }
            }
        }
        match problem {
            Some(p) => status.message = Some(p),
            None => {
                status.accepted = true;
                accepted.push(&v.schema);
            }
        }
        out.push(status);
    }
    out
}

/// Reconciles one EventContract.
pub async fn reconcile(contract: Arc<EventContract>, ctx: Arc<Context>) -> Result<Action> {
    measured(&ctx, "EventContract", apply(&contract, &ctx)).await
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

    let verdicts = evaluate(&contract.spec);
    let compile_problem = verdicts
        .iter()
        .find(|v| v.message.as_deref().is_some_and(|m| m.contains("does not")));
    let compat_problem = verdicts
        .iter()
        .find(|v| !v.accepted && !v.message.as_deref().is_some_and(|m| m.contains("does not")));
    set_condition(
        &mut status.conditions,
        condition::ACCEPTED,
        ConditionStatus::from_bool(compile_problem.is_none()),
        if compile_problem.is_none() {
            "SchemasValid"
        } else {
            "InvalidSchema"
        },
        compile_problem
            .and_then(|v| v.message.clone())
            .unwrap_or_else(|| "every schema compiles and every example validates".into()),
        generation,
        t.clone(),
    );
    set_condition(
        &mut status.conditions,
        condition::COMPATIBLE,
        ConditionStatus::from_bool(compat_problem.is_none()),
        if compat_problem.is_none() {
            "Compatible"
        } else {
            "IncompatibleVersion"
        },
        compat_problem
            .and_then(|v| v.message.clone())
            .unwrap_or_else(|| {
                format!(
                    "all versions are compatible under {:?}",
                    contract.spec.compatibility
                )
            }),
        generation,
        t.clone(),
    );
    let latest = verdicts
        .iter()
        .filter(|v| v.accepted)
        .map(|v| v.version)
        .max();
    let all_ok = verdicts.iter().all(|v| v.accepted);
    let (ready, reason, message) = match (latest, all_ok) {
        (Some(l), true) => (
            true,
            "Ready",
            format!("version {l} is the latest accepted version"),
        ),
        (Some(l), false) => (
            false,
            "VersionRejected",
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
            "NoAcceptedVersion",
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
        .filter(|f| super::flow::uses_contract(&f.spec, &name))
        .map(|f| f.name_any())
        .collect();
    used_by.sort();
    status.used_by = used_by;

    write_status(ctx, &api, contract, &old, &status).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_crds::contract::ContractVersion;
    use serde_json::json;

    fn spec(mode: SpecMode, schemas: Vec<serde_json::Value>) -> EventContractSpec {
        EventContractSpec {
            type_: "com.acme.test.v1".into(),
            owner: None,
            compatibility: mode,
            versions: schemas
                .into_iter()
                .enumerate()
                .map(|(i, schema)| ContractVersion {
                    version: i as u32 + 1,
                    schema,
                    examples: vec![],
                    deprecated: false,
                })
                .collect(),
        }
    }

    fn closed(props: serde_json::Value, required: &[&str]) -> serde_json::Value {
        json!({"type": "object", "additionalProperties": false, "properties": props, "required": required})
    }

    #[test]
    fn optional_field_is_accepted_and_required_field_is_rejected() {
        let v1 = closed(json!({"id": {"type": "string"}}), &["id"]);
        let v2 = closed(
            json!({"id": {"type": "string"}, "note": {"type": "string"}}),
            &["id"],
        );
        let v3 = closed(
            json!({"id": {"type": "string"}, "note": {"type": "string"}, "qty": {"type": "number"}}),
            &["id", "qty"],
        );
        let verdicts = evaluate(&spec(SpecMode::BackwardTransitive, vec![v1, v2, v3]));
        assert!(verdicts[0].accepted && verdicts[1].accepted, "{verdicts:?}");
        assert!(!verdicts[2].accepted);
        assert!(
            verdicts[2]
                .message
                .as_deref()
                .unwrap()
                .contains("version 3"),
            "{verdicts:?}"
        );
        assert!(verdicts[2].changes.iter().any(|c| c.breaking));
    }

    #[test]
    fn bad_examples_and_schemas_are_rejected_by_name() {
        let mut s = spec(
            SpecMode::None,
            vec![
                closed(json!({"id": {"type": "string"}}), &["id"]),
                json!({"type": 12}),
            ],
        );
        s.versions[0].examples = vec![json!({"id": 5})];
        let verdicts = evaluate(&s);
        assert!(
            verdicts[0]
                .message
                .as_deref()
                .unwrap()
                .contains("examples[0]"),
            "{verdicts:?}"
        );
        assert!(
            verdicts[1]
                .message
                .as_deref()
                .unwrap()
                .contains("does not compile"),
            "{verdicts:?}"
        );
    }
}
