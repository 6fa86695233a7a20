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

/// Every non-empty YAML document of every manifest under `dir`, sorted by path.
pub fn documents_under(dir: &std::path::Path) -> Vec<Value> {
    use millrace_testkit::manifests::{documents, yaml_files};
    yaml_files(dir).iter().flat_map(|f| documents(f)).collect()
}
