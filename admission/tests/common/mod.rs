//! Reading manifests from the repository, as `kubectl` would read them.

// Each test binary uses part of these helpers.
#![allow(dead_code, unused_imports)]

pub use millrace_testkit::manifests::{documents, example_files, repo_root, shown, yaml_files};

/// Violations one per line, for assertion messages.
pub fn listed(violations: &[millrace_admission::Violation]) -> String {
    if violations.is_empty() {
        return "  (none)".to_string();
    }
    violations
        .iter()
        .map(|violation| format!("  {violation} [{:?}]", violation.kind))
        .collect::<Vec<_>>()
        .join("\n")
}
