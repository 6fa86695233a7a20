//! An offline build of a kustomization, for the part of kustomize a promotion repository uses:
//! `resources` (files and folders with their own kustomization), `namespace`, `commonLabels`,
//! `commonAnnotations`, and `patches` / `patchesStrategicMerge` (a partial object, applied as
//! a JSON merge patch to the object of the same kind and name, or JSON 6902 operations with a
//! `target`). Any other field is refused by name, so a build never silently differs from what
//! Argo CD or Flux apply.
//!
//! Lists in a partial-object patch replace the list they patch (JSON merge patch, RFC 7386),
//! where kustomize's strategic merge would merge lists with a merge key. Patch maps (workers,
//! sla, data), not lists.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::manifest::{self, Parsed};

/// The file names kustomize looks for in a folder.
pub const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Fields of a kustomization this build understands.
const SUPPORTED: [&str; 9] = [
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "patches",
    "patchesStrategicMerge",
    "commonLabels",
    "commonAnnotations",
    "metadata",
];

/// The kustomization file of `dir`, when it has one.
pub fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    FILE_NAMES.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Every object the kustomization in `dir` produces, with the file and line it came from.
pub fn build(dir: &Path) -> Result<Vec<Parsed>> {
    let mut stack = Vec::new();
    build_in(dir, &mut stack)
}

fn build_in(dir: &Path, stack: &mut Vec<PathBuf>) -> Result<Vec<Parsed>> {
    let file = kustomization_file(dir)
        .ok_or_else(|| anyhow!("{}: no kustomization.yaml in this folder", dir.display()))?;
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    if stack.contains(&canonical) {
        bail!(
            "{}: the kustomization includes itself through its resources",
            file.display()
        );
    }
    stack.push(canonical);
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {shown}"))?;
    let k: Value =
        serde_yaml::from_str(&text).map_err(|e| anyhow!("{shown}: not valid YAML: {e}"))?;
    let Some(fields) = k.as_object() else {
        bail!("{shown}: a kustomization must be a mapping");
    };
    for key in fields.keys() {
        if !SUPPORTED.contains(&key.as_str()) {
            bail!(
                "{shown}: {key} is not supported by millrace's offline build (it reads resources, namespace, patches, patchesStrategicMerge, commonLabels and commonAnnotations): list the objects it would generate under resources"
            );
        }
    }
    let mut objects = Vec::new();
    for (i, entry) in strings(&k, "resources", &shown)?.into_iter().enumerate() {
        if entry.contains("://") || entry.starts_with("github.com/") {
            bail!("{shown}: resources[{i}] {entry} is remote: millrace builds local files only");
        }
        let path = dir.join(&entry);
        if path.is_dir() {
            objects.extend(build_in(&path, stack)?);
        } else if path.is_file() {
            objects.extend(manifest::parse_file(&path)?);
        } else {
            bail!("{shown}: resources[{i}] {entry} does not exist");
        }
    }
    for (i, patch) in patches(&k, dir, &shown)?.into_iter().enumerate() {
        apply_patch(&mut objects, &patch, &shown, i)?;
    }
    if let Some(ns) = k.get("namespace").and_then(Value::as_str) {
        for o in &mut objects {
            if o.value["kind"] != "Namespace" {
                o.value["metadata"]["namespace"] = ns.into();
            }
        }
    }
    for (key, field) in [
        ("commonLabels", "labels"),
        ("commonAnnotations", "annotations"),
    ] {
        if let Some(Value::Object(add)) = k.get(key) {
            for o in &mut objects {
                let meta = &mut o.value["metadata"][field];
                if !meta.is_object() {
                    *meta = Value::Object(Default::default());
                }
                for (name, value) in add {
                    meta[name] = value.clone();
                }
            }
        }
    }
    stack.pop();
    Ok(objects)
}

fn strings(k: &Value, key: &str, shown: &str) -> Result<Vec<String>> {
    match k.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("{shown}: {key}[{i}] must be a path"))
            })
            .collect(),
        Some(_) => bail!("{shown}: {key} must be a list of paths"),
    }
}

/// One patch: its content, and the object it targets when it names one.
struct Patch {
    content: Value,
    target: Option<(Option<String>, Option<String>)>,
    origin: String,
}

fn patches(k: &Value, dir: &Path, shown: &str) -> Result<Vec<Patch>> {
    let read = |rel: &str| -> Result<(Value, String)> {
        let path = dir.join(rel);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow!("{shown}: patch {rel} cannot be read: {e}"))?;
        let v = serde_yaml::from_str(&text)
            .map_err(|e| anyhow!("{}: not valid YAML: {e}", path.display()))?;
        Ok((v, path.display().to_string()))
    };
    let mut out = Vec::new();
    for rel in strings(k, "patchesStrategicMerge", shown)? {
        let (content, origin) = read(&rel)?;
        out.push(Patch {
            content,
            target: None,
            origin,
        });
    }
    if let Some(list) = k.get("patches") {
        let Some(list) = list.as_array() else {
            bail!("{shown}: patches must be a list");
        };
        for (i, p) in list.iter().enumerate() {
            let (content, origin) = match (
                p.get("path").and_then(Value::as_str),
                p.get("patch").and_then(Value::as_str),
            ) {
                (Some(rel), None) => read(rel)?,
                (None, Some(inline)) => (
                    serde_yaml::from_str(inline)
                        .map_err(|e| anyhow!("{shown}: patches[{i}].patch is not YAML: {e}"))?,
                    format!("{shown}: patches[{i}]"),
                ),
                _ => bail!("{shown}: patches[{i}] needs exactly one of path or patch"),
            };
            let target = p.get("target").map(|t| {
                (
                    t.get("kind").and_then(Value::as_str).map(str::to_string),
                    t.get("name").and_then(Value::as_str).map(str::to_string),
                )
            });
            out.push(Patch {
                content,
                target,
                origin,
            });
        }
    }
    Ok(out)
}

fn apply_patch(objects: &mut [Parsed], patch: &Patch, shown: &str, index: usize) -> Result<()> {
    let (kind, name) = match (&patch.target, &patch.content) {
        (Some((kind, name)), _) => (kind.clone(), name.clone()),
        (None, Value::Object(m)) => (
            m.get("kind").and_then(Value::as_str).map(str::to_string),
            m.get("metadata")
                .and_then(|meta| meta.get("name"))
                .and_then(Value::as_str)
                .map(str::to_string),
        ),
        (None, _) => bail!(
            "{}: a patch without a target must be a partial object with kind and metadata.name",
            patch.origin
        ),
    };
    let matches = |o: &Parsed| {
        kind.as_deref().is_none_or(|k| o.value["kind"] == k)
            && name
                .as_deref()
                .is_none_or(|n| o.value.pointer("/metadata/name") == Some(&Value::from(n)))
    };
    let mut hit = 0;
    for o in objects.iter_mut().filter(|o| matches(o)) {
        hit += 1;
        match &patch.content {
            Value::Array(ops) => {
                let ops: json_patch::Patch = serde_json::from_value(Value::Array(ops.clone()))
                    .map_err(|e| anyhow!("{}: not JSON 6902 operations: {e}", patch.origin))?;
                json_patch::patch(&mut o.value, &ops)
                    .map_err(|e| anyhow!("{}: cannot be applied: {e}", patch.origin))?;
            }
            partial => json_patch::merge(&mut o.value, partial),
        }
    }
    if hit == 0 {
        bail!(
            "{shown}: patch {index} ({}) matches no resource ({}/{}): fix its target or list the object under resources",
            patch.origin,
            kind.as_deref().unwrap_or("*"),
            name.as_deref().unwrap_or("*")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const FLOW: &str = "apiVersion: millrace.dev/v1alpha1\nkind: IntegrationFlow\nmetadata: {name: f}\nspec: {version: 1.0.0, workers: {replicas: 1, prefetch: 10}}\n";

    #[test]
    fn resources_namespace_and_patches_build_like_kustomize() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "released/kustomization.yaml",
            "resources: [f.yaml]\n",
        );
        write(d.path(), "released/f.yaml", FLOW);
        write(
            d.path(),
            "kustomization.yaml",
            "namespace: prod\nresources: [released]\npatches:\n- path: p.yaml\n- target: {kind: IntegrationFlow, name: f}\n  patch: |\n    - {op: add, path: /spec/suspend, value: true}\ncommonLabels: {plant: berlin}\n",
        );
        write(
            d.path(),
            "p.yaml",
            "apiVersion: millrace.dev/v1alpha1\nkind: IntegrationFlow\nmetadata: {name: f}\nspec: {workers: {replicas: 3}}\n",
        );
        let built = build(d.path()).unwrap();
        assert_eq!(built.len(), 1);
        let v = &built[0].value;
        assert_eq!(v["metadata"]["namespace"], "prod");
        assert_eq!(v["metadata"]["labels"]["plant"], "berlin");
        assert_eq!(v["spec"]["workers"]["replicas"], 3);
        assert_eq!(
            v["spec"]["workers"]["prefetch"], 10,
            "a merge patch keeps the rest"
        );
        assert_eq!(v["spec"]["suspend"], true);
        assert!(built[0].file.ends_with("released/f.yaml"));
    }

    #[test]
    fn what_it_cannot_build_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "kustomization.yaml",
            "resources: []\nconfigMapGenerator: []\n",
        );
        let e = build(d.path()).unwrap_err().to_string();
        assert!(e.contains("configMapGenerator is not supported"), "{e}");
        write(
            d.path(),
            "kustomization.yaml",
            "resources: [missing.yaml]\n",
        );
        assert!(
            build(d.path())
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        write(
            d.path(),
            "kustomization.yaml",
            "resources: [f.yaml]\npatches: [{path: p.yaml}]\n",
        );
        write(d.path(), "f.yaml", FLOW);
        write(
            d.path(),
            "p.yaml",
            "kind: IntegrationFlow\nmetadata: {name: other}\n",
        );
        let e = build(d.path()).unwrap_err().to_string();
        assert!(e.contains("matches no resource"), "{e}");
    }
}
