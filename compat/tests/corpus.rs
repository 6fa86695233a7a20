//! Runs the table-driven compatibility corpus in `tests/corpus/`.

#[path = "support/corpus.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};

use millrace_compat::{ChangeKind, CompatibilityMode, check_versions, diff};

/// Kinds that break both ways whenever they occur, so no case can show them harmless.
const ALWAYS_BREAKING: &[ChangeKind] = &[
    ChangeKind::TypeChanged,
    ChangeKind::PatternChanged,
    ChangeKind::FormatChanged,
    ChangeKind::MultipleOfChanged,
    ChangeKind::EnumChanged,
    ChangeKind::ConstChanged,
    ChangeKind::DependentRequiredChanged,
    ChangeKind::ContainsChanged,
    ChangeKind::NotTypeChanged,
    ChangeKind::ConditionalChanged,
    ChangeKind::UnknownKeywordAdded,
    ChangeKind::UnknownKeywordRemoved,
    ChangeKind::UnknownKeywordChanged,
];

/// Kinds that never break.
const NEVER_BREAKING: &[ChangeKind] = &[ChangeKind::AnnotationChanged];

#[test]
fn corpus_has_at_least_one_hundred_cases() {
    let corpus = support::load();
    let total = corpus.cases.len() + corpus.sequences.len() + corpus.errors.len();
    eprintln!(
        "corpus: {} cases, {} sequences, {} errors",
        corpus.cases.len(),
        corpus.sequences.len(),
        corpus.errors.len()
    );
    assert!(total >= 100, "only {total} corpus cases");
}

#[test]
fn every_case_produces_its_changes_and_verdicts() {
    let corpus = support::load();
    let mut failures = Vec::new();
    for case in &corpus.cases {
        let found = match diff(&case.old, &case.new) {
            Ok(found) => found,
            Err(e) => {
                failures.push(format!(
                    "[{}] {}: unexpected error: {e}",
                    case.file, case.name
                ));
                continue;
            }
        };
        let mut lines: Vec<String> = found.changes.iter().map(ToString::to_string).collect();
        lines.sort();
        if lines != case.changes {
            failures.push(format!(
                "[{}] {}: expected changes {:?}, found {:?}",
                case.file, case.name, case.changes, lines
            ));
        }
        let expected = [
            (CompatibilityMode::None, true),
            (CompatibilityMode::Backward, case.backward),
            (CompatibilityMode::Forward, case.forward),
            (CompatibilityMode::Full, case.backward && case.forward),
        ];
        for (mode, compatible) in expected {
            if found.is_compatible(mode) != compatible {
                failures.push(format!(
                    "[{}] {}: expected {mode} compatible = {compatible}, changes {:?}",
                    case.file, case.name, found.changes
                ));
            }
        }
        // Two versions: the transitive modes must agree with their plain counterparts.
        for mode in CompatibilityMode::ALL {
            let verdicts = check_versions(mode, &[&case.old, &case.new]);
            let accepted = verdicts
                .as_ref()
                .ok()
                .and_then(|v| v.get(1))
                .map(|v| v.compatible);
            if accepted != Some(found.is_compatible(mode)) {
                failures.push(format!(
                    "[{}] {}: check_versions under {mode} gave {accepted:?}",
                    case.file, case.name
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
fn every_sequence_produces_its_verdicts() {
    let corpus = support::load();
    let mut failures = Vec::new();
    for sequence in &corpus.sequences {
        let schemas: Vec<&serde_json::Value> = sequence.versions.iter().collect();
        for (mode_name, expected) in &sequence.verdicts {
            let mode: CompatibilityMode = match mode_name.parse() {
                Ok(mode) => mode,
                Err(e) => panic!("{}: {e}", sequence.name),
            };
            match check_versions(mode, &schemas) {
                Ok(verdicts) => {
                    let found: Vec<bool> = verdicts.iter().map(|v| v.compatible).collect();
                    if &found != expected {
                        failures.push(format!(
                            "{} under {mode}: expected {expected:?}, found {found:?} ({verdicts:#?})",
                            sequence.name
                        ));
                    }
                    if verdicts.first().is_some_and(|v| !v.compatible) {
                        failures.push(format!(
                            "{}: the first version must always be compatible",
                            sequence.name
                        ));
                    }
                }
                Err(e) => failures.push(format!("{} under {mode}: {e}", sequence.name)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unreadable_schemas_are_errors_that_say_where() {
    let corpus = support::load();
    for case in &corpus.errors {
        match diff(&case.old, &case.new) {
            Ok(found) => panic!(
                "{}: expected an error, found {:?}",
                case.name, found.changes
            ),
            Err(e) => assert!(
                e.to_string().contains(&case.message),
                "{}: error {e:?} does not mention {:?}",
                case.name,
                case.message
            ),
        }
    }
}

/// Every change kind occurs in the corpus, breaking under some mode, and harmless under
/// some mode unless it always breaks both ways.
#[test]
fn every_change_kind_is_covered_breaking_and_not() {
    let corpus = support::load();
    let mut breaking: BTreeMap<ChangeKind, bool> = BTreeMap::new();
    let mut harmless: BTreeMap<ChangeKind, bool> = BTreeMap::new();
    for case in &corpus.cases {
        let Ok(found) = diff(&case.old, &case.new) else {
            continue;
        };
        for change in &found.changes {
            for mode in [CompatibilityMode::Backward, CompatibilityMode::Forward] {
                if change.breaking(mode) {
                    breaking.insert(change.kind, true);
                } else {
                    harmless.insert(change.kind, true);
                }
            }
            if ALWAYS_BREAKING.contains(&change.kind) {
                assert!(
                    change.breaks_backward && change.breaks_forward,
                    "{}: {change} was expected to break both ways",
                    case.name
                );
            }
            if NEVER_BREAKING.contains(&change.kind) {
                assert!(
                    !change.breaks_backward && !change.breaks_forward,
                    "{}: {change} must never break",
                    case.name
                );
            }
        }
    }
    let mut missing = BTreeSet::new();
    for kind in ChangeKind::ALL {
        if !NEVER_BREAKING.contains(kind) && !breaking.contains_key(kind) {
            missing.insert(format!("{kind}: no breaking case"));
        }
        if !ALWAYS_BREAKING.contains(kind) && !harmless.contains_key(kind) {
            missing.insert(format!("{kind}: no harmless case"));
        }
    }
    assert!(
        missing.is_empty(),
        "uncovered change kinds:\n{}",
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The canonical manufacturing contracts are accepted under their own modes.
#[test]
fn manufacturing_contracts_evolve_compatibly() {
    let contracts = support::contracts();
    assert!(
        contracts.len() >= 8,
        "expected the eight manufacturing contracts, found {}",
        contracts.len()
    );
    for contract in contracts.values() {
        let mode: CompatibilityMode = contract
            .compatibility
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", contract.name));
        let schemas: Vec<&serde_json::Value> = contract.versions.iter().map(|(_, s)| s).collect();
        let verdicts =
            check_versions(mode, &schemas).unwrap_or_else(|e| panic!("{}: {e}", contract.name));
        for verdict in verdicts {
            assert!(verdict.compatible, "{}: {verdict:#?}", contract.name);
        }
    }
}
