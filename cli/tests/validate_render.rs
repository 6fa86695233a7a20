//! `millrace validate`, `render` and `completion` through the binary, offline: the examples are
//! valid and complete, broken manifests are refused by field, unusable input exits 2 with one
//! line, and rendering is deterministic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn millrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(args)
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

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .display()
        .to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path
}

const CONTRACT: &str = r#"apiVersion: millrace.dev/v1alpha1
kind: EventContract
metadata: {name: orders}
spec:
  type: com.acme.order.v1
  versions:
    - version: 1
      schema: {type: object, additionalProperties: false, required: [id], properties: {id: {type: string}}}
      examples: [{id: A-1}]
"#;

const BUS: &str = r#"apiVersion: millrace.dev/v1alpha1
kind: PartnerConnection
metadata: {name: bus}
spec: {system: MES, amqp: {uriSecretRef: {name: broker, key: uri}}}
"#;

fn flow(jq: &str) -> String {
    format!(
        r#"apiVersion: millrace.dev/v1alpha1
kind: IntegrationFlow
metadata: {{name: orders-to-erp}}
spec:
  version: 1.0.0
  source: {{amqp: {{connection: bus, exchange: mes.events, routingKeys: ["order.#"]}}}}
  contract: {{name: orders}}
  transform: {{jq: '{jq}'}}
  routes:
    - name: erp
      destination: {{connection: bus, amqp: {{exchange: erp.in, routingKey: order}}}}
"#
    )
}

#[test]
fn the_examples_are_valid_and_complete() {
    for dir in ["examples/basic", "examples/manufacturing"] {
        let out = millrace(&["validate", &repo(dir)]);
        assert_eq!(out.status.code(), Some(0), "{dir}: {}", shown(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("valid, 0 error(s), 0 warning(s)"),
            "{}",
            shown(&out)
        );
    }
}

#[test]
fn every_admission_fixture_is_refused_by_field() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 20);
    for file in files {
        let out = millrace(&["validate", "--allow-missing-refs", file.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {}",
            file.display(),
            shown(&out)
        );
        let first = String::from_utf8_lossy(&out.stdout);
        let line = first
            .lines()
            .find(|l| !l.contains("warning:"))
            .unwrap_or_default();
        // FILE:LINE: Kind/name: field.path: message
        let parts: Vec<&str> = line.splitn(5, ": ").collect();
        assert!(
            parts.len() >= 4 && parts[0].contains(".yaml:"),
            "{}: {line}",
            file.display()
        );
        assert!(
            ["spec", "metadata", "<root>"]
                .iter()
                .any(|p| parts[2].starts_with(p)),
            "{line}"
        );
    }
}

#[test]
fn cross_object_problems_name_the_field_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "contract.yaml", CONTRACT);
    write(dir.path(), "bus.yaml", BUS);
    write(dir.path(), "flow.yaml", &flow("{order: .id"));
    let out = millrace(&["validate", dir.path().to_str().unwrap()]);
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("IntegrationFlow/orders-to-erp: spec.transform.jq: syntax error"),
        "{text}"
    );

    // A reference outside the set is an error, or a warning with --allow-missing-refs.
    std::fs::remove_file(dir.path().join("contract.yaml")).unwrap();
    write(dir.path(), "flow.yaml", &flow("{order: .id}"));
    let out = millrace(&["validate", dir.path().to_str().unwrap()]);
    let text = shown(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("spec.contract: EventContract \"orders\" not found"),
        "{text}"
    );
    let out = millrace(&[
        "validate",
        "--allow-missing-refs",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    assert!(
        shown(&out).contains("spec.contract: warning: EventContract"),
        "{}",
        shown(&out)
    );

    // A breaking contract version is refused with the compatibility engine's change.
    let breaking = CONTRACT.replace(
        "      examples: [{id: A-1}]\n",
        "      examples: [{id: A-1}]\n    - version: 2\n      schema: {type: object, additionalProperties: false, required: [id, qty], properties: {id: {type: string}, qty: {type: number}}}\n",
    );
    write(dir.path(), "contract.yaml", &breaking);
    let out = millrace(&["validate", "-o", "json", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let problems: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &problems[0];
    assert_eq!(p["field"], "spec.versions[1]", "{problems}");
    assert_eq!(p["reason"], "IncompatibleVersion", "{problems}");
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .contains("REQUIRED_ATTRIBUTE_ADDED"),
        "{problems}"
    );
}

#[test]
fn other_kinds_pass_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "all.yaml",
        &format!(
            "{CONTRACT}---\n{BUS}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: broker}}\nstringData: {{uri: amqp://x}}\n---\n{}",
            flow("{order: .id}")
        ),
    );
    let out = millrace(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let out = millrace(&["validate", "--strict", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        shown(&out).contains("all.yaml:16: Secret/broker: kind:"),
        "{}",
        shown(&out)
    );
}

#[test]
fn unusable_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("not-yaml.yaml", "kind: [unclosed\n", "not valid YAML"),
        (
            "no-kind.yaml",
            "apiVersion: v1\nmetadata: {name: x}\n",
            "has no kind",
        ),
        (
            "duplicate.yaml",
            &format!("{BUS}---\n{BUS}"),
            "defined twice",
        ),
        (
            "unknown-kind.yaml",
            "apiVersion: millrace.dev/v1alpha1\nkind: FlowWidget\nmetadata: {name: x}\n",
            "not a kind this release serves",
        ),
    ];
    for (name, text, expected) in cases {
        let path = write(dir.path(), name, text);
        for command in ["validate", "render"] {
            let out = millrace(&[command, path.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert_eq!(
                out.status.code(),
                Some(2),
                "{command} {name}: {}",
                shown(&out)
            );
            assert!(
                err.contains(expected) && err.contains(name),
                "{command} {name}: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "{command} {name}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let missing = dir.path().join("nowhere.yaml");
    let out = millrace(&["validate", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nowhere.yaml"),
        "{}",
        shown(&out)
    );
}

#[test]
fn stdin_is_read_with_a_dash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["validate", "-", "--allow-missing-refs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(BUS.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
}

#[test]
fn render_is_deterministic_and_honours_settings() {
    let dir = tempfile::tempdir().unwrap();
    let example = repo("examples/manufacturing");
    let a = millrace(&["render", &example, "-n", "plant-berlin"]);
    let b = millrace(&["render", &example, "-n", "plant-berlin"]);
    assert_eq!(a.status.code(), Some(0), "{}", shown(&a));
    assert_eq!(a.stdout, b.stdout, "two renders differ");
    let text = String::from_utf8_lossy(&a.stdout);
    assert_eq!(text.matches("\nkind: ConfigMap\n").count(), 7, "{text}");
    assert_eq!(text.matches("\nkind: Deployment\n").count(), 7);
    assert!(
        text.contains("image: ghcr.io/millrace-dev/millrace-worker:"),
        "{text}"
    );
    assert!(text.contains("namespace: plant-berlin"));
    assert!(
        !text.contains("guest:guest"),
        "a secret value leaked into the render"
    );

    let values = write(
        dir.path(),
        "values.yaml",
        "workerImage: {repository: registry.local/worker, tag: \"2.0\"}\nreplicaCount: 3\n",
    );
    let out = millrace(&[
        "render",
        &example,
        "--settings",
        values.to_str().unwrap(),
        "--topology",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = list["items"].as_array().unwrap();
    assert!(
        items.iter().any(|i| i["kind"] == "TopologyPlan"
            && i["queues"].as_array().is_some_and(|q| !q.is_empty()))
    );
    let image = items
        .iter()
        .find(|i| i["kind"] == "Deployment")
        .map(|d| d["spec"]["template"]["spec"]["containers"][0]["image"].clone())
        .unwrap();
    assert_eq!(image, "registry.local/worker:2.0");

    // An invalid set renders nothing.
    write(dir.path(), "flow.yaml", &flow("{order: .id}"));
    let out = millrace(&["render", dir.path().join("flow.yaml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn completion_scripts_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let out = millrace(&["completion", shell]);
        assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("validate"),
            "{shell}"
        );
    }
}

// A flow may name only Secrets its connections name: offline as in the cluster, through the
// same judgement in `millrace-render`.

fn validate_json(dir: &Path) -> Output {
    let dir = dir.to_str().expect("a UTF-8 path");
    millrace(&["validate", "-o", "json", dir])
}

/// The broker connection, lending Secret `lent` to ingress flows (none when empty).
fn lending_bus(lent: &str) -> String {
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
fn ingress_flow(secret: &str) -> String {
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
    std::fs::write(dir.join("bus.yaml"), lending_bus(lent)).unwrap();
    std::fs::write(dir.join("flow.yaml"), ingress_flow(secret)).unwrap();
}

#[test]
fn a_flow_naming_a_secret_its_connections_do_not_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), "", "payroll-db");
    let out = validate_json(dir.path());
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
    let out = validate_json(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", shown(&out));
}
