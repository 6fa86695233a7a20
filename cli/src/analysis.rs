//! The judgement of a set of manifests, in three layers, exactly as the cluster would judge
//! them: (1) the CRDs' OpenAPI schemas and (2) their CEL rules, as kube-apiserver admits
//! objects (`millrace-admission`); (3) what the operator judges across objects, through the
//! operator's own code (`millrace-render`): references, jq, schemas, examples, compatibility.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use millrace_admission::{Admission, ViolationKind};
use millrace_crds::contract::EventContract;
use millrace_crds::{IntegrationFlow, PartnerConnection};
use millrace_render::contract::{VersionVerdict, judge_contract, mode};
use millrace_render::{
    Catalog, ConnectionEntry, ContractEntry, FlowJudgement, RenderSettings, judge_flow,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::manifest::Manifest;

/// The field of a problem with the whole object (a rule at the schema's root), which the
/// apiserver reports without a path.
pub const ROOT_FIELD: &str = "<root>";

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The cluster would refuse the object or report it not Accepted/Resolved.
    Error,
    /// Allowed, but worth knowing (a reference outside the set, with `--allow-missing-refs`).
    Warning,
}

/// One problem with one object.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// File the object came from.
    pub file: String,
    /// Line where its document starts.
    pub line: usize,
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The field at fault (`spec.routes[0].name`).
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
    /// A CamelCase reason when the problem comes from a condition the operator would set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let warning = if self.severity == Severity::Warning {
            "warning: "
        } else {
            ""
        };
        write!(
            f,
            "{}:{}: {}/{}: {}: {warning}{}",
            self.file, self.line, self.kind, self.name, self.field, self.message
        )
    }
}

/// What to tolerate.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// A reference to an object outside the set is a warning, not an error.
    pub allow_missing_refs: bool,
    /// Objects of kinds other than Millrace's are errors.
    pub strict: bool,
}

/// A flow of the set with the operator's judgement of it.
pub struct JudgedFlow {
    /// Where it came from.
    pub manifest: Manifest,
    /// The flow as the apiserver would store it (defaults applied).
    pub flow: IntegrationFlow,
    /// The judgement: verdicts and, when it renders, the objects.
    pub judgement: FlowJudgement,
}

/// The judgement of a whole set.
pub struct Analysis {
    /// Every problem, in input order.
    pub problems: Vec<Problem>,
    /// Every flow that passed admission, judged.
    pub flows: Vec<JudgedFlow>,
    /// Objects checked.
    pub objects: usize,
}

impl Analysis {
    /// True when no problem is an error.
    pub fn valid(&self) -> bool {
        self.problems.iter().all(|p| p.severity != Severity::Error)
    }
}

fn problem(m: &Manifest, field: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        file: m.file.clone(),
        line: m.line,
        kind: m.kind.clone(),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        field: field.into(),
        message: message.into(),
        severity: Severity::Error,
        reason: None,
    }
}

/// Refuses Millrace apiVersions with a kind or version this release does not serve.
pub fn check_kinds(manifests: &[Manifest], admission: &Admission) -> Result<()> {
    for m in manifests {
        if m.is_millrace() && !admission.serves(&m.api_version, &m.kind) {
            bail!(
                "{}: {} {} is not a kind this release serves: use apiVersion millrace.dev/v1alpha1 with EventContract, PartnerConnection or IntegrationFlow",
                m.at(),
                m.api_version,
                m.kind
            );
        }
    }
    Ok(())
}

fn typed<K: DeserializeOwned>(
    m: &Manifest,
    admission: &Admission,
    problems: &mut Vec<Problem>,
) -> Option<K> {
    let mut value = admission.defaulted(&m.value);
    // The namespace the object lands in, as the operator sees it.
    value["metadata"]["namespace"] = m.namespace.clone().into();
    match serde_json::from_value(value) {
        Ok(k) => Some(k),
        Err(e) => {
            problems.push(problem(m, "spec", format!("cannot be read: {e}")));
            None
        }
    }
}

/// Judges every flow, in order, spreading them over the available cores.
fn judge_all(
    flows: &[(Manifest, IntegrationFlow)],
    catalogs: &BTreeMap<String, Catalog>,
    settings: &RenderSettings,
) -> Vec<FlowJudgement> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = flows.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = flows
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(m, f)| judge_flow(f, &catalogs[&m.namespace], settings))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Judges `manifests`. `live` holds catalogs of objects already in the cluster, by namespace;
/// objects in the set take their place.
pub fn analyse(
    manifests: &[Manifest],
    admission: &Admission,
    settings: &RenderSettings,
    options: Options,
    live: BTreeMap<String, Catalog>,
) -> Analysis {
    let mut problems = Vec::new();
    let mut catalogs = live;
    let mut flows: Vec<(Manifest, IntegrationFlow)> = Vec::new();
    let mut contracts: Vec<(Manifest, EventContract, Vec<VersionVerdict>)> = Vec::new();

    // (1), (2): what admission refuses never reaches the cluster, so it is not in the catalog.
    for m in manifests {
        let catalog = catalogs
            .entry(m.namespace.clone())
            .or_insert_with(|| Catalog::new(&m.namespace));
        if !m.is_millrace() {
            if options.strict {
                problems.push(problem(
                    m,
                    "kind",
                    format!(
                        "{} {} is not a Millrace kind, and --strict refuses other kinds: remove it or drop --strict",
                        m.api_version, m.kind
                    ),
                ));
            }
            if m.kind == "ConfigMap" && m.api_version == "v1" {
                match serde_json::from_value::<ConfigMap>(m.value.clone()) {
                    Ok(cm) => {
                        catalog
                            .config_maps
                            .insert(m.name.clone(), cm.data.unwrap_or_default());
                    }
                    Err(e) => problems.push(problem(m, "data", format!("cannot be read: {e}"))),
                }
            }
            continue;
        }
        let violations = admission.validate(&m.value);
        if !violations.is_empty() {
            problems.extend(
                violations
                    .into_iter()
                    .map(|v| match (v.field.is_empty(), v.kind) {
                        // A rule at the root of the schema (on metadata.name, say) names no field.
                        (true, ViolationKind::Rule) => problem(m, ROOT_FIELD, v.message),
                        // The apiserver's note that CEL rules were skipped after other errors: it
                        // names no field and refuses nothing by itself.
                        (true, _) => {
                            let mut p = problem(m, ROOT_FIELD, v.message);
                            p.severity = Severity::Warning;
                            p
                        }
                        (false, _) => problem(m, v.field, v.message),
                    }),
            );
            continue;
        }
        match m.kind.as_str() {
            "EventContract" => {
                if let Some(c) = typed::<EventContract>(m, admission, &mut problems) {
                    let verdicts = judge_contract(&c.spec);
                    catalog.contracts.insert(
                        m.name.clone(),
                        ContractEntry::from_verdicts(c.clone(), &verdicts),
                    );
                    contracts.push((m.clone(), c, verdicts));
                }
            }
            "PartnerConnection" => {
                if let Some(c) = typed::<PartnerConnection>(m, admission, &mut problems) {
                    catalog
                        .connections
                        .insert(m.name.clone(), ConnectionEntry::unjudged(c));
                }
            }
            "IntegrationFlow" => {
                if let Some(f) = typed::<IntegrationFlow>(m, admission, &mut problems) {
                    flows.push((m.clone(), f));
                }
            }
            _ => {}
        }
    }

    // (3): contracts, as the contract controller judges them.
    for (m, c, verdicts) in &contracts {
        let md = mode(c.spec.compatibility);
        for v in verdicts {
            if let Some(message) = v.message(md) {
                let index = c
                    .spec
                    .versions
                    .iter()
                    .position(|s| s.version == v.version)
                    .unwrap_or_default();
                let mut p = problem(m, format!("spec.versions[{index}]"), message);
                p.reason = Some(
                    if v.rejection.as_ref().is_some_and(|r| r.is_schema_problem()) {
                        millrace_crds::contract::reason::INVALID_SCHEMA
                    } else {
                        millrace_crds::contract::reason::INCOMPATIBLE_VERSION
                    }
                    .into(),
                );
                problems.push(p);
            }
        }
    }

    // (3): flows, as the flow controller judges them; on every core, since compiling jq
    // dominates and flows are independent.
    let judgements = judge_all(&flows, &catalogs, settings);
    let mut judged = Vec::new();
    for ((m, flow), judgement) in flows.into_iter().zip(judgements) {
        for v in judgement.verdicts().into_iter().filter(|v| !v.ok) {
            let mut p = problem(
                &m,
                v.field.clone().unwrap_or_else(|| "spec".into()),
                &v.message,
            );
            p.reason = Some(v.reason.into());
            if v.is_missing_reference() && options.allow_missing_refs {
                p.severity = Severity::Warning;
            }
            problems.push(p);
        }
        judged.push(JudgedFlow {
            manifest: m,
            flow,
            judgement,
        });
    }
    Analysis {
        problems,
        flows: judged,
        objects: manifests.len(),
    }
}
