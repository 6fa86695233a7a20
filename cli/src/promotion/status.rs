//! `millrace status FLOW --env ENV [--release DIGEST] [--wait]`: the release an environment
//! runs, as its cluster proves it; with `--wait`, the hook that blocks CI (or Kargo) until a
//! release is rolled out and Ready.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use kube::Api;
use millrace_crds::IntegrationFlow;
use millrace_crds::conditions::find;
use millrace_crds::flow::{condition, outcome};

use super::pipeline::Environment;
use super::repo::Repo;
use crate::Outcome;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The flow.
    flow: String,
    /// The environment.
    #[arg(long, value_name = "ENV")]
    env: String,
    /// The release digest to wait for (default: the one the environment runs now).
    #[arg(long, value_name = "DIGEST")]
    release: Option<String>,
    /// Wait until the release is rolled out and Ready: exit 0 then, 1 on failure or timeout.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, for example 10m.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    timeout: String,
    /// The promotion repository (the folder holding pipeline.yaml).
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
    /// Kubeconfig holding the environments' contexts.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

/// Reads a flow from an environment's cluster, read only. `None` when it does not exist.
pub fn read_flow(
    kubeconfig: Option<&Path>,
    env: &Environment,
    flow: &str,
) -> Result<Option<IntegrationFlow>> {
    crate::cluster::block_on(async {
        let unreachable = || {
            format!(
                "cannot reach {}'s cluster (context {}, namespace {})",
                env.name, env.kube_context, env.namespace
            )
        };
        let client = crate::cluster::client(kubeconfig, Some(&env.kube_context))
            .await
            .with_context(unreachable)?;
        let api: Api<IntegrationFlow> = Api::namespaced(client, &env.namespace);
        tokio::time::timeout(Duration::from_secs(15), api.get_opt(flow))
            .await
            .map_err(|_| anyhow!("no answer in 15 s"))
            .with_context(unreachable)?
            .with_context(unreachable)
    })
}

/// Where a release stands.
enum Standing {
    Done,
    Waiting(String),
    Failed(String),
}

fn standing(flow: &IntegrationFlow, want: Option<&str>) -> Standing {
    let status = flow.status.clone().unwrap_or_default();
    let Some(release) = &status.release else {
        return Standing::Waiting("the operator has not reported a release yet".into());
    };
    if let Some(want) = want
        && release.digest != want
    {
        return Standing::Waiting(format!("it runs {}, not {want} yet", release.digest));
    }
    if status.observed_generation != flow.metadata.generation {
        return Standing::Waiting("the operator has not observed the latest generation".into());
    }
    if let Some(v) = find(&status.conditions, condition::RELEASE_VERIFIED)
        && v.status == "False"
    {
        return Standing::Failed(format!(
            "ReleaseVerified is False: {}: {}",
            v.reason, v.message
        ));
    }
    if let Some(h) = status.history.first()
        && h.outcome == outcome::FAILED
    {
        return Standing::Failed(format!("the rollout of {} failed", h.version));
    }
    if release.rolled_out_at.is_none() {
        return Standing::Waiting("the workers are rolling out".into());
    }
    match find(&status.conditions, condition::READY) {
        Some(c) if c.status == "True" => Standing::Done,
        Some(c) => Standing::Waiting(format!(
            "Ready is {}: {}: {}",
            c.status, c.reason, c.message
        )),
        None => Standing::Waiting("no Ready condition yet".into()),
    }
}

fn print(flow: &IntegrationFlow, env: &Environment) {
    let status = flow.status.clone().unwrap_or_default();
    println!(
        "IntegrationFlow/{} in {} (namespace {})",
        flow.metadata.name.as_deref().unwrap_or_default(),
        env.name,
        env.namespace
    );
    match &status.release {
        Some(r) => {
            println!("  release     {}  {}", r.reference, r.digest);
            println!(
                "  promotion   {}",
                r.promotion_id.as_deref().unwrap_or("(authored in place)")
            );
            println!(
                "  rolled out  {}",
                r.rolled_out_at
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| "not yet".into())
            );
        }
        None => println!("  release     (not reported yet)"),
    }
    for (label, t) in [
        ("verified", condition::RELEASE_VERIFIED),
        ("ready", condition::READY),
        ("healthy", condition::HEALTHY),
    ] {
        let line = find(&status.conditions, t)
            .map(|c| {
                format!(
                    "{} {} since {}: {}",
                    c.status, c.reason, c.last_transition_time.0, c.message
                )
            })
            .unwrap_or_else(|| "-".into());
        println!("  {label:<11} {line}");
    }
}

pub fn run(args: &StatusArgs) -> Outcome {
    super::run_command(|| status(args))
}

fn status(args: &StatusArgs) -> Result<Outcome> {
    let repo = Repo::open(&args.repo)?;
    let env = repo.environment(&args.env)?.clone();
    let timeout = millrace_crds::common::parse_duration(&args.timeout)
        .map_err(|e| anyhow!("--timeout {}: {e}", args.timeout))?;
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let flow = read_flow(args.kubeconfig.as_deref(), &env, &args.flow)?;
        let Some(flow) = flow else {
            if !args.wait {
                eprintln!(
                    "{} has no IntegrationFlow/{} in namespace {}",
                    env.name, args.flow, env.namespace
                );
                return Ok(Outcome::Failed);
            }
            last = format!("no IntegrationFlow/{} yet", args.flow);
            if started.elapsed() >= timeout {
                eprintln!("timed out after {}: {last}", args.timeout);
                return Ok(Outcome::Failed);
            }
            std::thread::sleep(Duration::from_secs(2));
            continue;
        };
        if !args.wait {
            print(&flow, &env);
            return Ok(
                match (&args.release, standing(&flow, args.release.as_deref())) {
                    (Some(_), Standing::Waiting(_) | Standing::Failed(_)) => Outcome::Failed,
                    _ => Outcome::Passed,
                },
            );
        }
        match standing(&flow, args.release.as_deref()) {
            Standing::Done => {
                print(&flow, &env);
                return Ok(Outcome::Passed);
            }
            Standing::Failed(why) => {
                print(&flow, &env);
                eprintln!("failed: {why}");
                return Ok(Outcome::Failed);
            }
            Standing::Waiting(why) => {
                if why != last {
                    eprintln!("[{:>4}s] waiting: {why}", started.elapsed().as_secs());
                    last = why;
                }
                if started.elapsed() >= timeout {
                    print(&flow, &env);
                    eprintln!("timed out after {}: {last}", args.timeout);
                    return Ok(Outcome::Failed);
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}
