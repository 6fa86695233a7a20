//! `millrace contracts ...`

mod check;
mod diff;

use clap::Subcommand;

use crate::Outcome;

#[derive(Debug, Subcommand)]
pub enum ContractsCommand {
    /// Compare two schema versions and report each change, exiting 1 when the new one breaks
    /// the compatibility mode.
    Diff(diff::DiffArgs),
    /// Check EventContract manifests: every version compatible under the contract's mode,
    /// every schema compiling, every example valid.
    Check(check::CheckArgs),
}

pub fn run(command: ContractsCommand) -> Outcome {
    match command {
        ContractsCommand::Diff(args) => diff::run(&args),
        ContractsCommand::Check(args) => check::run(&args),
    }
}
