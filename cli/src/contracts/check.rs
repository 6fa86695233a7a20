//! `millrace contracts check FILE|DIR`: checks EventContract manifests offline, the way the
//! operator judges them in the cluster.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;
use millrace_compat::CompatibilityMode;
use millrace_render::contract::{Rejection, VersionInput, judge_versions};
use serde_json::Value;

use crate::Outcome;
use crate::input::{load_documents, manifest_files};

/// The API group EventContract belongs to.
const API_GROUP: &str = "millrace.dev/";

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Manifest files, or directories searched recursively for .yaml, .yml and .json files.
    /// Multi-document YAML is read in full; kinds other than EventContract are ignored.
    #[arg(required = true, value_name = "FILE|DIR")]
    paths: Vec<PathBuf>,
}

/// Why a contract (or one of its versions) is rejected.
struct Finding {
    version: Option<u64>,
    reason: String,
}

impl Finding {
    fn contract(reason: impl Into<String>) -> Self {
        Finding {
            version: None,
            reason: reason.into(),
        }
    }

    fn version(version: u64, reason: impl Into<String>) -> Self {
        Finding {
            version: Some(version),
            reason: reason.into(),
        }
    }
}

/// The verdict on one EventContract manifest.
struct ContractReport {
    name: String,
    mode: Option<CompatibilityMode>,
    versions: usize,
    rejections: Vec<Finding>,
}

impl fmt::Display for ContractReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = self
            .mode
            .map(|m| m.to_string())
            .unwrap_or_else(|| "no valid mode".to_string());
        write!(
            f,
            "EventContract {} ({} version(s), {mode})",
            self.name, self.versions
        )
    }
}

/// One version entry of `spec.versions`, as far as it could be read.
struct VersionEntry<'a> {
    number: u64,
    schema: &'a Value,
    examples: &'a [Value],
}

pub fn run(args: &CheckArgs) -> Outcome {
    let mut outcome = Outcome::Passed;
    let mut contracts = 0;
    let mut rejected = 0;
    for path in &args.paths {
        let files = match manifest_files(path) {
            Ok(files) => files,
            Err(e) => {
                eprintln!("error: {e:#}");
                outcome = outcome.max(Outcome::Unusable);
                continue;
            }
        };
        for file in files {
            let documents = match load_documents(&file) {
                Ok(documents) => documents,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    outcome = outcome.max(Outcome::Unusable);
                    continue;
                }
            };
            for document in documents.iter().filter(|d| is_event_contract(d)) {
                contracts += 1;
                let report = check_contract(document);
                if report.rejections.is_empty() {
                    println!("ok: {report} in {}", file.display());
                    continue;
                }
                rejected += 1;
                outcome = outcome.max(Outcome::Failed);
                print_rejections(&report, &file);
            }
        }
    }
    if contracts == 0 && outcome != Outcome::Unusable {
        let searched: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "error: no EventContract manifests (apiVersion {API_GROUP}v1alpha1) found in {}",
            searched.join(", ")
        );
        return Outcome::Unusable;
    }
    eprintln!("{contracts} contract(s) checked, {rejected} rejected");
    outcome
}

fn print_rejections(report: &ContractReport, file: &Path) {
    for rejection in &report.rejections {
        match rejection.version {
            Some(version) => println!(
                "rejected: EventContract {} version {version} in {}: {}",
                report.name,
                file.display(),
                rejection.reason
            ),
            None => println!(
                "rejected: EventContract {} in {}: {}",
                report.name,
                file.display(),
                rejection.reason
            ),
        }
    }
}

fn is_event_contract(document: &Value) -> bool {
    document["kind"] == "EventContract"
        && document["apiVersion"]
            .as_str()
            .is_some_and(|api| api.starts_with(API_GROUP))
}

fn check_contract(document: &Value) -> ContractReport {
    let mut report = ContractReport {
        name: document["metadata"]["name"]
            .as_str()
            .unwrap_or("<unnamed>")
            .to_string(),
        mode: None,
        versions: 0,
        rejections: Vec::new(),
    };
    if document["metadata"]["name"].as_str().is_none() {
        report.rejections.push(Finding::contract(
            "metadata.name is missing: name the contract",
        ));
    }
    let spec = &document["spec"];
    report.mode = match spec.get("compatibility") {
        // The CRD's default.
        None => Some(CompatibilityMode::BackwardTransitive),
        Some(value) => match serde_json::from_value::<CompatibilityMode>(value.clone()) {
            Ok(mode) => Some(mode),
            Err(_) => {
                report.rejections.push(Finding::contract(format!(
                    "spec.compatibility {value} is not a mode: use one of None, Backward, \
                     BackwardTransitive, Forward, ForwardTransitive, Full, FullTransitive"
                )));
                None
            }
        },
    };
    let Some(raw_versions) = spec
        .get("versions")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
    else {
        report.rejections.push(Finding::contract(
            "spec.versions is missing or empty: add version 1 with a schema",
        ));
        return report;
    };
    report.versions = raw_versions.len();

    let mut entries = Vec::new();
    for (position, raw) in raw_versions.iter().enumerate() {
        match read_version(raw, position) {
            Ok(entry) => entries.push(entry),
            Err(rejection) => report.rejections.push(rejection),
        }
    }
    if entries.len() != raw_versions.len() {
        return report;
    }

    if let Some(mode) = report.mode {
        // The one verdict the operator writes to status: schemas compile and examples validate as
        // the worker validates events, and versions are compatible with the accepted ones before.
        let inputs: Vec<VersionInput<'_>> = entries
            .iter()
            .map(|e| VersionInput {
                version: e.number as u32,
                schema: e.schema,
                examples: e.examples,
            })
            .collect();
        for verdict in judge_versions(mode, &inputs) {
            let number = u64::from(verdict.version);
            match verdict.rejection {
                None => {}
                Some(Rejection::SchemaInvalid(e)) => report.rejections.push(Finding::version(
                    number,
                    format!("the schema does not compile as JSON Schema: {e}"),
                )),
                Some(Rejection::ExampleInvalid { index, problems }) => {
                    report.rejections.push(Finding::version(
                        number,
                        format!(
                            "example {} does not validate against the schema: {}",
                            index + 1,
                            problems.join("; ")
                        ),
                    ))
                }
                Some(Rejection::Incompatible(changes)) => {
                    for (against, change) in changes {
                        report.rejections.push(Finding::version(
                            number,
                            format!(
                                "{} {} breaks {mode} compatibility with version {against}",
                                change.kind, change.path
                            ),
                        ));
                    }
                }
                Some(Rejection::Uncomparable(e)) => report.rejections.push(Finding::version(
                    number,
                    format!("the schema cannot be compared with other versions: {e}"),
                )),
            }
        }
    }
    report
}

fn read_version(raw: &Value, position: usize) -> Result<VersionEntry<'_>, Finding> {
    let at = format!("spec.versions[{position}]");
    let number = raw.get("version").and_then(Value::as_u64).ok_or_else(|| {
        Finding::contract(format!("{at}.version is missing or not a positive integer"))
    })?;
    let expected = position as u64 + 1;
    if number != expected {
        return Err(Finding::version(
            number,
            format!(
                "{at} is numbered {number}: versions must be numbered 1, 2, 3 ... in order, so this one must be {expected}"
            ),
        ));
    }
    let schema = raw.get("schema").ok_or_else(|| {
        Finding::version(
            number,
            "schema is missing: add the JSON Schema of this version",
        )
    })?;
    let examples = match raw.get("examples") {
        None => &[][..],
        Some(Value::Array(examples)) => examples.as_slice(),
        Some(_) => {
            return Err(Finding::version(
                number,
                "examples must be a list of example events",
            ));
        }
    };
    Ok(VersionEntry {
        number,
        schema,
        examples,
    })
}
