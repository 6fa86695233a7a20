//! `millrace hold add|release|list FLOW --env ENV`: holds stop promotion of a flow (or `*`,
//! every flow) into an environment. Rollback adds one; a person lifts it.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use super::pipeline::Hold;
use super::{Writes, land, open_clean};
use crate::Outcome;

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Hold a flow (or `*`) in an environment.
    Add(HoldArgs),
    /// Lift the hold on a flow, so that promotion into the environment resumes.
    Release(HoldArgs),
    /// List the holds of an environment.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    /// The flow, or `*` for every flow.
    flow: String,
    /// The environment.
    #[arg(long, value_name = "ENV")]
    env: String,
    /// Why (required to add a hold).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// The promotion repository (the folder holding pipeline.yaml).
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The environment.
    #[arg(long, value_name = "ENV")]
    env: String,
    /// The promotion repository (the folder holding pipeline.yaml).
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
}

pub fn run(command: &HoldCommand) -> Outcome {
    super::run_command(|| match command {
        HoldCommand::Add(a) => change(a, true),
        HoldCommand::Release(a) => change(a, false),
        HoldCommand::List(a) => list(a),
    })
}

fn change(args: &HoldArgs, add: bool) -> Result<Outcome> {
    let repo = open_clean(&args.repo)?;
    let env = repo.environment(&args.env)?.clone();
    let mut holds = repo.holds(&env.name)?;
    let before = holds.clone();
    if add {
        let Some(reason) = args.reason.as_deref().filter(|r| !r.trim().is_empty()) else {
            bail!(
                "hold add needs --reason TEXT: say why promotion into {} stops",
                env.name
            );
        };
        holds.holds.retain(|h| h.flow != args.flow);
        holds.holds.push(Hold {
            flow: args.flow.clone(),
            reason: reason.trim().to_string(),
            since: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        });
    } else {
        holds.holds.retain(|h| h.flow != args.flow);
    }
    if holds == before {
        println!(
            "{} has no hold on {}: nothing committed",
            env.name, args.flow
        );
        return Ok(Outcome::Passed);
    }
    let verb = if add { "hold" } else { "release hold on" };
    let writes: Writes = vec![(format!("envs/{}/holds.yaml", env.name), holds.to_yaml())];
    let message = format!(
        "{verb} {} in {}\n\n{}\n",
        args.flow,
        env.name,
        args.reason
            .as_deref()
            .unwrap_or("Promotion into this environment may resume.")
    );
    // Holds change policy, not releases: they land on the current branch.
    let landed = land(
        &repo,
        &writes,
        &message,
        super::pipeline::Approval::Direct,
        "",
    )?;
    println!("{verb} {} in {}: {landed}", args.flow, env.name);
    Ok(Outcome::Passed)
}

fn list(args: &ListArgs) -> Result<Outcome> {
    let repo = super::repo::Repo::open(&args.repo)?;
    let env = repo.environment(&args.env)?;
    let holds = repo.holds(&env.name)?;
    if holds.holds.is_empty() {
        println!("{} has no holds", env.name);
    }
    for h in &holds.holds {
        println!(
            "{}\tsince {}\t{}",
            h.flow,
            h.since.as_deref().unwrap_or("-"),
            h.reason
        );
    }
    Ok(Outcome::Passed)
}
