//! `millrace rollback FLOW --env ENV [--to VERSION]`: a forward commit that restores the bytes
//! of an earlier release, found through the promotion trailers, and a hold so that no
//! automation promotes over it.

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use millrace_crds::IntegrationFlow;
use millrace_render::{promotion_id, release_digest};

use super::gates::{self, Refusal};
use super::pipeline::Hold;
use super::repo::Repo;
use super::{Writes, land, open_clean, refused, release_name, target, trailer};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The flow to roll back.
    flow: String,
    /// The environment.
    #[arg(long, value_name = "ENV")]
    env: String,
    /// The version to restore (default: the release before the one in force).
    #[arg(long, value_name = "VERSION")]
    to: Option<String>,
    /// The promotion repository (the folder holding pipeline.yaml).
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
    /// Allow a change to partitions or queue arguments.
    #[arg(long)]
    allow_topology_change: bool,
}

pub fn run(args: &RollbackArgs) -> Outcome {
    super::run_command(|| rollback(args))
}

fn rollback(args: &RollbackArgs) -> Result<Outcome> {
    let repo = open_clean(&args.repo)?;
    let env = repo.environment(&args.env)?.clone();
    let set = repo.released(&env.name)?;
    let current = set.flows.get(&args.flow).ok_or_else(|| {
        anyhow!(
            "IntegrationFlow/{} is not in {}: there is nothing to roll back",
            args.flow,
            Repo::released_rel(&env.name)
        )
    })?;
    let current_digest = release_digest(&current.object);
    let current_id = promotion_id(&current.object);

    // The earlier releases of this flow in this environment, newest first: every commit that
    // changed its file (promotions carry trailers; the first release may predate them).
    let path = repo.git_path(&current.path);
    let mut found = None;
    for c in repo.git.log(&path)? {
        let Ok(bytes) = repo.git.show(&c.commit, &path) else {
            continue;
        };
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        let Ok(flow) = serde_yaml::from_str::<IntegrationFlow>(&text) else {
            continue;
        };
        let wanted = args.to.as_ref().is_none_or(|v| flow.spec.version.0 == *v);
        if release_digest(&flow) != current_digest && wanted {
            found = Some((c, text, flow));
            break;
        }
    }
    let Some((earlier, text, restored)) = found else {
        bail!(
            "no earlier release of {}{} in the history of {}: there is nothing to restore",
            args.flow,
            args.to
                .as_ref()
                .map(|v| format!(" at version {v}"))
                .unwrap_or_default(),
            current.path
        );
    };
    let digest = release_digest(&restored);

    // The contract versions it uses are still there (versions are append-only).
    let mut refusals: Vec<Refusal> = match gates::contracts_used(&restored, &set, &env.name) {
        Ok(_) => Vec::new(),
        Err(r) => vec![r],
    };
    let mut holds = repo.holds(&env.name)?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    holds.holds.retain(|h| h.flow != args.flow);
    holds.holds.push(Hold {
        flow: args.flow.clone(),
        reason: format!(
            "rolled back from {} to {} ({}); lift this hold once the fix is released",
            release_name(&current.object),
            release_name(&restored),
            earlier.commit.get(..12).unwrap_or(&earlier.commit)
        ),
        since: Some(now),
    });
    let writes: Writes = vec![
        (current.path.clone(), text),
        (format!("envs/{}/holds.yaml", env.name), holds.to_yaml()),
    ];
    refusals.extend(target::check(
        &repo,
        &env.name,
        &restored,
        &writes,
        args.allow_topology_change,
    )?);
    if !refusals.is_empty() {
        return Ok(refused(&refusals));
    }
    let restored_id = promotion_id(&restored)
        .or_else(|| earlier.trailer(trailer::PROMOTION_ID).map(str::to_string))
        .unwrap_or_else(|| "(unpromoted)".into());
    let message = format!(
        "rollback {} in {} to {}\n\nRestores the release of commit {} and holds the flow in {}.\n\n{}: {restored_id}\n{}: {}\n{}: {}\n{}: {digest}\n{}: {}\n",
        args.flow,
        env.name,
        restored.spec.version.0,
        earlier.commit,
        env.name,
        trailer::PROMOTION_ID,
        trailer::FLOW,
        release_name(&restored),
        trailer::ENVIRONMENT,
        env.name,
        trailer::RELEASE_DIGEST,
        trailer::ROLLBACK_OF,
        current_id.as_deref().unwrap_or("(unpromoted)"),
    );
    let branch = format!(
        "rollback/{}-{}-{}",
        args.flow,
        restored.spec.version.0,
        super::promotion_id(&[&args.flow, &digest])
    );
    let landed = land(&repo, &writes, &message, env.approval, &branch)?;
    println!(
        "rolled {} in {} back to {} ({digest}); {} is held until `millrace hold release {} --env {}`: {landed}",
        args.flow,
        env.name,
        release_name(&restored),
        args.flow,
        args.flow,
        env.name
    );
    Ok(Outcome::Passed)
}
