//! `millrace`: the Millrace command line, usable as a kubectl plugin (`kubectl millrace ...`).
//! `validate` and `render` run offline, on files, with the operator's own code; `diff` compares
//! a rendered set with the cluster.
//!
//! Exit codes are part of the interface, for CI pipelines: 0 means the check passed, 1 means
//! it ran and found a problem (an incompatible schema, a rejected contract), 2 means it could
//! not run (unreadable input, bad arguments).

mod analysis;
mod cluster;
mod contracts;
mod diff;
mod input;
mod kustomize;
mod manifest;
mod promotion;
mod render;
mod validate;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Millrace: governed, versioned business events between ERP and supply-chain execution systems.
#[derive(Debug, Parser)]
#[command(name = "millrace", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check manifests as the cluster would: OpenAPI schemas, CEL rules, and what the operator
    /// judges across objects (references, jq, schemas, examples, compatibility). Exit 0 valid,
    /// 1 invalid, 2 unreadable input.
    Validate(validate::ValidateArgs),
    /// Print the objects the operator would apply for each flow: ConfigMap, Deployment,
    /// Service and PDB. Exit 0 rendered, 1 invalid set, 2 unreadable input.
    Render(render::RenderArgs),
    /// Compare the rendered set with the live cluster, field by field. Exit 0 no change,
    /// 1 changes, 2 unreadable input, invalid set or unreachable cluster.
    Diff(diff::DiffArgs),
    /// Scaffold a promotion repository: pipeline.yaml and envs/<env>/{released,env,holds.yaml}.
    InitRepo(promotion::init::InitArgs),
    /// Promote a released flow, with its contract versions, into the next environment as one
    /// Git commit, once every gate passes. Exit 0 promoted (or nothing to do), 1 refused by a
    /// gate, 2 unusable input.
    Promote(promotion::promote::PromoteArgs),
    /// Restore an earlier release of a flow in an environment (a forward commit), and hold it.
    Rollback(promotion::rollback::RollbackArgs),
    /// Holds that stop promotion into an environment.
    #[command(subcommand)]
    Hold(promotion::hold::HoldCommand),
    /// The release a flow runs in an environment; with --wait, exit 0 once it is rolled out
    /// and Ready, 1 on failure or timeout.
    Status(promotion::status::StatusArgs),
    /// Event contracts: schema compatibility and manifest checks.
    #[command(subcommand)]
    Contracts(contracts::ContractsCommand),
    /// Print a shell completion script: `source <(millrace completion bash)`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// How a command ended, mapped onto the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The check passed (exit 0).
    Passed,
    /// The check ran and found a problem (exit 1).
    Failed,
    /// The check could not run: unreadable input (exit 2).
    Unusable,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Passed => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::Unusable => ExitCode::from(2),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Diff(args) => diff::run(&args),
        Command::Contracts(command) => contracts::run(command),
        Command::InitRepo(args) => promotion::init::run(&args),
        Command::Promote(args) => promotion::promote::run(&args),
        Command::Rollback(args) => promotion::rollback::run(&args),
        Command::Hold(command) => promotion::hold::run(&command),
        Command::Status(args) => promotion::status::run(&args),
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "millrace",
                &mut std::io::stdout(),
            );
            Outcome::Passed
        }
    };
    outcome.into()
}
