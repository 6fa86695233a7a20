//! `millrace validate PATH...`: the cluster's verdict on a set of manifests, offline.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use millrace_admission::Admission;
use millrace_render::RenderSettings;

use crate::Outcome;
use crate::analysis::{Options, Severity, analyse, check_kinds};
use crate::manifest;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Manifest files, directories (walked for .yaml, .yml and .json), or - for standard input.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Namespace of objects that do not name one (default: metadata.namespace, else default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// A reference to a contract, connection or ConfigMap outside the set is a warning, not an error.
    #[arg(long)]
    allow_missing_refs: bool,
    /// Refuse objects of kinds other than Millrace's.
    #[arg(long)]
    strict: bool,
    /// `text`: one `FILE:LINE: Kind/name: field.path: message` line per problem; `json`: a list
    /// of {file, line, kind, name, namespace, field, message, severity, reason}.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Text)]
    output: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn run(args: &ValidateArgs) -> Outcome {
    let admission = Admission::millrace();
    let manifests = match manifest::load(&args.paths, args.namespace.as_deref())
        .and_then(|m| check_kinds(&m, &admission).map(|()| m))
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Outcome::Unusable;
        }
    };
    let options = Options {
        allow_missing_refs: args.allow_missing_refs,
        strict: args.strict,
    };
    let analysis = analyse(
        &manifests,
        &admission,
        &RenderSettings::default(),
        options,
        BTreeMap::new(),
    );
    match args.output {
        Format::Text => {
            for p in &analysis.problems {
                println!("{p}");
            }
        }
        Format::Json => match serde_json::to_string_pretty(&analysis.problems) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot write the report: {e}");
                return Outcome::Unusable;
            }
        },
    }
    let errors = analysis
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let warnings = analysis.problems.len() - errors;
    eprintln!(
        "{} object(s) checked: {}, {errors} error(s), {warnings} warning(s)",
        analysis.objects,
        if analysis.valid() { "valid" } else { "invalid" }
    );
    if analysis.valid() {
        Outcome::Passed
    } else {
        Outcome::Failed
    }
}
