//! Every example in the repository is admitted, as the apiserver admits it.

mod common;

use std::collections::BTreeMap;

use common::{documents, example_files, listed, repo_root, shown, yaml_files};
use millrace_admission::Admission;

#[test]
fn every_example_is_admitted() {
    let admission = Admission::millrace();
    let mut refused = Vec::new();
    let mut admitted: BTreeMap<String, usize> = BTreeMap::new();
    let mut not_served: BTreeMap<String, usize> = BTreeMap::new();
    for file in example_files(&repo_root().join("examples")) {
        for document in documents(&file) {
            let api_version = document["apiVersion"].as_str().unwrap_or_default();
            let kind = document["kind"].as_str().unwrap_or_default().to_string();
            let name = document["metadata"]["name"].as_str().unwrap_or_default();
            if !admission.serves(api_version, &kind) {
                *not_served.entry(kind).or_default() += 1;
                continue;
            }
            let violations = admission.validate(&document);
            if violations.is_empty() {
                *admitted.entry(kind).or_default() += 1;
            } else {
                refused.push(format!(
                    "{} {kind}/{name}:\n{}",
                    shown(&file),
                    listed(&violations)
                ));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "examples refused:\n{}",
        refused.join("\n")
    );
    for kind in ["EventContract", "PartnerConnection", "IntegrationFlow"] {
        assert!(
            admitted.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} example was checked; admitted: {admitted:?}"
        );
    }
    for kind in not_served.keys() {
        assert!(
            ["Namespace", "Secret", "ConfigMap"].contains(&kind.as_str()),
            "examples hold a kind that is neither Millrace's nor a known core kind: {kind}"
        );
    }
}

#[test]
fn core_kinds_are_not_served() {
    let admission = Admission::millrace();
    for (api_version, kind) in [("v1", "Namespace"), ("v1", "Secret"), ("v1", "ConfigMap")] {
        assert!(!admission.serves(api_version, kind), "{kind}");
        let violations = admission.validate(&serde_json::json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": "x"}
        }));
        assert_eq!(violations.len(), 1, "{kind}:\n{}", listed(&violations));
        assert_eq!(violations[0].field, "kind");
    }
}

#[test]
fn defaulting_an_example_changes_nothing_it_sets() {
    let admission = Admission::millrace();
    for file in yaml_files(&repo_root().join("examples/basic")) {
        for document in documents(&file) {
            let stored = admission.defaulted(&document);
            assert!(
                admission.validate(&stored).is_empty(),
                "{}: the defaulted form is refused",
                shown(&file)
            );
            assert_eq!(admission.defaulted(&stored), stored, "{}", shown(&file));
            assert_eq!(stored["metadata"], document["metadata"], "{}", shown(&file));
            assert_eq!(stored["spec"]["version"], document["spec"]["version"]);
        }
    }
}
