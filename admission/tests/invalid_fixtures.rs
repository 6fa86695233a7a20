//! Every manifest in `tests/fixtures/invalid/` is refused, naming what the apiserver names.
//!
//! Each fixture states, on an `# expect: <text>` line, text that the apiserver's refusal
//! contains: either the field path of an OpenAPI violation (`spec.routes[0].name`) or the
//! message of a CEL rule. The same fixtures run against a real apiserver in `tests/env_crds.rs`.

mod common;

use common::{documents, listed, repo_root, shown, yaml_files};
use millrace_admission::{Admission, ViolationKind};
use millrace_testkit::manifests::expectation;

fn fixtures() -> Vec<std::path::PathBuf> {
    let fixtures = yaml_files(&repo_root().join("tests/fixtures/invalid"));
    assert!(
        fixtures.len() >= 12,
        "expected at least 12 invalid fixtures, found {}",
        fixtures.len()
    );
    fixtures
}

#[test]
fn invalid_fixtures_are_refused_naming_the_field_or_rule() {
    let admission = Admission::millrace();
    let mut wrong = Vec::new();
    for file in fixtures() {
        let expected = expectation(&file);
        let mut docs = documents(&file);
        assert_eq!(
            docs.len(),
            1,
            "{} must hold exactly one manifest",
            shown(&file)
        );
        let manifest = docs.remove(0);
        let violations = admission.validate(&manifest);
        // The expectation is either the path of the refused field or text of the message.
        let named = violations
            .iter()
            .any(|v| v.field == expected || v.message.contains(&expected));
        if !named {
            wrong.push(format!(
                "{}: no violation names {expected:?}; found:\n{}",
                shown(&file),
                listed(&violations)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The fixtures that break a CEL rule, with the path of the schema node that carries the rule:
/// the apiserver reports the failure there.
#[test]
fn rule_failures_are_reported_at_the_node_carrying_the_rule() {
    let cases = [
        ("connection-amqp-and-http.yaml", "spec"),
        ("connection-auth-secret-ref.yaml", "spec.http.auth"),
        ("connection-oauth-token-url.yaml", "spec.http.auth"),
        ("contract-versions-gap.yaml", "spec.versions"),
        ("flow-destination-both.yaml", "spec.routes[0].destination"),
        ("flow-http-source-without-broker.yaml", "spec"),
        ("flow-route-loops-to-source.yaml", "spec"),
        ("flow-source-both.yaml", "spec.source"),
        ("flow-transform-args-name.yaml", "spec.transform.args"),
    ];
    let admission = Admission::millrace();
    let dir = repo_root().join("tests/fixtures/invalid");
    for (fixture, field) in cases {
        let path = dir.join(fixture);
        let expected = expectation(&path);
        let violations = admission.validate(&documents(&path).remove(0));
        assert!(
            violations.iter().any(|v| v.kind == ViolationKind::Rule
                && v.field == field
                && v.message.contains(&expected)),
            "{fixture}: expected a rule violation at {field} saying {expected:?}; found:\n{}",
            listed(&violations)
        );
        // These fixtures break one rule and nothing else, as the apiserver reports them.
        assert_eq!(violations.len(), 1, "{fixture}:\n{}", listed(&violations));
    }
}

/// The apiserver skips CEL rules after an unsupported enum value and says so without a field;
/// so does this crate.
#[test]
fn an_unsupported_value_stops_the_rules_with_the_apiservers_note() {
    let admission = Admission::millrace();
    let path = repo_root().join("tests/fixtures/invalid/flow-deletion-policy-enum.yaml");
    let violations = admission.validate(&documents(&path).remove(0));
    let fields: Vec<(&str, ViolationKind)> = violations
        .iter()
        .map(|v| (v.field.as_str(), v.kind))
        .collect();
    assert_eq!(
        fields,
        [
            ("spec.deletionPolicy", ViolationKind::NotSupported),
            ("", ViolationKind::Invalid)
        ],
        "\n{}",
        listed(&violations)
    );
    assert_eq!(
        violations[0].message,
        "Unsupported value: \"Orphan\": supported values: \"Retain\", \"Delete\""
    );
    assert!(
        violations[1]
            .message
            .starts_with("some validation rules were not checked")
    );
}
