//! Millrace API types: the `millrace.dev/v1alpha1` custom resources and the rendered
//! [`WorkerConfig`] that the operator hands to workers.
//!
//! This crate does no I/O. Everything here is data plus pure helpers (condition bookkeeping,
//! duration parsing, stable names), so the operator, the worker and the CLI agree exactly.

// kube-derive attributes repeat keys such as `type_` across printer columns by design.
#![allow(clippy::duplicated_attributes)]

pub mod common;
pub mod conditions;
pub mod connection;
pub mod contract;
pub mod error;
pub mod flow;
pub mod json_schema;
pub mod naming;
pub mod secret;
pub mod worker_config;

pub use common::{Duration, DurationError, RetryPolicy, SecretKeyRef, SemVer};
pub use conditions::{ConditionStatus, set_condition};
pub use connection::{PartnerConnection, PartnerConnectionSpec, PartnerConnectionStatus};
pub use contract::{EventContract, EventContractSpec, EventContractStatus};
pub use error::FieldError;
pub use flow::{IntegrationFlow, IntegrationFlowSpec, IntegrationFlowStatus};
pub use worker_config::WorkerConfig;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The API group of every Millrace kind.
pub const GROUP: &str = "millrace.dev";
/// The served and stored API version.
pub const VERSION: &str = "v1alpha1";
/// Annotation that stops reconciliation of an object while set to `"true"`.
pub const PAUSED_ANNOTATION: &str = "millrace.dev/paused";

/// Every CustomResourceDefinition of the API, in a stable order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    use kube_core::CustomResourceExt;
    vec![
        EventContract::crd(),
        PartnerConnection::crd(),
        IntegrationFlow::crd(),
    ]
    .into_iter()
    .map(with_kubernetes_formats)
    .map(with_root_rules)
    .collect()
}

/// Rules on `metadata` belong at the root of a schema, where CEL sees `self.metadata.name`. The
/// derive places root rules with the kube facade's paths, which this crate does not use, so
/// they are added here.
fn with_root_rules(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
    if crd.spec.names.kind != "IntegrationFlow" {
        return crd;
    }
    for version in &mut crd.spec.versions {
        if let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            root.x_kubernetes_validations
                .get_or_insert_with(Vec::new)
                .push(ValidationRule {
                    rule: flow::NAME_RULE.into(),
                    message: Some(flow::NAME_RULE_MESSAGE.into()),
                    ..ValidationRule::default()
                });
        }
    }
    crd
}

/// Kubernetes knows the integer formats `int32` and `int64` and warns, on every apply, about the
/// unsigned ones schemars writes. Unsigned fields get the signed format wide enough for them and
/// keep (or gain) `minimum: 0`.
fn with_kubernetes_formats(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn rewrite(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                let signed = match map.get("format").and_then(serde_json::Value::as_str) {
                    Some("uint8" | "uint16") => Some("int32"),
                    Some("uint32" | "uint64") => Some("int64"),
                    _ => None,
                };
                if let Some(format) = signed {
                    map.insert("format".into(), format.into());
                    map.entry("minimum").or_insert(serde_json::json!(0.0));
                }
                map.values_mut().for_each(rewrite);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(rewrite),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    rewrite(&mut value);
    serde_json::from_value(value).expect("only format strings changed")
}

/// File name under `crds/yaml/` for a CRD, e.g. `integrationflows.millrace.dev.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}
