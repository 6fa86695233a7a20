//! JSON Schemas of the CRDs for kubeconform and editors: one file per kind and version, named
//! `<group>/<kind>_<version>.json` (kind lower-case), as kubeconform's
//! `-schema-location '.../{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json'` expects.
//!
//! The CRD's `openAPIV3Schema` becomes plain JSON Schema: `nullable` becomes a `null` type,
//! `x-kubernetes-int-or-string` becomes a string-or-integer, and every object that lists its
//! properties refuses others (as `kubectl apply --validate=strict` does), unless it preserves
//! unknown fields. CEL rules cannot be expressed in JSON Schema; `millrace validate` checks them.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

fn convert(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    if map.remove("x-kubernetes-int-or-string") == Some(Value::Bool(true)) {
        map.remove("type");
        map.insert(
            "oneOf".into(),
            json!([{"type": "string"}, {"type": "integer"}]),
        );
    }
    if map.remove("nullable") == Some(Value::Bool(true))
        && let Some(Value::String(t)) = map.get("type").cloned()
    {
        map.insert("type".into(), json!([t, "null"]));
    }
    let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserves {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for value in map.values_mut() {
        match value {
            Value::Object(_) => convert(value),
            Value::Array(items) => items.iter_mut().for_each(convert),
            _ => {}
        }
    }
    // Keys inside `properties` are field names, not keywords: they were converted above as
    // schemas, which is what they are.
}

/// `(relative path, schema)` for every served version of `crd`.
pub fn kubeconform_schemas(crd: &CustomResourceDefinition) -> Vec<(String, Value)> {
    let group = &crd.spec.group;
    let kind = crd.spec.names.kind.to_lowercase();
    crd.spec
        .versions
        .iter()
        .filter(|v| v.served)
        .filter_map(|v| {
            let schema = v.schema.as_ref()?.open_api_v3_schema.as_ref()?;
            let mut value = serde_json::to_value(schema).ok()?;
            convert(&mut value);
            if let Value::Object(map) = &mut value {
                map.insert(
                    "$schema".into(),
                    "http://json-schema.org/draft-07/schema#".into(),
                );
                map.insert(
                    "description".into(),
                    format!("{} {group}/{}", crd.spec.names.kind, v.name).into(),
                );
            }
            Some((format!("{group}/{kind}_{}.json", v.name), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_strict_and_kubernetes_extensions_are_translated() {
        let mut s = json!({
            "type": "object",
            "properties": {
                "port": {"x-kubernetes-int-or-string": true},
                "note": {"type": "string", "nullable": true},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"a": {"type": "string"}}}
            }
        });
        convert(&mut s);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["port"]["oneOf"][1]["type"], "integer");
        assert_eq!(s["properties"]["note"]["type"], json!(["string", "null"]));
        assert!(
            s["properties"]["free"]
                .get("additionalProperties")
                .is_none()
        );
    }

    #[test]
    fn one_file_per_kind_and_version() {
        let files: Vec<String> = crate::all_crds()
            .iter()
            .flat_map(kubeconform_schemas)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            files,
            [
                "millrace.dev/eventcontract_v1alpha1.json",
                "millrace.dev/partnerconnection_v1alpha1.json",
                "millrace.dev/integrationflow_v1alpha1.json"
            ]
        );
    }
}
