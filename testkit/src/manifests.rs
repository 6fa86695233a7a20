//! Reading the repository's manifests (examples, fixtures) as `kubectl` would read them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testkit lives in the repository")
        .to_path_buf()
}

/// A path relative to the repository, for messages.
pub fn shown(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every `.yaml` or `.yml` file under `dir`, recursively, in a stable order.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The manifests of the examples under `dir`: every YAML file that holds whole Kubernetes
/// objects. A promotion repository's machinery is left out: kustomizations, `pipeline.yaml`,
/// `holds.yaml`, and partial objects under a `patches/` folder.
pub fn example_files(dir: &Path) -> Vec<PathBuf> {
    yaml_files(dir)
        .into_iter()
        .filter(|f| {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !matches!(
                name,
                "kustomization.yaml" | "kustomization.yml" | "pipeline.yaml" | "holds.yaml"
            ) && !f.components().any(|c| c.as_os_str() == "patches")
        })
        .collect()
}

/// The non-empty documents of a multi-document YAML file, as JSON.
pub fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", shown(path)));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            serde_json::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", shown(path)))
        })
        .filter(|document| !document.is_null())
        .collect()
}

/// The text after `# expect:` in an invalid fixture: what its refusal must say.
pub fn expectation(path: &Path) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", shown(path)));
    text.lines()
        .find_map(|line| line.strip_prefix("# expect:"))
        .map(|expected| expected.trim().to_string())
        .filter(|expected| !expected.is_empty())
        .unwrap_or_else(|| panic!("{} has no `# expect: <text>` line", shown(path)))
}
