//! `millrace contracts diff --old OLD --new NEW`

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use millrace_compat::{CompatibilityMode, SchemaDiff, diff, validate_schema};
use serde::Serialize;
use serde_json::Value;

use crate::Outcome;
use crate::input::load_document;

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The schema currently in use (JSON or YAML).
    #[arg(long, value_name = "OLD")]
    old: PathBuf,
    /// The proposed schema (JSON or YAML).
    #[arg(long, value_name = "NEW")]
    new: PathBuf,
    /// Compatibility mode: none, backward, backward-transitive, forward, forward-transitive,
    /// full or full-transitive. With two schemas a transitive mode equals its plain one.
    #[arg(long, default_value = "backward")]
    mode: CompatibilityMode,
    /// `text` prints one `KIND pointer` line per change; `json` prints
    /// {"compatible", "changes": [{"kind", "path", "breaking"}]}.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    compatible: bool,
    changes: Vec<JsonChange<'a>>,
}

#[derive(Serialize)]
struct JsonChange<'a> {
    kind: &'a str,
    path: &'a str,
    breaking: bool,
}

fn load_schema(path: &Path, flag: &str) -> Result<Value> {
    let schema = load_document(path).with_context(|| flag.to_string())?;
    validate_schema(&schema)
        .with_context(|| format!("{flag} {} is not a usable JSON Schema", path.display()))?;
    Ok(schema)
}

fn compare(args: &DiffArgs) -> Result<SchemaDiff> {
    let old = load_schema(&args.old, "--old")?;
    let new = load_schema(&args.new, "--new")?;
    diff(&old, &new).with_context(|| {
        format!(
            "cannot compare {} with {}",
            args.old.display(),
            args.new.display()
        )
    })
}

pub fn run(args: &DiffArgs) -> Outcome {
    let found = match compare(args) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Outcome::Unusable;
        }
    };
    let compatible = found.is_compatible(args.mode);
    match args.output {
        OutputFormat::Text => {
            for change in &found.changes {
                println!("{change}");
            }
            let breaking = found.breaking(args.mode).count();
            eprintln!(
                "{} change(s), {breaking} breaking: {} under {}",
                found.changes.len(),
                if compatible {
                    "compatible"
                } else {
                    "incompatible"
                },
                args.mode
            );
        }
        OutputFormat::Json => {
            let report = JsonReport {
                compatible,
                changes: found
                    .changes
                    .iter()
                    .map(|change| JsonChange {
                        kind: change.kind.as_str(),
                        path: &change.path,
                        breaking: change.breaking(args.mode),
                    })
                    .collect(),
            };
            match serde_json::to_string_pretty(&report) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    eprintln!("error: cannot write the report: {e}");
                    return Outcome::Unusable;
                }
            }
        }
    }
    if compatible {
        Outcome::Passed
    } else {
        Outcome::Failed
    }
}
