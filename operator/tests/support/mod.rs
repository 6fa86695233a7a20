//! Shared by the operator's integration tests. Each test binary uses a part of it.
#![allow(dead_code)]

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;

/// Applies one manifest (any namespaced kind) server-side, as a person would with kubectl.
pub async fn apply(client: &Client, ns: &str, doc: Value) {
    let kind = doc["kind"]
        .as_str()
        .expect("manifest has a kind")
        .to_string();
    let name = doc["metadata"]["name"]
        .as_str()
        .expect("manifest has a name")
        .to_string();
    let (group, version) = match doc["apiVersion"]
        .as_str()
        .expect("manifest has an apiVersion")
        .split_once('/')
    {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            doc["apiVersion"].as_str().unwrap_or_default().to_string(),
        ),
    };
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, &kind));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    api.patch(
        &name,
        &PatchParams::apply("millrace-tests").force(),
        &Patch::Apply(&doc),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {kind}/{name}: {e}"));
}

/// The path of a binary built next to the test binary (`make test` builds them first).
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first (make test does)",
        bin.display()
    );
    bin
}

/// Every non-empty YAML document of every `.yaml` file under `dir`, sorted by path.
pub fn documents_under(dir: &std::path::Path) -> Vec<Value> {
    use serde::Deserialize;
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|x| x == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("readable manifest");
            serde_yaml::Deserializer::from_str(&text)
                .map(|d| Value::deserialize(d).expect("valid YAML"))
                .filter(|v| !v.is_null())
                .collect::<Vec<_>>()
        })
        .collect()
}
