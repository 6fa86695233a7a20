//! The target environment before and after a change, judged offline with the operator's code:
//! the render gate (`millrace validate` of the folder), the connections gate (the target's
//! `env/`) and the topology gate (partitions and queue arguments).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use millrace_admission::Admission;
use millrace_crds::IntegrationFlow;
use millrace_render::{RenderSettings, topology_plan};
use millrace_topology::TopologyPlan;

use super::Writes;
use super::gates::{self, Gate, Refusal};
use super::repo::Repo;
use crate::analysis::{Analysis, Options, Severity, analyse, check_kinds};
use crate::manifest;

/// The judgement of an environment's folder, with `writes` applied in a scratch copy.
pub fn judge(repo: &Repo, env: &str, writes: &Writes) -> Result<Analysis> {
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    let rel = format!("envs/{env}");
    copy_dir(&repo.root.join(&rel), &scratch.path().join(&rel))?;
    for (path, text) in writes {
        let to = scratch.path().join(path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&to, text)?;
    }
    let prefix = format!("{}/", scratch.path().display());
    let mut documents = manifest::read(&[scratch.path().join(&rel)])
        .map_err(|e| anyhow::anyhow!(e.to_string().replace(&prefix, "")))?;
    for d in &mut documents {
        d.file = d.file.replace(&prefix, "");
    }
    let manifests = manifest::checked(documents, None)?;
    let admission = Admission::millrace();
    check_kinds(&manifests, &admission)?;
    Ok(analyse(
        &manifests,
        &admission,
        &RenderSettings::default(),
        Options::default(),
        Default::default(),
    ))
}

/// The render gate: every error of the judgement.
pub fn render_gate(analysis: &Analysis, env: &str) -> Vec<Refusal> {
    analysis
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| Refusal {
            gate: Gate::Render,
            evidence: format!("millrace validate envs/{env}: {p}"),
        })
        .collect()
}

/// The topology plan of `flow` in a judgement, when it renders.
pub fn plan(analysis: &Analysis, flow: &str) -> Option<TopologyPlan> {
    analysis
        .flows
        .iter()
        .find(|f| f.manifest.name == flow)
        .and_then(|f| f.judgement.rendered.as_ref())
        .map(|r| topology_plan(&r.config.flows[0]))
}

/// The topology gate: partitions and queue arguments the broker cannot change in place.
pub fn topology_gate(
    before: Option<&TopologyPlan>,
    after: Option<&TopologyPlan>,
    allowed: bool,
) -> Vec<Refusal> {
    let (Some(before), Some(after)) = (before, after) else {
        return Vec::new();
    };
    if allowed {
        return Vec::new();
    }
    millrace_render::migration_warnings(before, after)
        .into_iter()
        .filter(|w| !w.starts_with("binding "))
        .map(|w| Refusal {
            gate: Gate::Topology,
            evidence: format!("{w} (pass --allow-topology-change once the migration is planned)"),
        })
        .collect()
}

/// The connections `envs/<env>/env/` defines.
pub fn defined_connections(repo: &Repo, env: &str) -> Result<BTreeSet<String>> {
    let dir = repo.env_dir(env).join("env");
    if !dir.is_dir() {
        return Ok(BTreeSet::new());
    }
    Ok(manifest::read(&[dir])?
        .into_iter()
        .filter(|d| d.value["kind"] == "PartnerConnection")
        .filter_map(|d| d.value["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}

/// The render, connection and topology gates of `flow` landing in `env` with `writes`.
pub fn check(
    repo: &Repo,
    env: &str,
    flow: &IntegrationFlow,
    writes: &Writes,
    allow_topology_change: bool,
) -> Result<Vec<Refusal>> {
    let name = flow.metadata.name.as_deref().unwrap_or_default();
    let mut refusals = gates::connections(flow, &defined_connections(repo, env)?, env);
    let after = match judge(repo, env, writes) {
        Ok(a) => a,
        Err(e) => {
            refusals.push(Refusal {
                gate: Gate::Render,
                evidence: format!("envs/{env} does not build after the change: {e:#}"),
            });
            return Ok(refusals);
        }
    };
    refusals.extend(render_gate(&after, env));
    let before = judge(repo, env, &Vec::new()).ok();
    refusals.extend(topology_gate(
        before.as_ref().and_then(|b| plan(b, name)).as_ref(),
        plan(&after, name).as_ref(),
        allow_topology_change,
    ));
    Ok(refusals)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))?
    {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
