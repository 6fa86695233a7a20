//! Reading JSON and YAML documents from files, with errors that name the file.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// One JSON or YAML document (`.json` files are parsed as JSON, anything else as YAML,
/// which also accepts JSON).
pub fn load_document(path: &Path) -> Result<Value> {
    let text = read_text(path)?;
    if is_json(path) {
        return serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()));
    }
    let documents = load_yaml_documents(path, &text)?;
    match <[Value; 1]>::try_from(documents) {
        Ok([document]) => Ok(document),
        Err(documents) if documents.is_empty() => {
            bail!("{} is empty: it must hold one schema", path.display())
        }
        Err(documents) => bail!(
            "{} holds {} YAML documents: it must hold exactly one schema",
            path.display(),
            documents.len()
        ),
    }
}

/// Every document of a (possibly multi-document) YAML or JSON file, skipping empty ones.
pub fn load_documents(path: &Path) -> Result<Vec<Value>> {
    let text = read_text(path)?;
    if is_json(path) {
        let value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        return Ok(vec![value]);
    }
    load_yaml_documents(path, &text)
}

fn load_yaml_documents(path: &Path, text: &str) -> Result<Vec<Value>> {
    let mut documents = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).map_err(|e| {
            anyhow!(
                "{} is not valid YAML (document {}): {e}",
                path.display(),
                index + 1
            )
        })?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The manifest files at `path`: the file itself, or every `.yaml`, `.yml` and `.json` file
/// below the directory, in a stable order.
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>> {
    let metadata = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if metadata.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let entry_path = entry.path();
            let file_type = entry
                .file_type()
                .with_context(|| format!("cannot read {}", entry_path.display()))?;
            if file_type.is_dir() {
                pending.push(entry_path);
            } else if entry_path
                .extension()
                .and_then(|ext| ext.to_str())
                .is_some_and(|ext| {
                    matches!(ext.to_ascii_lowercase().as_str(), "yaml" | "yml" | "json")
                })
            {
                files.push(entry_path);
            }
        }
    }
    files.sort();
    Ok(files)
}
