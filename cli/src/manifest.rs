//! The set of manifests a command works on: every document of every file given (directories are
//! walked for `.yaml`, `.yml` and `.json`; `-` is standard input), each with where it came from.
//!
//! A folder with a `kustomization.yaml` is built the way Argo CD and Flux would sync it (see
//! [`crate::kustomize`]), so `millrace validate envs/prod` judges what the cluster will receive.
//!
//! Input that cannot be read as a set is refused as a whole, with one line naming the file:
//! a file that cannot be read, text that is not YAML, a document without `kind`, a Millrace
//! apiVersion with a kind this release does not serve, and the same object twice.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::input::manifest_files;

/// The API group of every Millrace kind.
pub const GROUP: &str = "millrace.dev";

/// One object read from a file.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The file as given (or `-` for standard input).
    pub file: String,
    /// The line where the object's document starts (1-based).
    pub line: usize,
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.name` (empty when missing; admission reports that).
    pub name: String,
    /// The namespace it belongs to: `-n`, else `metadata.namespace`, else `default`.
    pub namespace: String,
    /// The document.
    pub value: Value,
}

impl Manifest {
    /// `Kind/name`, as problems name the object.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// `FILE:LINE`.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// True for the `millrace.dev` group.
    pub fn is_millrace(&self) -> bool {
        self.api_version.split('/').next() == Some(GROUP)
    }
}

/// The line where each YAML document of `text` starts: after a `---` separator line, or 1.
fn document_lines(text: &str) -> Vec<usize> {
    let mut starts = vec![1];
    for (i, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            if i == 0 {
                starts[0] = 2;
            } else {
                starts.push(i + 2);
            }
        }
    }
    starts
}

fn parse(file: &str, text: &str) -> Result<Vec<(usize, Value)>> {
    if file.ends_with(".json") {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| anyhow!("{file}:{}: not valid JSON: {e}", e.line()))?;
        return Ok(match value {
            // A kubectl List holds objects.
            Value::Object(ref m) if m.get("kind") == Some(&Value::from("List")) => m
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|v| (1, v.clone()))
                .collect(),
            v => vec![(1, v)],
        });
    }
    let lines = document_lines(text);
    let mut out = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let line = lines.get(index).copied().unwrap_or(1);
        let value = Value::deserialize(document).map_err(|e| {
            let at = e.location().map(|l| l.line()).unwrap_or(line);
            anyhow!("{file}:{at}: not valid YAML: {e}")
        })?;
        if !value.is_null() {
            out.push((line, value));
        }
    }
    Ok(out)
}

/// One document read from a file, before it is checked.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The file as given.
    pub file: String,
    /// The line where the document starts (1-based).
    pub line: usize,
    /// The document.
    pub value: Value,
}

/// Every document of one file.
pub fn parse_file(path: &Path) -> Result<Vec<Parsed>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{file}: cannot read: {e}"))?;
    Ok(parse(&file, &text)?
        .into_iter()
        .map(|(line, value)| Parsed {
            file: file.clone(),
            line,
            value,
        })
        .collect())
}

/// Every document of `paths`: files, folders (built when they hold a kustomization, walked
/// otherwise) and `-`.
pub fn read(paths: &[PathBuf]) -> Result<Vec<Parsed>> {
    let mut out = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| anyhow!("-: cannot read standard input: {e}"))?;
            out.extend(parse("-", &text)?.into_iter().map(|(line, value)| Parsed {
                file: "-".into(),
                line,
                value,
            }));
        } else if path.is_dir() && crate::kustomize::kustomization_file(path).is_some() {
            out.extend(crate::kustomize::build(path)?);
        } else {
            for file in manifest_files(path)? {
                out.extend(parse_file(&file)?);
            }
        }
    }
    Ok(out)
}

/// Reads every object of `paths`, giving namespaced objects `namespace` when it is set.
pub fn load(paths: &[PathBuf], namespace: Option<&str>) -> Result<Vec<Manifest>> {
    checked(read(paths)?, namespace)
}

/// Checks parsed documents into manifests: each an object with kind and apiVersion, none twice.
pub fn checked(documents: Vec<Parsed>, namespace: Option<&str>) -> Result<Vec<Manifest>> {
    let mut manifests = Vec::new();
    let mut seen: BTreeMap<(String, String, String, String), String> = BTreeMap::new();
    for Parsed { file, line, value } in documents {
        {
            let Some(object) = value.as_object() else {
                bail!("{file}:{line}: the document is not an object with apiVersion and kind");
            };
            let field = |k: &str| {
                object
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let (api_version, kind) = (field("apiVersion"), field("kind"));
            if kind.is_empty() {
                bail!("{file}:{line}: the document has no kind: add kind and apiVersion");
            }
            if api_version.is_empty() {
                bail!("{file}:{line}: {kind} has no apiVersion: add apiVersion");
            }
            let meta = object.get("metadata");
            let name = meta
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let namespace = namespace
                .map(str::to_string)
                .or_else(|| {
                    meta.and_then(|m| m.get("namespace"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "default".into());
            let m = Manifest {
                file: file.clone(),
                line,
                api_version,
                kind,
                name,
                namespace,
                value,
            };
            let group = m.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
            let key = (
                group.to_string(),
                m.kind.clone(),
                m.namespace.clone(),
                m.name.clone(),
            );
            if !m.name.is_empty()
                && let Some(first) = seen.insert(key, m.at())
            {
                bail!(
                    "{}: {} in namespace {} is defined twice (first at {first}): keep one",
                    m.at(),
                    m.id(),
                    m.namespace
                );
            }
            manifests.push(m);
        }
    }
    Ok(manifests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lines_follow_separators() {
        assert_eq!(
            document_lines("a: 1\n---\nb: 2\n---\nc: 3\n"),
            vec![1, 3, 5]
        );
        assert_eq!(document_lines("---\na: 1\n"), vec![2]);
    }
}
