//! `millrace promote FLOW --from ENV --to ENV`: copies a released flow, with the contract
//! versions it uses, into the next environment as one commit, once every gate passes.

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use millrace_crds::IntegrationFlow;
use millrace_crds::flow::annotation;
use millrace_render::release_digest;

use super::gates::{self, Gate, Refusal};
use super::repo::{Repo, released_meta, released_yaml};
use super::{Writes, land, open_clean, promotion_id, refused, release_name, target, trailer};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The flow (metadata.name) to promote.
    flow: String,
    /// The environment it is promoted from.
    #[arg(long, value_name = "ENV")]
    from: String,
    /// The environment it is promoted into.
    #[arg(long, value_name = "ENV")]
    to: String,
    /// The promotion repository (the folder holding pipeline.yaml).
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
    /// Kubeconfig holding the environments' contexts (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Run every gate and print the commit, but write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Promote although this gate refuses (source-truth, soak, holds or freeze); recorded in
    /// the commit's Millrace-Override trailer. Repeat for several gates.
    #[arg(long = "override", value_name = "GATE", value_enum)]
    overrides: Vec<Gate>,
    /// Why the gates are overridden (required with --override).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Allow a change to partitions or queue arguments (the operator must migrate the queues).
    #[arg(long)]
    allow_topology_change: bool,
}

pub fn run(args: &PromoteArgs) -> Outcome {
    super::run_command(|| promote(args))
}

fn promote(args: &PromoteArgs) -> Result<Outcome> {
    for g in &args.overrides {
        if !g.overridable() {
            bail!(
                "--override {}: this gate cannot be overridden (only source-truth, soak, holds and freeze)",
                g.name()
            );
        }
    }
    let reason = match (&args.reason, args.overrides.is_empty()) {
        (Some(r), false) if !r.trim().is_empty() => Some(r.trim().to_string()),
        (_, false) => bail!("--override needs --reason TEXT: say why the gate is overridden"),
        (Some(_), true) => bail!("--reason is only used with --override"),
        (None, true) => None,
    };
    let repo = open_clean(&args.repo)?;
    let from = repo.environment(&args.from)?.clone();
    let to = repo.environment(&args.to)?.clone();
    let (pf, pt) = (
        repo.pipeline.position(&from.name),
        repo.pipeline.position(&to.name),
    );
    if pf >= pt {
        bail!(
            "promotion goes forward through {}: {} does not come after {}",
            repo.pipeline.names(),
            to.name,
            from.name
        );
    }
    let source = repo.released(&from.name)?;
    let released = source.flows.get(&args.flow).ok_or_else(|| {
        anyhow!(
            "IntegrationFlow/{} is not in {}: it must be released there first",
            args.flow,
            Repo::released_rel(&from.name)
        )
    })?;
    let flow = released.object.clone();
    let digest = release_digest(&flow);
    let target_set = repo.released(&to.name)?;
    let overridden = |g: Gate| args.overrides.contains(&g);

    // Contracts first: they decide what the commit holds.
    let used = match gates::contracts_used(&flow, &source, &from.name) {
        Ok(u) => u,
        Err(r) => return Ok(refused(&[r])),
    };
    let contracts = match gates::plan_contracts(&used, &source, &target_set, &to.name) {
        Ok(c) => c,
        Err(r) => return Ok(refused(&r)),
    };
    let current = target_set.flows.get(&args.flow);
    if contracts.is_empty() && current.is_some_and(|c| release_digest(&c.object) == digest) {
        println!(
            "{} already has {} ({digest}): nothing to promote, nothing committed",
            to.name,
            release_name(&flow)
        );
        return Ok(Outcome::Passed);
    }

    // The files.
    let id = promotion_id(&[
        &args.flow,
        &flow.spec.version.0,
        &digest,
        &from.name,
        &to.name,
    ]);
    let mut copy = flow.clone();
    copy.metadata = released_meta(&flow.metadata);
    let notes = copy
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    notes.insert(annotation::RELEASE.into(), release_name(&flow));
    notes.insert(annotation::RELEASE_DIGEST.into(), digest.clone());
    notes.insert(annotation::PROMOTED_FROM.into(), from.name.clone());
    notes.insert(annotation::PROMOTION_ID.into(), id.clone());
    copy.status = None;
    let released_dir = Repo::released_rel(&to.name);
    let flow_path = match current {
        Some(c) if c.alone => c.path.clone(),
        Some(c) => bail!(
            "{} holds IntegrationFlow/{} with other objects: promote writes one object per file; move it to a file of its own",
            c.path,
            args.flow
        ),
        None => format!("{released_dir}/flows/{}.yaml", args.flow),
    };
    let header = format!(
        "# Released by millrace promote: {} from {} (promotion {id}).\n# Change it in envs/{}/ and promote; an edit here or in the cluster shows as DigestMismatch.\n",
        release_name(&flow),
        from.name,
        repo.pipeline.environments[0].name
    );
    let mut writes: Writes = vec![(flow_path.clone(), released_yaml(&header, &copy)?)];
    let mut appended = Vec::new();
    for c in &contracts {
        let name = c.metadata.name.clone().unwrap_or_default();
        let path = match target_set.contracts.get(&name) {
            Some(t) if t.alone => t.path.clone(),
            Some(t) => bail!(
                "{} holds EventContract/{name} with other objects: promote writes one object per file; move it to a file of its own",
                t.path
            ),
            None => format!("{released_dir}/contracts/{name}.yaml"),
        };
        let before: Vec<u32> = target_set
            .contracts
            .get(&name)
            .map(|t| t.object.spec.versions.iter().map(|v| v.version).collect())
            .unwrap_or_default();
        for v in &c.spec.versions {
            if !before.contains(&v.version) {
                appended.push(format!("{name} v{}", v.version));
            }
        }
        let header =
            "# Released by millrace promote: contract versions are appended, never changed.\n";
        writes.push((path, released_yaml(header, c)?));
    }
    let written: Vec<String> = writes.iter().map(|(p, _)| p.clone()).collect();
    let (kpath, ktext) = repo.released_kustomization(&to.name, &written)?;
    if std::fs::read_to_string(repo.root.join(&kpath))
        .ok()
        .as_deref()
        != Some(ktext.as_str())
    {
        writes.push((kpath, ktext));
    }

    // The gates on files, then the source cluster.
    let mut refusals = target::check(&repo, &to.name, &copy, &writes, args.allow_topology_change)?;
    let holds = repo.holds(&to.name)?;
    refusals.extend(
        gates::holds_and_freeze(&holds, &to, &args.flow, chrono::Utc::now())
            .into_iter()
            .filter(|r| !overridden(r.gate)),
    );
    let soak_evidence = if overridden(Gate::SourceTruth) && overridden(Gate::Soak) {
        "not measured (source-truth and soak overridden)".to_string()
    } else {
        let live = read_live(args, &repo, &from)?;
        match live {
            None => {
                refusals.push(Refusal {
                    gate: Gate::SourceTruth,
                    evidence: format!(
                        "{} has no IntegrationFlow/{} in namespace {}: sync {} first",
                        from.name, args.flow, from.namespace, from.name
                    ),
                });
                "no live flow".to_string()
            }
            Some(live) => {
                if !overridden(Gate::SourceTruth) {
                    let verified = !repo.pipeline.is_first(&from.name);
                    refusals.extend(gates::source_truth(&live, &digest, &from.name, verified));
                }
                let (evidence, refusal) =
                    gates::soak(&live, from.soak(), &from.name, chrono::Utc::now());
                if !overridden(Gate::Soak) {
                    refusals.extend(refusal);
                }
                evidence
            }
        }
    };
    if !refusals.is_empty() {
        refusals.sort_by_key(|r| r.gate);
        return Ok(refused(&refusals));
    }

    // The commit.
    let mut message = format!(
        "promote {} {} from {} to {}\n\nRelease digest {digest}.\n",
        args.flow, flow.spec.version.0, from.name, to.name
    );
    if !appended.is_empty() {
        message.push_str(&format!(
            "Contract versions appended: {}.\n",
            appended.join(", ")
        ));
    }
    message.push_str(&format!(
        "\n{}: {id}\n{}: {}\n{}: {}\n{}: {}\n{}: {digest}\n{}: {soak_evidence}\n",
        trailer::PROMOTION_ID,
        trailer::FLOW,
        release_name(&flow),
        trailer::ENVIRONMENT,
        to.name,
        trailer::PROMOTED_FROM,
        from.name,
        trailer::RELEASE_DIGEST,
        trailer::SOAK,
    ));
    if let Some(reason) = &reason {
        for g in &args.overrides {
            message.push_str(&format!("{}: {}: {reason}\n", trailer::OVERRIDE, g.name()));
        }
    }
    let branch = format!("promote/{}-{}-{id}", args.flow, flow.spec.version.0);
    if args.dry_run {
        println!("would commit (dry run, nothing written):\n\n{message}");
        for (p, _) in &writes {
            println!("  {p}");
        }
        return Ok(Outcome::Passed);
    }
    let landed = land(&repo, &writes, &message, to.approval, &branch)?;
    println!(
        "promoted {} ({digest}) from {} to {} as promotion {id}: {landed}",
        release_name(&flow),
        from.name,
        to.name
    );
    Ok(Outcome::Passed)
}

/// The source environment's live flow, read only. An unreachable cluster is unusable input.
fn read_live(
    args: &PromoteArgs,
    _repo: &Repo,
    env: &super::pipeline::Environment,
) -> Result<Option<IntegrationFlow>> {
    super::status::read_flow(args.kubeconfig.as_deref(), env, &args.flow)
}
