//! `millrace diff PATH...`: what applying the set would change in the cluster, field by field.
//!
//! The set is rendered exactly as `millrace render` does; references that the set does not
//! hold are taken from the cluster (contracts with their verdicts, connections, ConfigMaps).
//! Then each flow and each object the operator would apply is compared with the live one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow};
use clap::Args;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::{Api, Client};
use millrace_admission::Admission;
use millrace_crds::naming::worker_object_name;
use millrace_crds::worker_config::{CONFIG_MAP_KEY, WorkerConfig};
use millrace_crds::{EventContract, IntegrationFlow, PartnerConnection};
use millrace_render::{
    APPLIED_HASH_ANNOTATION, Catalog, ConnectionEntry, ContractEntry, RenderedFlow,
    migration_warnings, topology_plan,
};
use serde_json::Value;

use crate::Outcome;
use crate::analysis::{JudgedFlow, Options, analyse, check_kinds};
use crate::manifest::{self, Manifest};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Manifest files, directories (walked for .yaml, .yml and .json), or - for standard input.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Namespace of every object (default: metadata.namespace, else default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig to use (default: its current context).
    #[arg(long)]
    context: Option<String>,
    /// The operator's settings, in the shape of the chart's values.yaml.
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
}

async fn client(args: &DiffArgs) -> Result<Client> {
    crate::cluster::client(args.kubeconfig.as_deref(), args.context.as_deref()).await
}

/// Every `K` in namespace `ns`, each with its name.
async fn list<K>(client: &Client, ns: &str) -> Result<Vec<(String, K)>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let items = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("cannot list {}s in namespace {ns}", K::kind(&())))?;
    Ok(items
        .into_iter()
        .map(|k| (k.meta().name.clone().unwrap_or_default(), k))
        .collect())
}

/// The objects flows may reference, as they are in the cluster.
async fn live_catalog(client: &Client, ns: &str) -> Result<Catalog> {
    let mut catalog = Catalog::new(ns);
    for (name, c) in list::<EventContract>(client, ns).await? {
        catalog
            .contracts
            .insert(name, ContractEntry::from_status(c));
    }
    for (name, c) in list::<PartnerConnection>(client, ns).await? {
        catalog
            .connections
            .insert(name, ConnectionEntry::from_status(c));
    }
    for (name, cm) in list::<ConfigMap>(client, ns).await? {
        catalog
            .config_maps
            .insert(name, cm.data.unwrap_or_default());
    }
    Ok(catalog)
}

/// A path segment: `.key`, or `[key]` when the key is not a plain identifier.
fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (path.is_empty(), plain) {
        (true, true) => key.to_string(),
        (_, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key}]"),
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 120 {
        format!("{}...", text.chars().take(117).collect::<String>())
    } else {
        text
    }
}

/// Field-level differences from `live` to `want`: `+` added, `~` changed, `-` removed. When
/// `symmetric` is false, fields only the live object has (server defaults, other managers) are
/// not differences.
pub fn diff_values(path: &str, want: &Value, live: &Value, symmetric: bool, out: &mut Vec<String>) {
    match (want, live) {
        (Value::Object(w), Value::Object(l)) => {
            for (k, wv) in w {
                let p = join(path, k);
                match l.get(k) {
                    None => out.push(format!("  + {p}: {}", short(wv))),
                    Some(lv) => diff_values(&p, wv, lv, symmetric, out),
                }
            }
            if symmetric {
                for (k, lv) in l {
                    if !w.contains_key(k) {
                        out.push(format!("  - {}: {}", join(path, k), short(lv)));
                    }
                }
            }
        }
        (Value::Array(w), Value::Array(l)) if w.len() == l.len() => {
            for (i, (wv, lv)) in w.iter().zip(l).enumerate() {
                diff_values(&format!("{path}[{i}]"), wv, lv, symmetric, out);
            }
        }
        _ if want != live => out.push(format!("  ~ {path}: {} -> {}", short(live), short(want))),
        _ => {}
    }
}

fn metadata_diff(want: &Value, live: &Value, out: &mut Vec<String>) {
    for key in ["labels", "annotations"] {
        let mut w = want["metadata"][key].clone();
        if let Value::Object(m) = &mut w {
            m.remove(APPLIED_HASH_ANNOTATION);
        }
        if !w.is_null() {
            diff_values(
                &format!("metadata.{key}"),
                &w,
                &live["metadata"][key],
                false,
                out,
            );
        }
    }
}

/// The live object `name` of kind `K`, as JSON.
async fn live<K>(client: &Client, ns: &str, name: &str) -> Result<Option<Value>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    Ok(match api.get_opt(name).await? {
        Some(k) => Some(serde_json::to_value(k)?),
        None => None,
    })
}

/// What changes for one flow; empty when nothing does.
struct FlowDiff {
    lines: Vec<String>,
    warnings: Vec<String>,
}

async fn diff_flow(client: &Client, f: &JudgedFlow, rendered: &RenderedFlow) -> Result<FlowDiff> {
    let m: &Manifest = &f.manifest;
    let (ns, name) = (m.namespace.as_str(), m.name.as_str());
    let mut lines = Vec::new();
    let mut warnings = Vec::new();
    let flows: Api<IntegrationFlow> = Api::namespaced(client.clone(), ns);
    let live_flow = flows.get_opt(name).await?;
    match &live_flow {
        None => lines.push(format!("+ IntegrationFlow {ns}/{name} (created)")),
        Some(l) => {
            let mut spec_lines = Vec::new();
            diff_values(
                "spec",
                &serde_json::to_value(&f.flow.spec)?,
                &serde_json::to_value(&l.spec)?,
                true,
                &mut spec_lines,
            );
            if !spec_lines.is_empty() {
                lines.push(format!("~ IntegrationFlow {ns}/{name}"));
                lines.extend(spec_lines);
            }
        }
    }
    let live_revision = live_flow
        .as_ref()
        .and_then(|l| l.status.as_ref())
        .and_then(|s| s.revision.clone());

    let object = worker_object_name(name);
    let wanted: [(&str, Option<Value>, Option<Value>); 4] = [
        (
            "ConfigMap",
            Some(serde_json::to_value(&rendered.config_map)?),
            live::<ConfigMap>(client, ns, &object).await?,
        ),
        (
            "Deployment",
            Some(serde_json::to_value(&rendered.deployment)?),
            live::<Deployment>(client, ns, &object).await?,
        ),
        (
            "Service",
            Some(serde_json::to_value(&rendered.service)?),
            live::<Service>(client, ns, &object).await?,
        ),
        (
            "PodDisruptionBudget",
            rendered
                .pdb
                .as_ref()
                .map(serde_json::to_value)
                .transpose()?,
            live::<PodDisruptionBudget>(client, ns, &object).await?,
        ),
    ];
    let mut live_config = None;
    for (kind, want, live) in wanted {
        let mut changes = Vec::new();
        match (&want, &live) {
            (None, None) => continue,
            (Some(_), None) => {
                lines.push(format!("+ {kind} {ns}/{object} (created)"));
                continue;
            }
            (None, Some(_)) => {
                lines.push(format!("- {kind} {ns}/{object} (deleted)"));
                continue;
            }
            (Some(w), Some(l)) => {
                metadata_diff(w, l, &mut changes);
                if kind == "ConfigMap" {
                    let text =
                        |v: &Value| v["data"][CONFIG_MAP_KEY].as_str().unwrap_or("").to_string();
                    let (wt, lt) = (text(w), text(l));
                    live_config = WorkerConfig::from_json(&lt).ok();
                    match (
                        serde_json::from_str::<Value>(&wt),
                        serde_json::from_str::<Value>(&lt),
                    ) {
                        (Ok(wv), Ok(lv)) => diff_values(
                            &format!("data[{CONFIG_MAP_KEY}]"),
                            &wv,
                            &lv,
                            true,
                            &mut changes,
                        ),
                        _ => diff_values("data", &w["data"], &l["data"], true, &mut changes),
                    }
                } else {
                    diff_values("spec", &w["spec"], &l["spec"], false, &mut changes);
                }
            }
        }
        if !changes.is_empty() {
            lines.push(format!("~ {kind} {ns}/{object}"));
            lines.extend(changes);
        }
    }
    if !lines.is_empty() {
        lines.push(format!(
            "  revision: {} -> {}",
            live_revision.as_deref().unwrap_or("none"),
            rendered.revision
        ));
    }
    if let Some(lc) = live_config.as_ref().and_then(|c| c.flows.first()) {
        let before = topology_plan(lc);
        let after = topology_plan(&rendered.config.flows[0]);
        warnings = migration_warnings(&before, &after);
    }
    Ok(FlowDiff { lines, warnings })
}

async fn diff(args: &DiffArgs) -> Result<Outcome> {
    let admission = Admission::millrace();
    let manifests = manifest::load(&args.paths, args.namespace.as_deref())?;
    check_kinds(&manifests, &admission)?;
    let settings = crate::render::settings(args.settings.as_deref())?;
    let client = client(args).await?;
    let mut live = BTreeMap::new();
    for ns in manifests.iter().map(|m| m.namespace.clone()) {
        if let std::collections::btree_map::Entry::Vacant(slot) = live.entry(ns) {
            let catalog = live_catalog(&client, slot.key())
                .await
                .map_err(|e| anyhow!("the cluster is not reachable: {e:#}"))?;
            slot.insert(catalog);
        }
    }
    let analysis = analyse(&manifests, &admission, &settings, Options::default(), live);
    if !analysis.valid() {
        for p in &analysis.problems {
            eprintln!("{p}");
        }
        anyhow::bail!("the set is not valid, so it cannot be compared (see millrace validate)");
    }
    let mut changed = 0;
    for f in &analysis.flows {
        let Some(rendered) = &f.judgement.rendered else {
            continue;
        };
        let d = diff_flow(&client, f, rendered).await?;
        for w in &d.warnings {
            println!(
                "warning: IntegrationFlow {}/{}: {w}",
                f.manifest.namespace, f.manifest.name
            );
        }
        if !d.lines.is_empty() {
            changed += 1;
            for l in d.lines {
                println!("{l}");
            }
        }
    }
    eprintln!(
        "{} flow(s) compared, {changed} with changes",
        analysis.flows.len()
    );
    Ok(if changed == 0 {
        Outcome::Passed
    } else {
        Outcome::Failed
    })
}

pub fn run(args: &DiffArgs) -> Outcome {
    match crate::cluster::block_on(diff(args)) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("error: {e:#}");
            Outcome::Unusable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_each_field() {
        let mut out = Vec::new();
        diff_values(
            "spec",
            &json!({"a": 1, "b": {"c": [1, 2]}, "d": "x"}),
            &json!({"a": 2, "b": {"c": [1, 3]}, "e": true}),
            true,
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "  ~ spec.a: 2 -> 1",
                "  ~ spec.b.c[1]: 3 -> 2",
                "  + spec.d: \"x\"",
                "  - spec.e: true"
            ]
        );
        let mut out = Vec::new();
        diff_values(
            "m",
            &json!({"k": 1}),
            &json!({"k": 1, "extra": 2}),
            false,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(
            join("metadata.annotations", "millrace.dev/x"),
            "metadata.annotations[millrace.dev/x]"
        );
    }
}
