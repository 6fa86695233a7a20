//! Digests: of bytes, of a rendered object (the applied-hash stamp), and of a flow's release.

use std::collections::BTreeMap;

use kube_core::Resource;
use millrace_crds::IntegrationFlow;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Annotation on every child carrying the digest of what the operator applied.
pub const APPLIED_HASH_ANNOTATION: &str = "millrace.dev/applied-hash";

/// `sha256:<hex>` of bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// JSON with object keys sorted at every level and no insignificant whitespace: the same value
/// always gives the same bytes, whatever order its maps were built in.
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, &Value> = map.iter().collect();
                out.push('{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// Fields of a flow's spec that belong to its environment, not to its release: how many
/// workers run it, its service level and whether it is suspended. Promotion copies a release
/// between environments; these stay behind.
pub const ENVIRONMENT_FIELDS: [&str; 3] = ["workers", "sla", "suspend"];

/// The release digest of a flow: `sha256:` of the canonical JSON of its kind, name and spec,
/// without the [`ENVIRONMENT_FIELDS`]. The spec is taken in its typed form, so a file and the
/// object the apiserver stored (with its defaults) give the same digest.
pub fn release_digest(flow: &IntegrationFlow) -> String {
    let mut spec = serde_json::to_value(&flow.spec).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut spec {
        for field in ENVIRONMENT_FIELDS {
            map.remove(field);
        }
    }
    let release = serde_json::json!({
        "kind": "IntegrationFlow",
        "name": flow.metadata.name.clone().unwrap_or_default(),
        "spec": spec,
    });
    digest(canonical_json(&release).as_bytes())
}

/// Stamps the digest of `obj` (without the stamp) into its annotations, so an unchanged object
/// can be recognised and never re-applied.
pub fn stamp<K: Resource + serde::Serialize>(mut obj: K) -> K {
    let hash = digest(&serde_json::to_vec(&obj).unwrap_or_default());
    obj.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(APPLIED_HASH_ANNOTATION.into(), hash);
    obj
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn flow(yaml: &str) -> IntegrationFlow {
        serde_yaml::from_str(yaml).unwrap()
    }

    /// A small flow, for the tests of this crate.
    pub(crate) const FLOW: &str = r#"
apiVersion: millrace.dev/v1alpha1
kind: IntegrationFlow
metadata: {name: receipts}
spec:
  version: 1.4.0
  source: {amqp: {connection: wms, exchange: wms.events, routingKeys: ["receipt.#"]}}
  contract: {name: goods-receipt, version: 1}
  routes:
    - name: erp
      destination: {connection: s4, http: {path: /receipts}}
"#;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"d":1,"c":2}],"x":null}}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#
        );
    }

    #[test]
    fn environment_knobs_do_not_change_the_release_digest() {
        let base = flow(FLOW);
        let mut knobs = base.clone();
        knobs.spec.suspend = true;
        knobs.spec.workers = Some(millrace_crds::flow::WorkersSpec {
            replicas: Some(3),
            ..Default::default()
        });
        knobs.metadata.namespace = Some("integration-prod".into());
        knobs.metadata.labels = Some(BTreeMap::from([("team".into(), "mes".into())]));
        assert_eq!(release_digest(&base), release_digest(&knobs));

        let mut jq = base.clone();
        jq.spec.transform = Some(millrace_crds::flow::Transform {
            jq: Some("{id: .id}".into()),
            ..Default::default()
        });
        assert_ne!(release_digest(&base), release_digest(&jq));
        let mut renamed = base.clone();
        renamed.metadata.name = Some("receipts-2".into());
        assert_ne!(release_digest(&base), release_digest(&renamed));
    }

    #[test]
    fn server_defaults_do_not_change_the_release_digest() {
        // What the apiserver stores carries the schema defaults written out.
        let stored = flow(&FLOW.replace(
            "http: {path: /receipts}",
            "http: {path: /receipts, method: POST}",
        ));
        let mut stored = stored;
        stored.spec.deletion_policy = millrace_crds::flow::DeletionPolicy::Retain;
        assert_eq!(release_digest(&flow(FLOW)), release_digest(&stored));
    }
}
