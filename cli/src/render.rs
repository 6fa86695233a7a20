//! `millrace render PATH...`: exactly the objects the operator would apply for each flow.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use millrace_admission::Admission;
use millrace_render::{RenderSettings, RenderedFlow, plan_document, topology_plan};
use serde_json::Value;

use crate::Outcome;
use crate::analysis::{Options, analyse, check_kinds};
use crate::input::load_document;
use crate::manifest;

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Manifest files, directories (walked for .yaml, .yml and .json), or - for standard input.
    /// The set must hold every contract, connection and lookup ConfigMap its flows name.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Namespace of every object (default: metadata.namespace, else default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// The operator's settings, in the shape of the chart's values.yaml (worker image, ...).
    /// Without it, the operator's defaults apply, as when it runs with no flags.
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Output format: multi-document YAML, or a JSON List.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
    output: Format,
    /// Also print each flow's queue, exchange and binding plan, as a document of its own
    /// (kind TopologyPlan).
    #[arg(long)]
    topology: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

/// Reads `--settings`, or the defaults.
pub fn settings(path: Option<&Path>) -> Result<RenderSettings> {
    let Some(path) = path else {
        return Ok(RenderSettings::default());
    };
    let values = load_document(path).context("--settings")?;
    RenderSettings::from_chart_values(&values)
        .map_err(|e| anyhow::anyhow!("--settings {}: {e}", path.display()))
}

/// The objects of one rendered flow, in apply order, as JSON values.
pub fn objects(rendered: &RenderedFlow) -> Result<Vec<Value>> {
    let mut out = vec![
        serde_json::to_value(&rendered.config_map)?,
        serde_json::to_value(&rendered.deployment)?,
        serde_json::to_value(&rendered.service)?,
    ];
    if let Some(pdb) = &rendered.pdb {
        out.push(serde_json::to_value(pdb)?);
    }
    Ok(out)
}

fn yaml_documents(rendered: &RenderedFlow) -> Result<Vec<String>> {
    // Structs serialize their fields in a fixed order, so the text is the same every run.
    let mut out = vec![
        serde_yaml::to_string(&rendered.config_map)?,
        serde_yaml::to_string(&rendered.deployment)?,
        serde_yaml::to_string(&rendered.service)?,
    ];
    if let Some(pdb) = &rendered.pdb {
        out.push(serde_yaml::to_string(pdb)?);
    }
    Ok(out)
}

fn print(args: &RenderArgs, flows: &[&RenderedFlow]) -> Result<()> {
    match args.output {
        Format::Yaml => {
            let mut text = String::new();
            for r in flows {
                let mut docs = yaml_documents(r)?;
                if args.topology {
                    let f = &r.config.flows[0];
                    docs.push(serde_yaml::to_string(&plan_document(f, &topology_plan(f)))?);
                }
                for d in docs {
                    text.push_str("---\n");
                    text.push_str(&d);
                }
            }
            print!("{text}");
        }
        Format::Json => {
            let mut items = Vec::new();
            for r in flows {
                items.extend(objects(r)?);
                if args.topology {
                    let f = &r.config.flows[0];
                    items.push(plan_document(f, &topology_plan(f)));
                }
            }
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
    }
    Ok(())
}

pub fn run(args: &RenderArgs) -> Outcome {
    let admission = Admission::millrace();
    let loaded = manifest::load(&args.paths, args.namespace.as_deref())
        .and_then(|m| check_kinds(&m, &admission).map(|()| m))
        .and_then(|m| settings(args.settings.as_deref()).map(|s| (m, s)));
    let (manifests, settings) = match loaded {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Outcome::Unusable;
        }
    };
    let analysis = analyse(
        &manifests,
        &admission,
        &settings,
        Options::default(),
        BTreeMap::new(),
    );
    if !analysis.valid() {
        for p in &analysis.problems {
            eprintln!("{p}");
        }
        eprintln!("error: the set is not valid, so nothing is rendered (see millrace validate)");
        return Outcome::Failed;
    }
    let rendered: Vec<&RenderedFlow> = analysis
        .flows
        .iter()
        .filter_map(|f| f.judgement.rendered.as_ref())
        .collect();
    if let Err(e) = print(args, &rendered) {
        eprintln!("error: cannot write the objects: {e:#}");
        return Outcome::Unusable;
    }
    eprintln!("{} flow(s) rendered", rendered.len());
    Outcome::Passed
}
