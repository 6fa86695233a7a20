//! `millrace-operator`: run the controllers, or print the CRDs.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "millrace-operator",
    version,
    about = "Reconciles Millrace resources into RabbitMQ topology and worker pods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every CRD as multi-document YAML, or write one file per kind into a directory.
    Crds {
        /// Write `<plural>.millrace.dev.yaml` files here instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds { out_dir } => print_crds(out_dir),
    }
}

fn print_crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let crds = millrace_crds::all_crds();
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for crd in &crds {
                let path = dir.join(millrace_crds::crd_file_name(crd));
                std::fs::write(&path, serde_yaml::to_string(crd)?)?;
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            for crd in &crds {
                writeln!(out, "---")?;
                out.write_all(serde_yaml::to_string(crd)?.as_bytes())?;
            }
        }
    }
    Ok(())
}
