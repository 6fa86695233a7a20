//! `millrace contracts diff` over the whole compatibility corpus, exit codes included.

#[path = "../../compat/tests/support/corpus.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn millrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run millrace: {e}"))
}

fn write(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

fn diff(old: &Path, new: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "contracts",
        "diff",
        "--old",
        old.to_str().unwrap_or_default(),
        "--new",
        new.to_str().unwrap_or_default(),
    ];
    args.extend_from_slice(extra);
    millrace(&args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn text_output_and_exit_codes_match_the_corpus() {
    let corpus = support::load();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    for (index, case) in corpus.cases.iter().enumerate() {
        let old = write(dir.path(), &format!("{index}-old.json"), &case.old);
        let new = write(dir.path(), &format!("{index}-new.json"), &case.new);
        for (mode, compatible) in [
            ("none", true),
            ("backward", case.backward),
            ("backward-transitive", case.backward),
            ("forward", case.forward),
            ("full", case.backward && case.forward),
        ] {
            let output = diff(&old, &new, &["--mode", mode]);
            let expected_code = if compatible { 0 } else { 1 };
            if output.status.code() != Some(expected_code) {
                failures.push(format!(
                    "{} --mode {mode}: exit {:?}, expected {expected_code}; stderr: {}",
                    case.name,
                    output.status.code(),
                    stderr(&output)
                ));
            }
            let mut lines: Vec<String> = stdout(&output).lines().map(str::to_string).collect();
            lines.sort();
            if lines != case.changes {
                failures.push(format!(
                    "{} --mode {mode}: printed {lines:?}, expected {:?}",
                    case.name, case.changes
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn json_output_matches_the_corpus() {
    let corpus = support::load();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (index, case) in corpus.cases.iter().enumerate() {
        let old = write(dir.path(), &format!("{index}-old.json"), &case.old);
        let new = write(dir.path(), &format!("{index}-new.json"), &case.new);
        let output = diff(&old, &new, &["--mode", "forward", "--output", "json"]);
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: output is not JSON ({e}): {}",
                case.name,
                stdout(&output)
            )
        });
        assert_eq!(
            report["compatible"],
            Value::Bool(case.forward),
            "{}: {report}",
            case.name
        );
        assert_eq!(
            output.status.code(),
            Some(if case.forward { 0 } else { 1 }),
            "{}",
            case.name
        );
        let changes = report["changes"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no changes array", case.name));
        let mut lines: Vec<String> = changes
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["kind"].as_str().unwrap_or("?"),
                    c["path"].as_str().unwrap_or("?")
                )
            })
            .collect();
        lines.sort();
        assert_eq!(lines, case.changes, "{}", case.name);
        let any_breaking = changes.iter().any(|c| c["breaking"] == Value::Bool(true));
        assert_eq!(
            any_breaking, !case.forward,
            "{}: breaking flags disagree with the verdict",
            case.name
        );
        for change in changes {
            let keys: Vec<&String> = change
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            assert_eq!(
                keys.len(),
                3,
                "{}: each change has exactly kind, path, breaking: {change}",
                case.name
            );
        }
    }
}

#[test]
fn unreadable_schemas_exit_2_and_name_the_file() {
    let corpus = support::load();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (index, case) in corpus.errors.iter().enumerate() {
        let old = write(dir.path(), &format!("{index}-old.json"), &case.old);
        let new = write(dir.path(), &format!("{index}-new.json"), &case.new);
        let output = diff(&old, &new, &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}: {}",
            case.name,
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains(&case.message),
            "{}: stderr {message:?}",
            case.name
        );
        assert!(
            message.contains(".json"),
            "{}: stderr must name the file: {message:?}",
            case.name
        );
        assert!(
            stdout(&output).is_empty(),
            "{}: nothing on stdout when the input is unusable",
            case.name
        );
    }
}

#[test]
fn missing_and_malformed_files_exit_2() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = write(
        dir.path(),
        "good.json",
        &serde_json::json!({"type": "string"}),
    );
    let missing = dir.path().join("missing.json");
    let output = diff(&missing, &good, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("missing.json"),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("--old"), "{}", stderr(&output));

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"type\": ").unwrap_or_else(|e| panic!("{e}"));
    let output = diff(&good, &broken, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("broken.json is not valid JSON"),
        "{}",
        stderr(&output)
    );

    let two_docs = dir.path().join("two.yaml");
    std::fs::write(&two_docs, "type: string\n---\ntype: number\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let output = diff(&good, &two_docs, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("2 YAML documents"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn yaml_files_are_accepted() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let old = dir.path().join("old.yaml");
    let new = dir.path().join("new.yml");
    std::fs::write(&old, "type: object\nproperties:\n  qty: {type: integer}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&new, "type: object\nproperties:\n  qty: {type: number}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let output = diff(&old, &new, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "TYPE_EXTENDED #/properties/qty\n");
    let output = diff(&old, &new, &["--mode", "FORWARD_TRANSITIVE"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
}

#[test]
fn the_default_mode_is_backward_and_unknown_modes_are_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let old = write(
        dir.path(),
        "old.json",
        &serde_json::json!({"type": "string"}),
    );
    let new = write(
        dir.path(),
        "new.json",
        &serde_json::json!({"type": "string", "maxLength": 3}),
    );
    let output = diff(&old, &new, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("Backward"), "{}", stderr(&output));
    let output = diff(&old, &new, &["--mode", "sideways"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("backward-transitive"),
        "{}",
        stderr(&output)
    );
}
