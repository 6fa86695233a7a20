//! `millrace validate`, offline, refuses a flow that names a Secret none of its connections
//! names, as the operator does: the same judgement in `millrace-render`.

use std::path::Path;
use std::process::{Command, Output};

fn validate(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["validate", "-o", "json"])
        .arg(dir)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap_or_else(|e| panic!("cannot run millrace: {e}"))
}

fn shown(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const CONTRACT: &str = r#"apiVersion: millrace.dev/v1alpha1
kind: EventContract
metadata: {name: orders}
spec:
  type: com.acme.order.v1
  versions:
    - version: 1
      schema: {type: object, required: [id], properties: {id: {type: string}}}
      examples: [{id: A-1}]
"#;

/// The broker connection, lending Secret `lent` to ingress flows (none when empty).
fn bus(lent: &str) -> String {
    let annotations = if lent.is_empty() {
        String::new()
    } else {
        format!(", annotations: {{millrace.dev/ingress-secrets: {lent}}}")
    };
    format!(
        "apiVersion: millrace.dev/v1alpha1\nkind: PartnerConnection\nmetadata: {{name: bus{annotations}}}\nspec: {{system: Other, amqp: {{uriSecretRef: {{name: bus-amqp, key: uri}}}}}}\n"
    )
}

/// An HTTP-ingress flow whose signing key is Secret `secret`.
fn flow(secret: &str) -> String {
    format!(
        r#"apiVersion: millrace.dev/v1alpha1
kind: IntegrationFlow
metadata: {{name: orders-in}}
spec:
  version: 1.0.0
  source: {{http: {{path: /ingest/orders, auth: {{type: HmacSha256, secretRef: {{name: {secret}, key: key}}}}}}}}
  broker: {{connection: bus}}
  contract: {{name: orders}}
  routes:
    - name: wms
      destination: {{connection: bus, amqp: {{exchange: wms.in, routingKey: order}}}}
"#
    )
}

fn write_set(dir: &Path, lent: &str, secret: &str) {
    std::fs::write(dir.join("contract.yaml"), CONTRACT).unwrap();
    std::fs::write(dir.join("bus.yaml"), bus(lent)).unwrap();
    std::fs::write(dir.join("flow.yaml"), flow(secret)).unwrap();
}

#[test]
fn a_flow_naming_a_secret_its_connections_do_not_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), "", "payroll-db");
    let out = validate(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let problems: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON list");
    let p = problems
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["reason"] == "SecretNotAllowed"))
        .unwrap_or_else(|| panic!("no SecretNotAllowed in {problems}"));
    assert_eq!(p["severity"], "error", "{p}");
    assert_eq!(p["name"], "orders-in", "{p}");
    assert_eq!(p["field"], "spec.source.http.auth.secretRef.name", "{p}");
    let message = p["message"].as_str().unwrap_or_default();
    for needle in [
        "\"orders-in\"",
        "\"payroll-db\"",
        "PartnerConnection \"bus\"",
        "millrace.dev/ingress-secrets",
        "drop the reference",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
}

#[test]
fn a_secret_the_broker_connection_lends_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), "orders-hmac", "orders-hmac");
    let out = validate(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
}
