//! The gates a promotion passes, each a pure judgement over files or over the source cluster's
//! view of the flow. A gate that does not pass gives a [`Refusal`] naming itself and its evidence.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::ValueEnum;
use millrace_crds::conditions::find;
use millrace_crds::contract::{EventContract, EventContractSpec};
use millrace_crds::flow::{IntegrationFlow, condition};
use millrace_render::contract::{Rejection, judge_contract, mode, schema_digest};
use millrace_render::references::connection_fields;

use super::pipeline::{Environment, Holds};
use super::repo::ReleasedSet;

/// A gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Gate {
    /// `millrace validate` of the target environment after the change.
    Render,
    /// Contract versions exist in the target with equal schema digests, or are appended.
    Contracts,
    /// Every connection the flow names exists in the target's `env/`.
    Connections,
    /// The source cluster runs exactly the file, verified and Ready.
    SourceTruth,
    /// Healthy for at least the source's soak.
    Soak,
    /// No hold on the flow in the target.
    Holds,
    /// No freeze window of the target now.
    Freeze,
    /// Partitions and queue arguments stay, unless allowed.
    Topology,
}

impl Gate {
    /// The gate's name, as `--override` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Gate::Render => "render",
            Gate::Contracts => "contracts",
            Gate::Connections => "connections",
            Gate::SourceTruth => "source-truth",
            Gate::Soak => "soak",
            Gate::Holds => "holds",
            Gate::Freeze => "freeze",
            Gate::Topology => "topology",
        }
    }

    /// Gates a person may override with a reason: evidence and policy, not correctness.
    /// Render, contracts and connections guard what the target cluster can run; topology has
    /// its own flag.
    pub fn overridable(self) -> bool {
        matches!(
            self,
            Gate::SourceTruth | Gate::Soak | Gate::Holds | Gate::Freeze
        )
    }
}

/// Why a gate refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The gate.
    pub gate: Gate,
    /// What it saw.
    pub evidence: String,
}

impl Refusal {
    fn new(gate: Gate, evidence: impl Into<String>) -> Self {
        Self {
            gate,
            evidence: evidence.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused by gate {}: {}", self.gate.name(), self.evidence)
    }
}

/// The contract versions a flow uses, resolved in the source: `(contract, version)`. An
/// unpinned reference is the source's latest accepted version.
pub fn contracts_used(
    flow: &IntegrationFlow,
    source: &ReleasedSet,
    source_env: &str,
) -> Result<Vec<(String, u32)>, Refusal> {
    let mut refs = vec![("spec.contract", flow.spec.contract.clone())];
    if let Some(o) = flow
        .spec
        .transform
        .as_ref()
        .and_then(|t| t.output_contract.clone())
    {
        refs.push(("spec.transform.outputContract", o));
    }
    let mut used = Vec::new();
    for (field, r) in refs {
        let Some(c) = source.contracts.get(&r.name) else {
            return Err(Refusal::new(
                Gate::Contracts,
                format!(
                    "{field} names EventContract/{} that {source_env}'s released/ does not hold: add it there first",
                    r.name
                ),
            ));
        };
        let version = match r.version {
            Some(v) => v,
            None => judge_contract(&c.object.spec)
                .iter()
                .filter(|v| v.accepted())
                .map(|v| v.version)
                .max()
                .ok_or_else(|| {
                    Refusal::new(
                        Gate::Contracts,
                        format!(
                            "EventContract/{} has no accepted version in {source_env}",
                            r.name
                        ),
                    )
                })?,
        };
        if c.object.spec.version(version).is_none() {
            return Err(Refusal::new(
                Gate::Contracts,
                format!(
                    "{field} pins EventContract/{} version {version}, which {source_env} does not define",
                    r.name
                ),
            ));
        }
        if !used.contains(&(r.name.clone(), version)) {
            used.push((r.name.clone(), version));
        }
    }
    Ok(used)
}

/// The target's contracts after the promotion: for each used `(contract, version)`, the
/// target's versions up to it must have the source's schema digests (else `ContractDrift`);
/// missing versions are appended from the source and judged under the target's mode.
/// Returns the contracts that change.
pub fn plan_contracts(
    used: &[(String, u32)],
    source: &ReleasedSet,
    target: &ReleasedSet,
    target_env: &str,
) -> Result<Vec<EventContract>, Vec<Refusal>> {
    let mut changed = Vec::new();
    let mut refusals = Vec::new();
    for (name, version) in used {
        let src = &source.contracts[name].object;
        let mut want: EventContract = match target.contracts.get(name) {
            Some(t) => t.object.clone(),
            None => EventContract::new(
                name,
                EventContractSpec {
                    versions: Vec::new(),
                    ..src.spec.clone()
                },
            ),
        };
        want.metadata = super::repo::released_meta(&src.metadata);
        if let Some(t) = target.contracts.get(name) {
            want.metadata = super::repo::released_meta(&t.object.metadata);
        }
        let mut appended = Vec::new();
        for v in src.spec.versions.iter().filter(|v| v.version <= *version) {
            match want.spec.version(v.version) {
                Some(t) => {
                    let (a, b) = (schema_digest(&v.schema), schema_digest(&t.schema));
                    if a != b {
                        refusals.push(Refusal::new(
                            Gate::Contracts,
                            format!(
                                "ContractDrift: EventContract/{name} version {} has schema digest {b} in {target_env} but {a} in the source: a published version never changes; publish the change as a new version",
                                v.version
                            ),
                        ));
                    }
                }
                None => {
                    want.spec.versions.push(v.clone());
                    appended.push(v.version);
                }
            }
        }
        if appended.is_empty() {
            continue;
        }
        want.spec.versions.sort_by_key(|v| v.version);
        let m = mode(want.spec.compatibility);
        for verdict in judge_contract(&want.spec) {
            if !appended.contains(&verdict.version) {
                continue;
            }
            if let Some(rejection) = &verdict.rejection {
                let changes = match rejection {
                    Rejection::Incompatible(list) => list
                        .iter()
                        .map(|(against, c)| {
                            format!(
                                "{} at {} (against version {against})",
                                c.kind.as_str(),
                                c.path
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    _ => verdict.message(m).unwrap_or_default(),
                };
                refusals.push(Refusal::new(
                    Gate::Contracts,
                    format!(
                        "EventContract/{name} version {} would break {target_env}'s {} compatibility: {changes}",
                        verdict.version,
                        m.as_str()
                    ),
                ));
            }
        }
        changed.push(want);
    }
    if refusals.is_empty() {
        Ok(changed)
    } else {
        Err(refusals)
    }
}

/// Every connection the flow names must exist in the target's `env/`.
pub fn connections(
    flow: &IntegrationFlow,
    defined: &BTreeSet<String>,
    target_env: &str,
) -> Vec<Refusal> {
    connection_fields(&flow.spec)
        .into_iter()
        .filter(|(name, _)| !defined.contains(name))
        .map(|(name, field)| {
            Refusal::new(
                Gate::Connections,
                format!(
                    "{field} names PartnerConnection/{name}, which envs/{target_env}/env/ does not define: add {target_env}'s {name} there"
                ),
            )
        })
        .collect()
}

/// A hold on the flow, or a freeze window now, in the target.
pub fn holds_and_freeze(
    holds: &Holds,
    target: &Environment,
    flow: &str,
    now: DateTime<Utc>,
) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    if let Some(h) = holds.on(flow) {
        refusals.push(Refusal::new(
            Gate::Holds,
            format!(
                "envs/{}/holds.yaml holds {} since {}: {} (lift it with `millrace hold release {flow} --env {}`)",
                target.name,
                h.flow,
                h.since.as_deref().unwrap_or("unknown"),
                h.reason,
                target.name
            ),
        ));
    }
    if let Some(w) = target.frozen_at(now) {
        refusals.push(Refusal::new(
            Gate::Freeze,
            format!(
                "{} is frozen now ({}, window {w:?} UTC)",
                target.name,
                now.format("%a %H:%M")
            ),
        ));
    }
    refusals
}

/// The source cluster runs the file: current generation, the file's release digest, verified
/// (when it was promoted there) and Ready.
pub fn source_truth(
    live: &IntegrationFlow,
    file_digest: &str,
    source_env: &str,
    require_verified: bool,
) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    let name = live.metadata.name.as_deref().unwrap_or_default();
    let status = live.status.clone().unwrap_or_default();
    let refuse = |e: String| Refusal::new(Gate::SourceTruth, e);
    if status.observed_generation != live.metadata.generation {
        refusals.push(refuse(format!(
            "{source_env}'s operator has not observed generation {} of IntegrationFlow/{name} (it observed {:?}): wait for it",
            live.metadata.generation.unwrap_or_default(),
            status.observed_generation
        )));
    }
    let live_digest = status.release.as_ref().map(|r| r.digest.as_str());
    if live_digest != Some(file_digest) {
        refusals.push(refuse(format!(
            "{source_env} runs IntegrationFlow/{name} with release digest {} but the file has {file_digest}: sync {source_env} (or revert the unsynced edit) and let it soak",
            live_digest.unwrap_or("(none yet)")
        )));
    }
    let holds = |t: &str| find(&status.conditions, t).is_some_and(|c| c.status == "True");
    if require_verified && !holds(condition::RELEASE_VERIFIED) {
        let why = find(&status.conditions, condition::RELEASE_VERIFIED)
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "no ReleaseVerified condition yet".into());
        refusals.push(refuse(format!(
            "ReleaseVerified is not True in {source_env}: {why}"
        )));
    }
    if !holds(condition::READY) {
        let why = find(&status.conditions, condition::READY)
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_else(|| "no Ready condition yet".into());
        refusals.push(refuse(format!("Ready is not True in {source_env}: {why}")));
    }
    refusals
}

/// Healthy for at least `soak`, counted from the later of the rollout and Healthy's last
/// transition (a flap restarts the clock). Returns the evidence either way.
pub fn soak(
    live: &IntegrationFlow,
    soak: Duration,
    source_env: &str,
    now: DateTime<Utc>,
) -> (String, Option<Refusal>) {
    let status = live.status.clone().unwrap_or_default();
    let healthy = find(&status.conditions, condition::HEALTHY);
    let rolled_out = status
        .release
        .as_ref()
        .and_then(|r| r.rolled_out_at.as_ref())
        .map(|t| utc(&t.0));
    let soak_text = human(soak);
    let Some(h) = healthy.filter(|h| h.status == "True") else {
        let why = healthy
            .map(|h| format!("{}: {}", h.reason, h.message))
            .unwrap_or_else(|| "no Healthy condition yet".into());
        let evidence = format!("{source_env} is not Healthy ({why}); soak {soak_text}");
        return (evidence.clone(), Some(Refusal::new(Gate::Soak, evidence)));
    };
    let Some(rolled_out) = rolled_out else {
        let evidence = format!("{source_env} has not rolled the release out yet; soak {soak_text}");
        return (evidence.clone(), Some(Refusal::new(Gate::Soak, evidence)));
    };
    let since = utc(&h.last_transition_time.0);
    let start = since.max(rolled_out);
    let held = (now - start).to_std().unwrap_or_default();
    let evidence = format!(
        "{source_env} Healthy since {} and rolled out at {}: {} of soak {soak_text}",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        rolled_out.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        human(held)
    );
    if held < soak {
        let refusal = Refusal::new(
            Gate::Soak,
            format!("{evidence}; wait {}", human(soak - held)),
        );
        (evidence, Some(refusal))
    } else {
        (evidence, None)
    }
}

/// A Kubernetes timestamp as a chrono time.
pub fn utc(t: &k8s_openapi::jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

/// `1h2m3s`, `5s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use millrace_crds::flow::{IntegrationFlowStatus, ReleaseStatus};

    fn ts(at: DateTime<Utc>) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(at.timestamp()).unwrap())
    }

    fn flow_with(healthy_since: DateTime<Utc>, rolled: DateTime<Utc>) -> IntegrationFlow {
        let mut f: IntegrationFlow = serde_yaml::from_str(
            r#"
apiVersion: millrace.dev/v1alpha1
kind: IntegrationFlow
metadata: {name: receipts, generation: 2}
spec:
  version: 1.4.0
  source: {amqp: {connection: wms, exchange: wms.events, routingKeys: ["receipt.#"]}}
  contract: {name: goods-receipt, version: 1}
  routes:
    - name: erp
      destination: {connection: s4, http: {path: /receipts}}
"#,
        )
        .unwrap();
        let cond = |t: &str, at: DateTime<Utc>| Condition {
            type_: t.into(),
            status: "True".into(),
            reason: t.into(),
            message: String::new(),
            last_transition_time: ts(at),
            observed_generation: Some(2),
        };
        f.status = Some(IntegrationFlowStatus {
            observed_generation: Some(2),
            conditions: vec![cond("Healthy", healthy_since), cond("Ready", healthy_since)],
            release: Some(ReleaseStatus {
                version: "1.4.0".into(),
                digest: "sha256:aa".into(),
                reference: "1.4.0@aa".into(),
                promotion_id: None,
                rolled_out_at: Some(ts(rolled)),
            }),
            ..Default::default()
        });
        f
    }

    #[test]
    fn soak_counts_from_the_later_of_rollout_and_the_last_flap() {
        let now = Utc::now();
        let ago = |s| now - chrono::Duration::seconds(s);
        let (_, r) = soak(
            &flow_with(ago(600), ago(700)),
            Duration::from_secs(300),
            "staging",
            now,
        );
        assert!(r.is_none());
        // Healthy flapped 60 s ago: the clock restarted.
        let (_, r) = soak(
            &flow_with(ago(60), ago(700)),
            Duration::from_secs(300),
            "staging",
            now,
        );
        assert!(r.unwrap().evidence.contains(" of soak 5m; wait "));
        // Rolled out 10 s ago.
        let (_, r) = soak(
            &flow_with(ago(600), ago(10)),
            Duration::from_secs(300),
            "staging",
            now,
        );
        assert!(r.is_some());
    }

    #[test]
    fn source_truth_names_both_digests() {
        let now = Utc::now();
        let f = flow_with(now, now);
        let r = source_truth(&f, "sha256:bb", "staging", false);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].evidence.contains("sha256:aa") && r[0].evidence.contains("sha256:bb"));
        assert!(source_truth(&f, "sha256:aa", "staging", false).is_empty());
        // Promoted into the source: it must be verified too.
        assert_eq!(source_truth(&f, "sha256:aa", "staging", true).len(), 1);
    }
}
