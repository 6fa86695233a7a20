//! `millrace`: offline checks for Millrace manifests, usable as a kubectl plugin.
//!
//! Exit codes are part of the interface, for CI pipelines: 0 means the check passed, 1 means
//! it ran and found a problem (an incompatible schema, a rejected contract), 2 means it could
//! not run (unreadable input, bad arguments).

mod contracts;
mod input;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Millrace: governed, versioned business events between ERP and supply-chain execution systems.
#[derive(Debug, Parser)]
#[command(name = "millrace", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Event contracts: schema compatibility and manifest checks.
    #[command(subcommand)]
    Contracts(contracts::ContractsCommand),
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
        Command::Contracts(command) => contracts::run(command),
    };
    outcome.into()
}
