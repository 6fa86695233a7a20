//! `millrace contracts check` over the manufacturing examples and over broken manifests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn millrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run millrace: {e}"))
}

fn check(path: &Path) -> Output {
    millrace(&["contracts", "check", path.to_str().unwrap_or_default()])
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manufacturing/contracts")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

const GOOD: &str = r#"
apiVersion: millrace.dev/v1alpha1
kind: EventContract
metadata: {name: pallet-labelled}
spec:
  type: com.acme.mfg.pallet.labelled.v1
  owner: team-wms
  compatibility: Backward
  versions:
    - version: 1
      schema:
        type: object
        additionalProperties: false
        required: [sscc]
        properties:
          sscc: {type: string, pattern: "^[0-9]{18}$"}
      examples:
        - {sscc: "340123450000098765"}
    - version: 2
      schema:
        type: object
        additionalProperties: false
        required: [sscc]
        properties:
          sscc: {type: string, pattern: "^[0-9]{18}$"}
          labelledAt: {type: string, format: date-time}
      examples:
        - {sscc: "340123450000098765", labelledAt: "2026-11-26T10:00:00Z"}
"#;

#[test]
fn the_manufacturing_contracts_pass() {
    let output = check(&examples_dir());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    for name in [
        "sales-order-released",
        "production-completed",
        "material-scrapped",
        "shipment-advised",
        "goods-receipt-posted",
        "shipment-confirmed",
        "inventory-adjusted",
        "carrier-milestone",
    ] {
        assert!(
            text.contains(&format!("ok: EventContract {name} ")),
            "{name} missing from:\n{text}"
        );
    }
    assert!(
        text.contains("production-completed (2 version(s), BackwardTransitive)"),
        "{text}"
    );
}

#[test]
fn other_kinds_are_ignored_in_multi_document_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: plant-codes}}\ndata: {{berlin: \"1000\"}}\n---\n{GOOD}\n---\n"
    );
    write(dir.path(), "nested/deeper/all.yaml", &text);
    write(dir.path(), "README.md", "not a manifest");
    let output = check(dir.path());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("ok: EventContract pallet-labelled (2 version(s), Backward)"),
        "{}",
        stdout(&output)
    );
    assert!(
        stderr(&output).contains("1 contract(s) checked, 0 rejected"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_incompatible_version_is_explained() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let broken = GOOD.replace("required: [sscc]\n        properties:\n          sscc: {type: string, pattern: \"^[0-9]{18}$\"}\n          labelledAt", "required: [sscc, labelledAt]\n        properties:\n          sscc: {type: string, pattern: \"^[0-9]{18}$\"}\n          labelledAt");
    assert_ne!(broken, GOOD, "the test manifest edit must apply");
    let file = write(dir.path(), "pallet.yaml", &broken);
    let output = check(&file);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(
        text.contains("rejected: EventContract pallet-labelled version 2 in")
            && text.contains("REQUIRED_ATTRIBUTE_ADDED #/properties/labelledAt breaks Backward compatibility with version 1"),
        "{text}"
    );
}

#[test]
fn transitive_modes_compare_with_every_earlier_version() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let manifest = r#"
apiVersion: millrace.dev/v1alpha1
kind: EventContract
metadata: {name: widening}
spec:
  type: com.acme.mfg.widening.v1
  compatibility: ForwardTransitive
  versions:
    - {version: 1, schema: {type: integer, maximum: 10}}
    - {version: 2, schema: {type: integer, maximum: 5}}
    - {version: 3, schema: {type: integer, maximum: 8}}
"#;
    let file = write(dir.path(), "widening.yaml", manifest);
    let output = check(&file);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(
        text.contains("version 3")
            && text.contains(
                "MAXIMUM_INCREASED # breaks ForwardTransitive compatibility with version 2"
            ),
        "{text}"
    );
    assert!(
        !text.contains("version 2 in"),
        "version 2 narrows, which Forward allows:\n{text}"
    );
}

#[test]
fn bad_examples_and_schemas_are_explained() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad_example = GOOD.replace("- {sscc: \"340123450000098765\"}\n", "- {sscc: \"12\"}\n");
    assert_ne!(bad_example, GOOD);
    let bad_schema = GOOD.replace(
        "sscc: {type: string, pattern: \"^[0-9]{18}$\"}\n      examples:\n        - {sscc: \"340",
        "sscc: {type: strin, pattern: \"^[0-9]{18}$\"}\n      examples:\n        - {sscc: \"340",
    );
    assert_ne!(bad_schema, GOOD);
    write(dir.path(), "a.yaml", &bad_example);
    write(
        dir.path(),
        "b.yaml",
        &bad_schema.replace("pallet-labelled", "pallet-typo"),
    );
    let output = check(dir.path());
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(
        text.contains("rejected: EventContract pallet-labelled version 1")
            && text.contains("example 1 does not validate against the schema: at /sscc"),
        "{text}"
    );
    assert!(
        text.contains("rejected: EventContract pallet-typo version 1")
            && text.contains("does not compile as JSON Schema"),
        "{text}"
    );
}

#[test]
fn misnumbered_versions_and_bad_modes_are_rejected() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let misnumbered = GOOD.replace("- version: 2", "- version: 3");
    write(dir.path(), "a.yaml", &misnumbered);
    let bad_mode = GOOD
        .replace("compatibility: Backward", "compatibility: backwards")
        .replace("pallet-labelled", "pallet-mode");
    write(dir.path(), "b.yaml", &bad_mode);
    let output = check(dir.path());
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(text.contains("must be numbered 1, 2, 3"), "{text}");
    assert!(
        text.contains("spec.compatibility \"backwards\" is not a mode"),
        "{text}"
    );
}

#[test]
fn unreadable_input_exits_2() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let output = check(&dir.path().join("nowhere"));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("nowhere"), "{}", stderr(&output));

    let file = write(
        dir.path(),
        "broken.yaml",
        "kind: EventContract\nspec: [unclosed\n",
    );
    let output = check(&file);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("broken.yaml is not valid YAML"),
        "{}",
        stderr(&output)
    );

    let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let output = check(empty.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no EventContract manifests"),
        "{}",
        stderr(&output)
    );
}
