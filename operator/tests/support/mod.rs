//! Shared by the operator's integration tests.

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
