//! Contracts: how a schema is compiled (exactly as the worker validates events), and the one
//! verdict on a contract's versions that the operator writes to status and the CLI prints.

use millrace_compat::{Change, CompatibilityMode, check_versions};
use millrace_crds::contract::{
    CompatibilityMode as SpecMode, ContractVersionStatus, EventContractSpec, SchemaChange,
};
use serde_json::Value;

use crate::digest::{canonical_json, digest};

/// Compiles a JSON Schema the way the worker does when it validates events, so that examples
/// are judged as real events will be.
pub fn validator(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

/// The problems of `instance` under `validator`, each as `at <pointer>: <error>` (at most `limit`).
pub fn problems(validator: &jsonschema::Validator, instance: &Value, limit: usize) -> Vec<String> {
    validator
        .iter_errors(instance)
        .take(limit)
        .map(|error| {
            let at = error.instance_path().to_string();
            let at = if at.is_empty() { "/".to_string() } else { at };
            format!("at {at}: {error}")
        })
        .collect()
}

/// The compatibility mode of the compatibility engine for a spec's mode.
pub fn mode(spec: SpecMode) -> CompatibilityMode {
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

/// One version to judge.
#[derive(Clone, Copy, Debug)]
pub struct VersionInput<'a> {
    /// Version number.
    pub version: u32,
    /// Its JSON Schema.
    pub schema: &'a Value,
    /// Its example events.
    pub examples: &'a [Value],
}

/// Why a version is not accepted.
#[derive(Clone, Debug, PartialEq)]
pub enum Rejection {
    /// The schema does not compile.
    SchemaInvalid(String),
    /// Example `index` (0-based) does not validate.
    ExampleInvalid {
        /// Position in `examples`.
        index: usize,
        /// `at <pointer>: <error>` lines.
        problems: Vec<String>,
    },
    /// The version breaks the mode: each breaking change with the version it breaks against.
    Incompatible(Vec<(u32, Change)>),
    /// The compatibility engine cannot compare the schema (an unsupported construct).
    Uncomparable(String),
}

impl Rejection {
    /// True when the schema or an example is at fault, not compatibility.
    pub fn is_schema_problem(&self) -> bool {
        matches!(
            self,
            Rejection::SchemaInvalid(_) | Rejection::ExampleInvalid { .. }
        )
    }
}

/// The verdict on one version.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionVerdict {
    /// Version number.
    pub version: u32,
    /// `sha256:` of the canonical schema JSON.
    pub digest: String,
    /// Why it is rejected; `None` when flows may use it.
    pub rejection: Option<Rejection>,
    /// Every change since the latest earlier accepted version.
    pub changes: Vec<Change>,
}

impl VersionVerdict {
    /// Whether flows may use the version.
    pub fn accepted(&self) -> bool {
        self.rejection.is_none()
    }

    /// The operator's message for a rejected version, naming the field.
    pub fn message(&self, mode: CompatibilityMode) -> Option<String> {
        let v = self.version;
        Some(match self.rejection.as_ref()? {
            Rejection::SchemaInvalid(e) => {
                format!("spec.versions[version={v}].schema does not compile: {e}")
            }
            Rejection::ExampleInvalid { index, problems } => format!(
                "spec.versions[version={v}].examples[{index}] does not validate: {}",
                problems.join("; ")
            ),
            Rejection::Incompatible(changes) => {
                let (against, c) = &changes[0];
                format!(
                    "version {v} breaks {} compatibility with version {against}: {} at {}",
                    mode.as_str(),
                    c.kind.as_str(),
                    c.path
                )
            }
            Rejection::Uncomparable(e) => {
                format!("spec.versions[version={v}].schema cannot be compared: {e}")
            }
        })
    }

    /// The status entry the operator writes for this version.
    pub fn status(&self, mode: CompatibilityMode) -> ContractVersionStatus {
        ContractVersionStatus {
            version: self.version,
            digest: self.digest.clone(),
            accepted: self.accepted(),
            message: self.message(mode),
            changes: self
                .changes
                .iter()
                .map(|c| SchemaChange {
                    kind: c.kind.as_str().to_string(),
                    path: c.path.clone(),
                    breaking: c.breaking(mode),
                })
                .collect(),
        }
    }
}

/// The digest of a schema: `sha256:` of its canonical JSON.
pub fn schema_digest(schema: &Value) -> String {
    digest(canonical_json(schema).as_bytes())
}

/// Judges versions (in the order given, oldest first) under `mode`: each schema must compile,
/// each example must validate, and each version must be compatible with the latest accepted
/// version (all accepted versions for transitive modes). A rejected version is never the
/// baseline of a later one, so one bad commit cannot poison the versions after it.
pub fn judge_versions(
    mode: CompatibilityMode,
    versions: &[VersionInput<'_>],
) -> Vec<VersionVerdict> {
    let mut verdicts: Vec<VersionVerdict> = versions
        .iter()
        .map(|v| VersionVerdict {
            version: v.version,
            digest: schema_digest(v.schema),
            rejection: None,
            changes: Vec::new(),
        })
        .collect();
    for (v, verdict) in versions.iter().zip(verdicts.iter_mut()) {
        let compiled = match validator(v.schema) {
            Ok(c) => c,
            Err(e) => {
                verdict.rejection = Some(Rejection::SchemaInvalid(e));
                continue;
            }
        };
        if let Some((index, problems)) = v
            .examples
            .iter()
            .enumerate()
            .map(|(i, ex)| (i, problems(&compiled, ex, 3)))
            .find(|(_, p)| !p.is_empty())
        {
            verdict.rejection = Some(Rejection::ExampleInvalid { index, problems });
            continue;
        }
        if let Err(e) = millrace_compat::validate_schema(v.schema) {
            verdict.rejection = Some(Rejection::Uncomparable(e.to_string()));
        }
    }
    // Compatibility among the versions that are sound on their own.
    let candidates: Vec<usize> = (0..versions.len())
        .filter(|&i| verdicts[i].rejection.is_none())
        .collect();
    let schemas: Vec<&Value> = candidates.iter().map(|&i| versions[i].schema).collect();
    match check_versions(mode, &schemas) {
        Ok(found) => {
            for f in found {
                let i = candidates[f.index];
                verdicts[i].changes = f.changes_from_previous;
                if !f.compatible {
                    verdicts[i].rejection = Some(Rejection::Incompatible(
                        f.breaking_changes
                            .into_iter()
                            .map(|b| (versions[candidates[b.against]].version, b.change))
                            .collect(),
                    ));
                }
            }
        }
        Err(e) => {
            for &i in &candidates {
                verdicts[i].rejection = Some(Rejection::Uncomparable(e.to_string()));
            }
        }
    }
    verdicts
}

/// Judges every version of a contract spec, in version order.
pub fn judge_contract(spec: &EventContractSpec) -> Vec<VersionVerdict> {
    let mut versions: Vec<VersionInput<'_>> = spec
        .versions
        .iter()
        .map(|v| VersionInput {
            version: v.version,
            schema: &v.schema,
            examples: &v.examples,
        })
        .collect();
    versions.sort_by_key(|v| v.version);
    judge_versions(mode(spec.compatibility), &versions)
}

/// The status entries of every version of a contract spec.
pub fn version_statuses(spec: &EventContractSpec) -> Vec<ContractVersionStatus> {
    let m = mode(spec.compatibility);
    judge_contract(spec).iter().map(|v| v.status(m)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_crds::contract::ContractVersion;
    use serde_json::json;

    fn spec(mode: SpecMode, schemas: Vec<Value>) -> EventContractSpec {
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

    fn closed(props: Value, required: &[&str]) -> Value {
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
        let verdicts = version_statuses(&spec(SpecMode::BackwardTransitive, vec![v1, v2, v3]));
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
    fn a_rejected_version_is_never_a_baseline() {
        let v1 = closed(json!({"id": {"type": "string"}}), &["id"]);
        let v2 = closed(
            json!({"id": {"type": "string"}, "qty": {"type": "number"}}),
            &["id", "qty"],
        );
        let v3 = closed(
            json!({"id": {"type": "string"}, "note": {"type": "string"}}),
            &["id"],
        );
        let verdicts = judge_contract(&spec(SpecMode::Backward, vec![v1, v2, v3]));
        assert!(!verdicts[1].accepted());
        assert!(verdicts[2].accepted(), "{verdicts:?}");
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
        let verdicts = judge_contract(&s);
        assert!(matches!(
            verdicts[0].rejection,
            Some(Rejection::ExampleInvalid { index: 0, .. })
        ));
        assert!(verdicts[0].rejection.as_ref().unwrap().is_schema_problem());
        let statuses = version_statuses(&s);
        assert!(
            statuses[0]
                .message
                .as_deref()
                .unwrap()
                .contains("examples[0]"),
            "{statuses:?}"
        );
        assert!(
            statuses[1]
                .message
                .as_deref()
                .unwrap()
                .contains("does not compile"),
            "{statuses:?}"
        );
    }
}
